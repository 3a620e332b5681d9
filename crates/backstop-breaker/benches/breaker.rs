//! Closed-path and open-path overhead of backstop's breaker against tower-resilience and
//! failsafe, with a no-op upstream, on 1 and 2 threads.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::*;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Request;
use tower::Service;

/// Requests are built in the untimed setup of each batch: the figures are the call alone.
fn one_thread<S: Service<Request<()>>>(c: &mut Criterion, name: &str, mut svc: S) {
    c.bench_function(name, |b| {
        b.iter_batched(
            request,
            |req| black_box(drive(&mut svc, req)),
            BatchSize::SmallInput,
        )
    });
}

const CHUNK: u64 = 512;

/// `handle`: a runtime entered on the measuring threads, for services that need one
/// (tower-resilience sleeps in `poll_ready` while open).
fn two_threads<S>(c: &mut Criterion, name: &str, svc: S, handle: Option<&tokio::runtime::Handle>)
where
    S: Service<Request<()>> + Clone + Send,
{
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            std::thread::scope(|scope| {
                let mut handles = Vec::new();
                for _ in 0..2 {
                    let mut svc = svc.clone();
                    handles.push(scope.spawn(move || {
                        let _guard = handle.map(|h| h.enter());
                        // Requests are built in chunks outside the timed part.
                        let mut spent = Duration::ZERO;
                        let mut left = iters;
                        while left > 0 {
                            let n = left.min(CHUNK);
                            left -= n;
                            let requests: Vec<Request<()>> = (0..n).map(|_| request()).collect();
                            let start = Instant::now();
                            for req in requests {
                                black_box(drive(&mut svc, req));
                            }
                            spent += start.elapsed();
                        }
                        spent
                    }));
                }
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .max()
                    .unwrap_or_default()
            })
        })
    });
}

fn benches(c: &mut Criterion) {
    // tokio's `test-util` feature is on in every dev build of this crate (for the paused-clock
    // tests), but tokio 1.54 reads `std::time::Instant` directly unless time was paused
    // somewhere in the process, which never happens here: the clock costs what it costs in
    // production, runtime entered or not.
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
    let mut ours_single = backstop_single(true);
    trip(&mut ours_single);
    one_thread(c, "open/1t/backstop (per host)", ours.clone());
    one_thread(c, "open/1t/backstop (single)", ours_single.clone());
    {
        let _guard = rt.enter();
        one_thread(c, "open/1t/tower-resilience", theirs.clone());
    }
    one_thread(c, "open/1t/failsafe", fs.clone());
    two_threads(c, "open/2t/backstop (per host)", ours, None);
    two_threads(c, "open/2t/backstop (single)", ours_single, None);
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
