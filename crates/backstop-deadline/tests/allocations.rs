//! Allocations per call on the success path, counted with a global allocator (so this file is a
//! test binary of its own, with a single test: the count is process-wide).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use std::time::Duration;

use backstop_deadline::propagate::{DEFAULT_TIMEOUT_HEADER, Propagation};
use backstop_deadline::{
    AttemptTimeoutLayer, Carry, Deadline, DeadlineLayer, InnerWaits, ServerDeadlineLayer, ambient,
};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, Service, ServiceExt};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Answers at once, allocating nothing.
#[derive(Clone, Copy)]
struct NoOp;

impl Service<Request<()>> for NoOp {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Empty<Bytes>>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<()>) -> Self::Future {
        ready(Ok(Response::new(Empty::new())))
    }
}

/// Calls `S` under an ambient deadline this far ahead, as a server handler would.
struct InScope<S>(Duration, S);

impl<S: Service<Request<()>>> Service<Request<()>> for InScope<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = ambient::Scoped<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.1.poll_ready(cx)
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        let deadline = Deadline::after(self.0);
        let future = ambient::sync_scope(deadline, || self.1.call(req));
        ambient::scope(deadline, future)
    }
}

/// Answers after having to wait once (its future wakes itself and returns pending first),
/// allocating nothing: what the layers add for a call that waits shows.
#[derive(Clone, Copy)]
struct WaitsOnce;

impl Service<Request<()>> for WaitsOnce {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = PendingOnce;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<()>) -> Self::Future {
        PendingOnce(false)
    }
}

struct PendingOnce(bool);

impl std::future::Future for PendingOnce {
    type Output = Result<Response<Empty<Bytes>>, Infallible>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.0 {
            return Poll::Ready(Ok(Response::new(Empty::new())));
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

const CALLS: usize = 1000;

/// Allocations per call of `svc` over `CALLS` calls, after one warm-up call.
fn allocations_per_call<S>(
    rt: &tokio::runtime::Runtime,
    mut svc: S,
    make: fn() -> Request<()>,
) -> f64
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        svc.ready().await.unwrap();
        let _ = svc.call(make()).await.unwrap();
        // The counter is process-wide and the test harness's own threads allocate now and then:
        // of three rounds, the quietest counts (a path that allocates does so every round).
        let mut quietest = usize::MAX;
        for _ in 0..3 {
            let region = Region::new(GLOBAL);
            for _ in 0..CALLS {
                svc.ready().await.unwrap();
                let _ = svc.call(make()).await.unwrap();
            }
            quietest = quietest.min(region.change().allocations);
        }
        quietest as f64 / CALLS as f64
    })
}

fn bare() -> Request<()> {
    Request::new(())
}

fn with_headers() -> Request<()> {
    // What a real request carries; building it is counted too, so it is measured bare as well.
    Request::builder()
        .uri("http://127.0.0.1/")
        .header("host", "127.0.0.1")
        .header("user-agent", "bench")
        .header("accept", "*/*")
        .body(())
        .unwrap()
}

