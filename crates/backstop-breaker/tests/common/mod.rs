//! A scriptable in-process upstream for the breaker's tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use backstop_classify::{BoxError, Error, Kind, Phase};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;

/// The mock's response body.
pub type MockBody = Empty<Bytes>;

/// What the mock answers.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    Fail(Kind),
    /// Never answers (until the future is dropped).
    Hang,
}

#[derive(Default)]
pub struct MockState {
    pub calls: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    replies: Mutex<HashMap<String, Reply>>,
    default: Mutex<Option<Reply>>,
    delay: Mutex<Duration>,
    per_host: Mutex<HashMap<String, usize>>,
}

/// A tower service answering per host, counting calls.
#[derive(Clone, Default)]
pub struct Mock {
    pub state: Arc<MockState>,
}

impl Mock {
    pub fn new() -> Mock {
        Mock::default()
    }

    pub fn reply(&self, reply: Reply) {
        *self.state.default.lock().unwrap() = Some(reply);
    }

    pub fn reply_for(&self, host: &str, reply: Reply) {
        self.state
            .replies
            .lock()
            .unwrap()
            .insert(host.to_string(), reply);
    }

    pub fn delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    pub fn calls_to(&self, host: &str) -> usize {
        self.state
            .per_host
            .lock()
            .unwrap()
            .get(host)
            .copied()
            .unwrap_or(0)
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

struct InFlight(Arc<MockState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<B> tower::Service<Request<B>> for Mock {
    type Response = Response<MockBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<MockBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let state = self.state.clone();
        let host = req.uri().host().unwrap_or("").to_string();
        state.calls.fetch_add(1, Ordering::SeqCst);
        *state
            .per_host
            .lock()
            .unwrap()
            .entry(host.clone())
            .or_default() += 1;
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let guard = InFlight(state.clone());
        let reply = state
            .replies
            .lock()
            .unwrap()
            .get(&host)
            .copied()
            .or(*state.default.lock().unwrap())
            .unwrap_or(Reply::Status(200));
        let delay = *state.delay.lock().unwrap();
        Box::pin(async move {
            let _guard = guard;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match reply {
                Reply::Status(code) => {
                    let mut res = Response::new(MockBody::new());
                    *res.status_mut() = StatusCode::from_u16(code).unwrap();
                    Ok(res)
                }
                Reply::Fail(kind) => Err(Error::new(kind, Phase::Connect).into()),
                Reply::Hang => std::future::pending().await,
            }
        })
    }
}

pub fn get(uri: &str) -> Request<()> {
    Request::get(uri).body(()).unwrap()
}

/// Every test step is bounded.
pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test step exceeded its time bound")
}

/// One call through `svc`.
pub async fn call<S>(svc: &mut S, uri: &str) -> Result<S::Response, Error>
where
    S: tower::Service<Request<()>, Error = Error>,
{
    use tower::ServiceExt;
    bounded(async { svc.ready().await?.call(get(uri)).await }).await
}

pub fn is_open_rejection<R>(result: &Result<R, Error>) -> bool {
    match result {
        Err(err) => err.kind() == Kind::BreakerOpen,
        Ok(_) => false,
    }
}

/// A per-host breaker that opens after two failures in a row, stays open exactly 10 s (no
/// jitter) and closes after one good probe: the telemetry tests walk it through every state.
pub fn opens_after_two_failures() -> backstop_breaker::CircuitBreakerLayer {
    backstop_breaker::CircuitBreakerLayer::builder()
        .consecutive_failures(2)
        .no_failure_rate()
        .half_open_probes(1)
        .open_for(Duration::from_secs(10))
        .open_jitter(0.0)
        .build()
        .unwrap()
}
