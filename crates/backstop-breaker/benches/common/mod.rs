//! The services compared by the benches: a no-op upstream, and the same breaker rules in
//! backstop, tower-resilience and failsafe.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::io;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use backstop_breaker::CircuitBreakerLayer;
use http::{Request, Response, StatusCode, Uri};
use tower::{Layer, Service};

pub const URI: &str = "http://api.internal/users";
const LONG: Duration = Duration::from_secs(3600);

/// The upstream: answers at once, with no allocation.
#[derive(Clone, Copy)]
pub struct NoOp {
    pub fail: bool,
}

impl Service<Request<()>> for NoOp {
    type Response = Response<()>;
    type Error = io::Error;
    type Future = Ready<Result<Response<()>, io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        if self.fail {
            // A simple io::Error holds no heap data.
            ready(Err(io::ErrorKind::ConnectionRefused.into()))
        } else {
            let mut res = Response::new(());
            *res.status_mut() = StatusCode::OK;
            ready(Ok(res))
        }
    }
}

/// failsafe's future-aware breaker as a tower service.
#[derive(Clone)]
pub struct Failsafe<B> {
    inner: NoOp,
    breaker: B,
}

impl<B: failsafe::futures::CircuitBreaker> Service<Request<()>> for Failsafe<B> {
    type Response = Response<()>;
    type Error = failsafe::Error<io::Error>;
    type Future = failsafe::futures::ResponseFuture<
        Ready<Result<Response<()>, io::Error>>,
        B::FailurePolicy,
        B::Instrument,
        failsafe::Any,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        self.breaker.call(self.inner.call(req))
    }
}

/// Per host, tripping on 5 consecutive failures only: failsafe's rule.
pub fn backstop(fail: bool) -> backstop_breaker::CircuitBreaker<NoOp> {
    CircuitBreakerLayer::builder()
        .consecutive_failures(5)
        .no_failure_rate()
        .open_for(LONG)
        .max_open_for(LONG)
        .build()
        .unwrap()
        .layer(NoOp { fail })
}

/// Per host with the default rules: 5 consecutive failures, or 50 % of the last 100 calls (a
/// count window recorded on every call).
pub fn backstop_default_rules(fail: bool) -> backstop_breaker::CircuitBreaker<NoOp> {
    CircuitBreakerLayer::builder()
        .open_for(LONG)
        .max_open_for(LONG)
        .build()
        .unwrap()
        .layer(NoOp { fail })
}

/// One breaker, tripping on 5 consecutive failures only.
pub fn backstop_single(
    fail: bool,
) -> backstop_breaker::CircuitBreaker<NoOp, backstop_breaker::Single> {
    CircuitBreakerLayer::single()
        .consecutive_failures(5)
        .no_failure_rate()
        .open_for(LONG)
        .max_open_for(LONG)
        .build()
        .unwrap()
        .layer(NoOp { fail })
}

pub fn resilience(
    fail: bool,
) -> impl Service<Request<()>, Response = Response<()>> + Clone + Send + 'static {
    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(10)
        .minimum_number_of_calls(5)
        .wait_duration_in_open(LONG)
        .build()
        .unwrap()
        .layer(NoOp { fail })
}

pub fn failsafe(
    fail: bool,
) -> Failsafe<impl failsafe::futures::CircuitBreaker + Clone + Send + Sync + 'static> {
    let policy =
        failsafe::failure_policy::consecutive_failures(5, failsafe::backoff::constant(LONG));
    Failsafe {
        inner: NoOp { fail },
        breaker: failsafe::Config::new().failure_policy(policy).build(),
    }
}

/// A request to `URI`, built outside the measured code.
pub fn request() -> Request<()> {
    let mut req = Request::new(());
    *req.uri_mut() = Uri::from_static(URI);
    req
}

/// One whole call with a request built by the caller: ready, call, poll to completion, drop the
/// result. `true` if it succeeded.
#[inline]
pub fn drive<S: Service<Request<()>>>(svc: &mut S, req: Request<()>) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => return false,
    }
    let fut = pin!(svc.call(req));
    matches!(fut.poll(&mut cx), Poll::Ready(Ok(_)))
}

/// Trips a breaker built over a failing upstream.
pub fn trip<S: Service<Request<()>>>(svc: &mut S) {
    for _ in 0..20 {
        drive(svc, request());
    }
    assert!(!drive(svc, request()));
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

pub type Never = Infallible;
