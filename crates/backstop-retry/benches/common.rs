//! Shared by the benches and the allocation test: a no-op upstream, the request every case sends,
//! and tower's `Retry` configured the way its documentation shows.
#![allow(dead_code, missing_docs, unreachable_pub)]

use std::future::{Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Service, service_fn};

pub type Body = Empty<Bytes>;

/// A GET with three headers, as measured for the peers.
pub fn request() -> Request<Body> {
    Request::get("http://127.0.0.1:8080/api/items?page=2")
        .header("host", "127.0.0.1:8080")
        .header("accept", "application/json")
        .header("user-agent", "backstop-bench/0.1")
        .body(Empty::new())
        .unwrap_or_default()
}

/// An upstream that answers 200 at once, whatever the request body type.
pub fn noop<B>() -> impl Service<
    Request<B>,
    Response = Response<Body>,
    Error = std::io::Error,
    Future = Ready<Result<Response<Body>, std::io::Error>>,
> + Clone {
    service_fn(|_req: Request<B>| ready(Ok(Response::new(Empty::new()))))
}

/// Calls `svc` once and polls the future once: every case here completes without waiting.
pub fn call_once<S, R>(svc: &mut S, req: R) -> bool
where
    S: Service<R>,
{
    let mut cx = Context::from_waker(Waker::noop());
    if svc.poll_ready(&mut cx).is_pending() {
        return false;
    }
    let future = pin!(svc.call(req));
    matches!(future.poll(&mut cx), Poll::Ready(Ok(_)))
}

use std::future::Future;

/// The policy of tower's own docs: retry 5xx and errors a few times, cloning the request.
#[derive(Clone)]
pub struct TowerPolicy<Bu> {
    pub attempts: usize,
    pub budget: Bu,
}

pub fn tower_policy() -> TowerPolicy<()> {
    TowerPolicy {
        attempts: 3,
        budget: (),
    }
}

pub fn tower_policy_budget() -> TowerPolicy<std::sync::Arc<TpsBudget>> {
    TowerPolicy {
        attempts: 3,
        budget: std::sync::Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
    }
}

pub trait MaybeBudget {
    fn deposit(&self) {}
    fn withdraw(&self) -> bool {
        true
    }
}
impl MaybeBudget for () {}
impl MaybeBudget for std::sync::Arc<TpsBudget> {
    fn deposit(&self) {
        Budget::deposit(&**self)
    }
    fn withdraw(&self) -> bool {
        Budget::withdraw(&**self)
    }
}

impl<Bu: MaybeBudget + Clone, E> Policy<Request<Body>, Response<Body>, E> for TowerPolicy<Bu> {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<Body>,
        result: &mut Result<Response<Body>, E>,
    ) -> Option<Self::Future> {
        match result {
            Ok(res) if !res.status().is_server_error() => {
                self.budget.deposit();
                None
            }
            _ if self.attempts > 0 && self.budget.withdraw() => {
                self.attempts -= 1;
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
        Some(clone_request(req))
    }
}

/// What every retry layer must pay to send a request twice: a copy of its head.
pub fn clone_request(req: &Request<Body>) -> Request<Body> {
    let mut clone = Request::new(Empty::new());
    *clone.method_mut() = req.method().clone();
    *clone.uri_mut() = req.uri().clone();
    *clone.version_mut() = req.version();
    *clone.headers_mut() = req.headers().clone();
    *clone.extensions_mut() = req.extensions().clone();
    clone
}
