//! Allocations per successful call: the retry layer may cost the request clone and nothing more.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/common.rs"]
mod common;

use backstop_retry::RetryLayer;
use common::{call_once, clone_request, noop, request, tower_policy};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::Layer;

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const CALLS: usize = 1000;

fn allocations(mut call: impl FnMut()) -> usize {
    call(); // warm up lazily initialised state
    // The counter is process-wide and the test harness's own threads allocate now and then: of
    // three rounds, the quietest counts (what the code itself allocates, it allocates every round).
    (0..3)
        .map(|_| {
            let region = Region::new(GLOBAL);
            for _ in 0..CALLS {
                call();
            }
            region.change().allocations
        })
        .min()
        .unwrap_or(usize::MAX)
}

#[test]
fn the_success_path_allocates_only_the_request_clone() {
    let mut bare = noop();
    let bare = allocations(|| assert!(call_once(&mut bare, request())));
    let mut bare2 = noop();
    let cloned = allocations(|| {
        let req = request();
        drop(clone_request(&req));
        assert!(call_once(&mut bare2, req));
    });
    let mut tower = tower::retry::RetryLayer::new(tower_policy()).layer(noop());
    let tower = allocations(|| assert!(call_once(&mut tower, request())));
    let mut ours = RetryLayer::new().layer(noop());
    let ours = allocations(|| assert!(call_once(&mut ours, request())));
    let per_call = |n: usize| n as f64 / CALLS as f64;
    println!(
        "allocations per call: bare {}, bare + clone {}, tower Retry {}, backstop {}",
        per_call(bare),
        per_call(cloned),
        per_call(tower),
        per_call(ours)
    );
    assert_eq!(
        ours, cloned,
        "the retry layer allocates beyond the request clone"
    );
    assert!(ours <= tower);

    // In the same test: the counting allocator sees every thread, so nothing may run alongside.
    use tower::Service;
    let mut svc = RetryLayer::new().layer(noop());
    let future = svc.call(request());
    let size = std::mem::size_of_val(&future);
    println!("ResponseFuture: {size} bytes");
    assert!(size <= 512, "{size} bytes");
}
