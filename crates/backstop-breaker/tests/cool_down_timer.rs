//! The cool-down timer: rejections trust it only while it has not fired, so the probe goes at
//! the exact end of the cool-down under a paused clock, without a runtime, with a runtime built
//! without timers (when turned off), and after the runtime that armed it is gone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use backstop_breaker::{CircuitBreakerLayer, State};
use backstop_classify::{Error, Kind};
use http::{Request, Response, StatusCode};
use tower::{Layer, Service};

/// Answers at once with the status it is set to; needs no runtime.
#[derive(Clone)]
struct Upstream(Arc<AtomicU16>);

impl Service<Request<()>> for Upstream {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        let mut res = Response::new(());
        *res.status_mut() = StatusCode::from_u16(self.0.load(Ordering::Relaxed)).unwrap();
        ready(Ok(res))
    }
}

fn upstream(status: u16) -> (Upstream, Arc<AtomicU16>) {
    let status = Arc::new(AtomicU16::new(status));
    (Upstream(status.clone()), status)
}

fn layer(open_for: Duration, timer: bool) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .no_failure_rate()
        .open_for(open_for)
        .open_jitter(0.0)
        .cool_down_timer(timer)
        .build()
        .unwrap()
}

/// One call, driven to completion by hand: these services never wait.
fn call<S>(svc: &mut S) -> Result<Response<()>, Error>
where
    S: Service<Request<()>, Response = Response<()>, Error = Error>,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let req = Request::get("http://db.internal/q").body(()).unwrap();
    match pin!(svc.call(req)).poll(&mut cx) {
        Poll::Ready(result) => result,
        Poll::Pending => panic!("the upstream answers at once"),
    }
}

fn rejected(result: Result<Response<()>, Error>) -> bool {
    result.is_err_and(|err| err.kind() == Kind::BreakerOpen)
}

fn state(layer: &CircuitBreakerLayer) -> State {
    layer.breakers().snapshots()[0].1.state
}

#[tokio::test(start_paused = true)]
async fn paused_clock_probe_goes_at_the_exact_end_of_the_cool_down() {
    let layer = layer(Duration::from_secs(10), true);
    let (inner, status) = upstream(503);
    let mut svc = layer.layer(inner);
    call(&mut svc).unwrap();
    assert_eq!(state(&layer), State::Open);
    status.store(200, Ordering::Relaxed);
    assert!(rejected(call(&mut svc)));
    // Long before the end: the timer has not fired.
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(rejected(call(&mut svc)));
    // In the timer's lead: it has fired, the clock decides, and it is not time yet.
    tokio::time::advance(Duration::from_micros(4_999_500)).await;
    assert!(rejected(call(&mut svc)));
    tokio::time::advance(Duration::from_micros(499)).await;
    assert!(rejected(call(&mut svc)));
    tokio::time::advance(Duration::from_micros(1)).await;
    assert_eq!(call(&mut svc).unwrap().status(), 200, "the probe goes");
    assert_eq!(state(&layer), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn every_trip_arms_its_own_timer() {
    let layer = layer(Duration::from_millis(100), true);
    let (inner, status) = upstream(503);
    let mut svc = layer.layer(inner);
    // A trip, then two failed probes: three open periods, each rejected on its own timer.
    for _ in 0..3 {
        call(&mut svc).unwrap();
        assert_eq!(state(&layer), State::Open);
        assert!(rejected(call(&mut svc)));
        tokio::time::advance(Duration::from_millis(50)).await;
        assert!(rejected(call(&mut svc)));
        // Longer than any open period here (the cap is 5 minutes).
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    status.store(200, Ordering::Relaxed);
    assert_eq!(call(&mut svc).unwrap().status(), 200);
    assert_eq!(state(&layer), State::Closed);
}

#[test]
fn without_a_runtime_the_clock_decides() {
    let layer = layer(Duration::from_millis(30), true);
    let (inner, status) = upstream(503);
    let mut svc = layer.layer(inner);
    call(&mut svc).unwrap();
    assert!(rejected(call(&mut svc)));
    status.store(200, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(call(&mut svc).unwrap().status(), 200);
}

#[test]
fn a_timer_whose_runtime_is_gone_hands_over_to_the_clock() {
    let layer = layer(Duration::from_millis(30), true);
    let (inner, status) = upstream(503);
    let mut svc = layer.layer(inner);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        call(&mut svc).unwrap();
        assert!(rejected(call(&mut svc)));
    });
    // The runtime is not driven from here on, then dropped with the timer pending.
    drop(runtime);
    status.store(200, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(call(&mut svc).unwrap().status(), 200);
}

#[test]
fn turned_off_it_works_in_a_runtime_without_timers() {
    let layer = layer(Duration::from_millis(30), false);
    let (inner, status) = upstream(503);
    let mut svc = layer.layer(inner);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        call(&mut svc).unwrap();
        assert!(rejected(call(&mut svc)));
        status.store(200, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(call(&mut svc).unwrap().status(), 200);
    });
}
