//! Closed-path and open-path overhead of backstop's breaker against tower-resilience and
//! failsafe, with a no-op upstream, on 1 and 2 threads.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tower::Service;

fn one_thread<S: Service<Request<()>>>(c: &mut Criterion, name: &str, mut svc: S) {
    c.bench_function(name, |b| b.iter(|| black_box(drive(&mut svc))));
}

/// `handle`: a runtime entered on the measuring threads, for services that need one
/// (tower-resilience sleeps in `poll_ready` while open).
fn two_threads<S>(c: &mut Criterion, name: &str, svc: S, handle: Option<&tokio::runtime::Handle>)
where
    S: Service<Request<()>> + Clone + Send,
{
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    let mut svc = svc.clone();
                    scope.spawn(move || {
                        let _guard = handle.map(|h| h.enter());
                        for _ in 0..iters {
                            black_box(drive(&mut svc));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
}

fn benches(c: &mut Criterion) {
    // No runtime is entered on the measuring threads: with tokio's `test-util` feature (on in
    // every dev build of this crate, for the paused-clock tests) `tokio::time::Instant::now()`
    // inside a runtime reads a mutex-guarded test clock, which production builds do not have.
    let rt = runtime();
    let handle = rt.handle().clone();

    // Closed path.
    one_thread(c, "closed/1t/bare", NoOp { fail: false });
    one_thread(c, "closed/1t/backstop (per host)", backstop(false));
    one_thread(c, "closed/1t/backstop (single)", backstop_single(false));
    {
        let _guard = rt.enter();
        one_thread(c, "closed/1t/tower-resilience", resilience(false));
    }
    one_thread(c, "closed/1t/failsafe", failsafe(false));
    two_threads(c, "closed/2t/bare", NoOp { fail: false }, None);
    two_threads(
        c,
        "closed/2t/backstop (single)",
        backstop_single(false),
        None,
    );
    two_threads(c, "closed/2t/backstop (per host)", backstop(false), None);
    two_threads(
        c,
        "closed/2t/tower-resilience",
        resilience(false),
        Some(&handle),
    );
    two_threads(c, "closed/2t/failsafe", failsafe(false), None);

    // Open path: every call rejected.
    let mut ours = backstop(true);
    trip(&mut ours);
    let mut theirs = resilience(true);
    {
        let _guard = rt.enter();
        trip(&mut theirs);
    }
    let mut fs = failsafe(true);
    trip(&mut fs);
    one_thread(c, "open/1t/backstop (per host)", ours.clone());
    {
        let _guard = rt.enter();
        one_thread(c, "open/1t/tower-resilience", theirs.clone());
    }
    one_thread(c, "open/1t/failsafe", fs.clone());
    two_threads(c, "open/2t/backstop (per host)", ours, None);
    two_threads(c, "open/2t/tower-resilience", theirs, Some(&handle));
    two_threads(c, "open/2t/failsafe", fs, None);
}

criterion_group! {
    name = group;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(group);
