// Test doubles shared by the test files: a naive retry loop, a recording inner service and a
// body that drips on tokio's clock.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use backstop_classify::{Error, Kind, Phase, Timer};
use backstop_deadline::Deadline;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};
use tower::{Service, ServiceExt};

/// What the inner service saw on one call.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    /// The deadline in the request extensions.
    pub deadline: Option<Deadline>,
    /// What a layer here reads: `Deadline::current` (extension or ambient, the earlier).
    pub current: Option<Deadline>,
    pub ambient: Option<Deadline>,
    pub headers: HeaderMap,
}

#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl Recorder {
    pub fn record<B>(&self, req: &Request<B>) {
        self.0.lock().unwrap().push(Seen {
            at: Instant::now(),
            deadline: Deadline::of(req),
            current: Deadline::current(req),
            ambient: backstop_deadline::ambient::current(),
            headers: req.headers().clone(),
        });
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// What each attempt of the inner service does.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Answers 200 at once.
    Ok,
    /// Fails at once with a connection reset after the request was sent.
    Reset,
    /// Never answers.
    Stall,
    /// Answers 200 after this long.
    After(Duration),
}

pub type Answer = Pin<Box<dyn Future<Output = Result<Response<String>, Error>> + Send>>;

/// An inner service that records every call and behaves as told.
pub fn upstream(
    recorder: Recorder,
    behaviour: Behaviour,
) -> impl Service<Request<()>, Response = Response<String>, Error = Error, Future = Answer> + Clone
{
    tower::service_fn(move |req: Request<()>| {
        recorder.record(&req);
        let fut: Answer = Box::pin(async move {
            match behaviour {
                Behaviour::Ok => Ok(Response::new("ok".to_owned())),
                Behaviour::Reset => Err(Error::new(Kind::Reset, Phase::AwaitHeaders)),
                Behaviour::Stall => std::future::pending().await,
                Behaviour::After(d) => {
                    tokio::time::sleep(d).await;
                    Ok(Response::new("ok".to_owned()))
                }
            }
        });
        fut
    })
}

/// A deliberately simple retry loop: up to `attempts`, a fixed `backoff` between them, retrying
/// whatever the failure says may be retried for the request's method. With `deadline_aware` it
/// also does what backstop-retry does with the [`Deadline`] (read with `Deadline::current`: the
/// extension or the ambient one): it does not sleep into a backoff that would cross the deadline.
#[derive(Clone)]
pub struct LocalRetry<S> {
    pub inner: S,
    pub attempts: usize,
    pub backoff: Duration,
    pub deadline_aware: bool,
    /// Every attempt's failure, in order.
    pub failures: Arc<Mutex<Vec<Error>>>,
}

impl<S> LocalRetry<S> {
    pub fn new(inner: S, attempts: usize, backoff: Duration) -> Self {
        LocalRetry {
            inner,
            attempts,
            backoff,
            deadline_aware: false,
            failures: Arc::default(),
        }
    }
}

impl<S, R> Service<Request<()>> for LocalRetry<S>
where
    S: Service<Request<()>, Response = R, Error = Error> + Clone + Send + 'static,
    S::Future: Send,
    R: Send + 'static,
{
    type Response = R;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<R, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let idempotent = matches!(*req.method(), Method::GET | Method::PUT | Method::DELETE);
            let mut last = None;
            for attempt in 0..this.attempts {
                if attempt > 0 {
                    if this.deadline_aware
                        && let Some(deadline) = Deadline::current(&req)
                        && Instant::now() + this.backoff >= deadline.instant()
                    {
                        return Err(Error::new(Kind::TimedOut(Timer::Deadline), Phase::Local));
                    }
                    tokio::time::sleep(this.backoff).await;
                }
                let mut copy = Request::new(());
                *copy.method_mut() = req.method().clone();
                *copy.uri_mut() = req.uri().clone();
                *copy.headers_mut() = req.headers().clone();
                *copy.extensions_mut() = req.extensions().clone();
                match this.inner.clone().oneshot(copy).await {
                    Ok(res) => return Ok(res),
                    Err(err) => {
                        let again = err.failure().may_retry(idempotent);
                        this.failures
                            .lock()
                            .unwrap()
                            .push(Error::from_failure(err.failure()));
                        if !again {
                            return Err(err);
                        }
                        last = Some(err);
                    }
                }
            }
            Err(last.unwrap_or_else(|| Error::new(Kind::Other, Phase::Local)))
        })
    }
}

/// A body yielding `chunks` one-byte frames, one every `every`, on tokio's clock.
pub struct Drip {
    sleep: Pin<Box<Sleep>>,
    every: Duration,
    left: usize,
}

impl Drip {
    pub fn new(chunks: usize, every: Duration) -> Drip {
        Drip {
            sleep: Box::pin(tokio::time::sleep(every)),
            every,
            left: chunks,
        }
    }
}

impl Body for Drip {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                self.left -= 1;
                let next = Instant::now() + self.every;
                self.sleep.as_mut().reset(next);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}
