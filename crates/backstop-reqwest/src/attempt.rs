//! One attempt: the rest of the middleware chain as a tower service, so that backstop-breaker's
//! layer can sit around it exactly as it sits around a hyper client.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use backstop_classify::{Classify, Error, Failure, HttpPolicy, Kind, Outcome, Phase, Timer};
use backstop_deadline::Deadline;
use http::Extensions;
use reqwest_middleware::Next;
use tower_service::Service;

use crate::classify::classify;

/// What travels to the breaker and through it: the request and the chain's extensions.
pub(crate) struct Attempt<'a> {
    pub(crate) request: reqwest::Request,
    pub(crate) extensions: &'a mut Extensions,
}

/// Sends one attempt down the rest of the chain, bounded by the attempt timeout, and classifies what comes back (the breaker reads the [`Outcome`] it leaves in the
/// response's extensions).
pub(crate) struct Sender<'a> {
    pub(crate) next: Next<'a>,
    pub(crate) attempt_timeout: Duration,
    pub(crate) deadline: Deadline,
    pub(crate) policy: HttpPolicy,
}

type AttemptFuture<'a> =
    Pin<Box<dyn Future<Output = Result<http::Response<reqwest::Response>, Error>> + Send + 'a>>;

impl<'a> Service<http::Request<Attempt<'a>>> for Sender<'a> {
    type Response = http::Response<reqwest::Response>;
    type Error = Error;
    type Future = AttemptFuture<'a>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Attempt<'a>>) -> Self::Future {
        let Attempt {
            request,
            extensions,
        } = req.into_body();
        let next = self.next.clone();
        // The deadline's own timer is outside the breaker (see `BackstopMiddleware::attempt`):
        // this one only bounds an attempt that would end before it.
        let limit =
            (self.attempt_timeout < self.deadline.remaining()).then_some(self.attempt_timeout);
        let deadline = self.deadline;
        let policy = self.policy.clone();
        Box::pin(async move {
            let sent = next.run(request, extensions);
            let result = match limit {
                Some(limit) => match tokio::time::timeout(limit, sent).await {
                    Ok(result) => result,
                    Err(_elapsed) => {
                        return Err(Error::new(
                            Kind::TimedOut(Timer::Attempt),
                            Phase::AwaitHeaders,
                        ));
                    }
                },
                None => sent.await,
            };
            match result {
                Ok(res) => {
                    let outcome = policy.classify_response(res.status(), res.headers());
                    let mut head = http::Response::new(());
                    *head.status_mut() = res.status();
                    head.extensions_mut().insert(outcome);
                    Ok(head.map(|()| res))
                }
                Err(err) => Err(classify_failed(err, deadline)),
            }
        })
    }
}

/// The classified error of a failed attempt, keeping the original as its source.
fn classify_failed(err: reqwest_middleware::Error, deadline: Deadline) -> Error {
    let mut failure = classify(&err);
    if failure.kind().is_timeout() && deadline.is_expired() {
        // reqwest's per-request timeout, set from the deadline to cover the body, fired first.
        failure = Failure::new(Kind::TimedOut(Timer::Deadline), failure.phase());
    }
    match err {
        reqwest_middleware::Error::Reqwest(err) => Error::from_failure(failure).with_source(err),
        reqwest_middleware::Error::Middleware(err) => match err.downcast::<Error>() {
            // Another backstop layer's error stays what it is.
            Ok(ours) => ours,
            Err(other) => Error::from_failure(failure).with_source(other),
        },
    }
}

/// The outcome the sender recorded for a response.
pub(crate) fn outcome_of(res: &http::Response<reqwest::Response>) -> Outcome {
    Outcome::of(res.extensions())
        .copied()
        .unwrap_or(Outcome::Success)
}
