//! Allocation counts: a rejection and a closed-path call allocate nothing; the memory one keyed
//! breaker takes. One test function, since the counting allocator is global to this binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use backstop_breaker::CircuitBreakerLayer;
use backstop_classify::Kind;
use http::{Request, Response, StatusCode};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, Service};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[derive(Clone)]
struct NoOp(StatusCode);

impl Service<Request<()>> for NoOp {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        let mut res = Response::new(());
        *res.status_mut() = self.0;
        ready(Ok(res))
    }
}

fn poll_now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the no-op service is always ready"),
    }
}

fn requests(n: usize, host: impl Fn(usize) -> String) -> Vec<Request<()>> {
    (0..n)
        .map(|i| Request::get(host(i)).body(()).unwrap())
        .collect()
}

const N: usize = 1000;

#[test]
fn rejections_and_closed_calls_allocate_nothing() {
    // Closed path.
    let layer = CircuitBreakerLayer::new();
    let mut svc = layer.layer(NoOp(StatusCode::OK));
    // First call creates the breaker.
    poll_now(svc.call(Request::get("http://a.internal/").body(()).unwrap())).unwrap();
    // The counter is process-wide, and the test harness's own threads allocate now and then:
    // of three rounds, the quietest must show none (an allocating path allocates every round).
    let closed = (0..3)
        .map(|_| {
            let reqs = requests(N, |_| "http://a.internal/x".to_string());
            let region = Region::new(GLOBAL);
            for req in reqs {
                let res = poll_now(svc.call(req)).unwrap();
                drop(res);
            }
            region.change().allocations
        })
        .min()
        .unwrap_or(usize::MAX);
    assert_eq!(
        closed, 0,
        "closed path: {closed} allocations over {N} calls"
    );

    // Open path: rejections.
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let mut svc = layer.layer(NoOp(StatusCode::SERVICE_UNAVAILABLE));
    let _ = poll_now(svc.call(Request::get("http://b.internal/").body(()).unwrap()));
    let mut rejected = 0;
    let open = (0..3)
        .map(|_| {
            let reqs = requests(N, |_| "http://b.internal/x".to_string());
            let region = Region::new(GLOBAL);
            for req in reqs {
                let err = poll_now(svc.call(req)).unwrap_err();
                if err.kind() == Kind::BreakerOpen {
                    rejected += 1;
                }
                drop(err);
            }
            region.change().allocations
        })
        .min()
        .unwrap_or(usize::MAX);
    assert_eq!(rejected, 3 * N);
    assert_eq!(open, 0, "open path: {open} allocations over {N} calls");

    // Memory per keyed breaker: the net heap growth of 1,000 new hosts (count window of 100).
    let layer = CircuitBreakerLayer::new();
    let mut svc = layer.layer(NoOp(StatusCode::OK));
    let region = Region::new(GLOBAL);
    for i in 0..N {
        // Built and freed inside the region, so only what the breakers keep remains.
        let req = Request::get(format!("http://host-{i:04}.internal/"))
            .body(())
            .unwrap();
        poll_now(svc.call(req)).unwrap();
    }
    let grown = region.change();
    let net = grown.bytes_allocated as isize - grown.bytes_deallocated as isize;
    let per_key = net / N as isize;
    eprintln!("memory per keyed breaker: ~{per_key} bytes net (incl. map slot and key)");
    assert!(layer.breakers().len() == N);
    assert!(per_key < 1024, "{per_key} bytes per breaker");
}
