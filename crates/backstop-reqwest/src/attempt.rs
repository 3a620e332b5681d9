//! One attempt: the rest of the middleware chain, bounded by the attempt timeout, its answer
//! classified. The breaker's admission and record are the middleware's (see
//! `BackstopMiddleware::attempt`), through the breaker layer's `Gate`.

use std::time::Duration;

use backstop_classify::{Classify, Error, Failure, HttpPolicy, Kind, Outcome, Phase, Timer};
use backstop_deadline::Deadline;
use http::Extensions;
use reqwest_middleware::Next;

use crate::classify::classify;

/// Sends one attempt down the rest of the chain, bounded by the attempt timeout, and classifies
/// what comes back.
pub(crate) struct Sender<'a> {
    pub(crate) next: Next<'a>,
    pub(crate) attempt_timeout: Duration,
    pub(crate) deadline: Deadline,
    pub(crate) policy: &'a HttpPolicy,
}

impl Sender<'_> {
    /// The response with the outcome its status is judged to be, or the classified error.
    pub(crate) async fn send(
        self,
        request: reqwest::Request,
        extensions: &mut Extensions,
    ) -> Result<(reqwest::Response, Outcome), Error> {
        // The deadline's own timer is outside (see `BackstopMiddleware::attempt`): this one
        // only bounds an attempt that would end before it.
        let limit =
            (self.attempt_timeout < self.deadline.remaining()).then_some(self.attempt_timeout);
        let sent = self.next.run(request, extensions);
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
                let outcome = self.policy.classify_response(res.status(), res.headers());
                Ok((res, outcome))
            }
            Err(err) => Err(classify_failed(err, self.deadline)),
        }
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