#[test]
fn the_success_path_allocates_nothing_in_the_default_configuration() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let quiet_deadline = DeadlineLayer::builder()
        .timeout(Duration::from_secs(5))
        .propagation(Propagation::disabled())
        .build()
        .unwrap();
    let quiet_attempt = AttemptTimeoutLayer::builder()
        .timeout(Duration::from_secs(1))
        .propagation(Propagation::disabled())
        .build()
        .unwrap();
    let default_deadline = DeadlineLayer::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let default_attempt = AttemptTimeoutLayer::new(Duration::from_secs(1));
    // Told to every destination, and to a list that matches the request's authority.
    let propagated = |propagation: Propagation| {
        (
            DeadlineLayer::builder()
                .timeout(Duration::from_secs(5))
                .propagation(propagation.clone())
                .build()
                .unwrap(),
            AttemptTimeoutLayer::builder()
                .timeout(Duration::from_secs(1))
                .propagation(propagation)
                .build()
                .unwrap(),
        )
    };
    let (everywhere_deadline, everywhere_attempt) =
        propagated(Propagation::new().header(DEFAULT_TIMEOUT_HEADER));
    let (listed_deadline, listed_attempt) = propagated(
        Propagation::new()
            .only_to(["*.internal", "127.0.0.1"])
            .unwrap(),
    );
    let extensions_deadline = DeadlineLayer::builder()
        .timeout(Duration::from_secs(5))
        .carry(Carry::Extensions)
        .propagation(Propagation::disabled())
        .build()
        .unwrap();

    let measure = |name: &str, per_call: f64, make_name: &str| {
        eprintln!("{name:<66} {make_name:<13} {per_call:>5.2} allocations/call");
        per_call
    };
    let bare_noop = measure("bare no-op", allocations_per_call(&rt, NoOp, bare), "bare");
    assert_eq!(bare_noop, 0.0, "the harness itself allocates nothing");
    let headers_noop = measure(
        "bare no-op",
        allocations_per_call(&rt, NoOp, with_headers),
        "3 headers",
    );

    let tower_timeout = tower::timeout::TimeoutLayer::new(Duration::from_secs(1)).layer(NoOp);
    assert_eq!(
        measure(
            "tower Timeout",
            allocations_per_call(&rt, tower_timeout, bare),
            "bare"
        ),
        0.0
    );

    let attempt = quiet_attempt.layer(NoOp);
    assert_eq!(
        measure(
            "AttemptTimeout, no propagation",
            allocations_per_call(&rt, attempt, bare),
            "bare"
        ),
        0.0
    );
    // The default carry is ambient: nothing is put on the request.
    let stack = quiet_deadline.layer(quiet_attempt.layer(NoOp));
    assert_eq!(
        measure(
            "DeadlineLayer + AttemptTimeout, no propagation",
            allocations_per_call(&rt, stack, bare),
            "bare"
        ),
        0.0
    );
    // The default (as the facade uses them): a plain HTTP request gets no header.
    let stack = default_deadline
        .clone()
        .layer(default_attempt.clone().layer(NoOp));
    assert_eq!(
        measure(
            "DeadlineLayer + AttemptTimeout default",
            allocations_per_call(&rt, stack, with_headers),
            "3 headers",
        ) - headers_noop,
        0.0
    );
    // A call that has to wait: the deadline layer's own timer is boxed (one allocation), unless
    // it is told that the attempt timeout inside bounds every wait by the deadline; that one
    // reuses the timer an earlier attempt handed back (the warm-up call's).
    let own_timer = measure(
        "DeadlineLayer + AttemptTimeout default, inner waits once",
        allocations_per_call(
            &rt,
            quiet_deadline.layer(quiet_attempt.layer(WaitsOnce)),
            bare,
        ),
        "bare",
    );
    assert_eq!(own_timer, 1.0, "the deadline's own timer");
    let bounded = DeadlineLayer::builder()
        .timeout(Duration::from_secs(5))
        .propagation(Propagation::disabled())
        .inner_waits(InnerWaits::BoundedByAttemptTimeout)
        .build()
        .unwrap();
    assert_eq!(
        measure(
            "DeadlineLayer(bounded inside) + AttemptTimeout, inner waits once",
            allocations_per_call(&rt, bounded.layer(quiet_attempt.layer(WaitsOnce)), bare),
            "bare",
        ),
        0.0,
        "one timer per attempt, the attempt timeout's"
    );
    // With the header turned on, for every destination or a list matched against the
    // request's authority: while the deadline has not started, the header values are the ones
    // prepared when the layers were built, shared by reference count, so writing them
    // allocates nothing either; nor does matching the host.
    let stack = everywhere_deadline.layer(everywhere_attempt.clone().layer(NoOp));
    assert_eq!(
        measure(
            "DeadlineLayer + AttemptTimeout, header everywhere",
            allocations_per_call(&rt, stack, with_headers),
            "3 headers",
        ) - headers_noop,
        0.0
    );
    let stack = listed_deadline.layer(listed_attempt.layer(NoOp));
    assert_eq!(
        measure(
            "DeadlineLayer + AttemptTimeout, header to a list",
            allocations_per_call(&rt, stack, with_headers),
            "3 headers",
        ) - headers_noop,
        0.0
    );
    let server = ServerDeadlineLayer::builder()
        .carry(Carry::TaskLocal)
        .build()
        .unwrap()
        .layer(NoOp);
    assert_eq!(
        measure(
            "server DeadlineLayer(task-local)",
            allocations_per_call(&rt, server, bare),
            "bare"
        ),
        0.0
    );

    // What still allocates: the extension map when asked for (http's map box, its table, the
    // boxed value), and a header value formatted for a budget that is not the prepared one —
    // here, the client called from a server handler whose deadline (1 s) is shorter than its own.
    let ext = measure(
        "DeadlineLayer(Carry::Extensions), no propagation",
        allocations_per_call(&rt, extensions_deadline.layer(NoOp), bare),
        "bare",
    );
    let inherited = InScope(
        Duration::from_secs(3),
        default_deadline.layer(default_attempt.layer(NoOp)),
    );
    let not_formatted = measure(
        "ambient(3 s) > DeadlineLayer + AttemptTimeout default",
        allocations_per_call(&rt, inherited, with_headers),
        "3 headers",
    ) - headers_noop;
    assert_eq!(not_formatted, 0.0, "no header, nothing formatted");
    let inherited = InScope(
        Duration::from_secs(3),
        DeadlineLayer::builder()
            .timeout(Duration::from_secs(5))
            .propagation(Propagation::new().header(DEFAULT_TIMEOUT_HEADER))
            .build()
            .unwrap()
            .layer(everywhere_attempt.layer(NoOp)),
    );
    let formatted = measure(
        "ambient(3 s) > DeadlineLayer + AttemptTimeout, header everywhere",
        allocations_per_call(&rt, inherited, with_headers),
        "3 headers",
    ) - headers_noop;
    let server = ServerDeadlineLayer::new().layer(NoOp);
    let srv = measure(
        "server DeadlineLayer default",
        allocations_per_call(&rt, server, bare),
        "bare",
    );
    assert!(ext <= 3.0, "extension insert: {ext}");
    assert!(formatted <= 2.0, "one header value per layer: {formatted}");
    assert!(srv <= 3.0, "server extension insert: {srv}");
}
