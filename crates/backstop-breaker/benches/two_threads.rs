//! Two threads sharing one breaker: the closed and open paths timed side by side with failsafe
//! and tower-resilience, in interleaved rounds (each round times every case once), so load
//! drifting during the run hits every case alike. Each thread has its own clone of the service;
//! the clones share the breaker. Requests are built before the timed part.
//!
//! `cargo bench -p backstop-breaker --bench two_threads`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::sync::Barrier;
use std::time::Instant;

use common::*;
use http::Request;
use tower::Service;

const ROUNDS: usize = 31;
const CALLS: usize = 5_000;
/// Rounds and calls of a quick run (see [`quick`]).
const QUICK: (usize, usize) = (2, 100);

/// Whether this is a quick run: `cargo test` runs the bench binary without `--bench` (as
/// criterion's test mode does, `--test` too): a few calls per case, to show it still runs, and
/// no figure worth reading. `cargo bench` passes `--bench`.
fn quick() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench")
}

type Worker = Box<dyn FnMut(Request<()>) -> bool + Send>;

/// Two clones of one service, one per thread.
fn pair<S>(svc: S) -> [Worker; 2]
where
    S: Service<Request<()>> + Clone + Send + 'static,
{
    let mut a = svc.clone();
    let mut b = svc;
    [
        Box::new(move |req| drive(&mut a, req)),
        Box::new(move |req| drive(&mut b, req)),
    ]
}

fn cases() -> Vec<(&'static str, [Worker; 2])> {
    let mut open_host = backstop(true);
    trip(&mut open_host);
    let mut open_single = backstop_single(true);
    trip(&mut open_single);
    let mut open_failsafe = failsafe(true);
    trip(&mut open_failsafe);
    let mut open_resilience = resilience(true);
    trip(&mut open_resilience);
    vec![
        ("closed: bare", pair(NoOp { fail: false })),
        ("closed: backstop (per host)", pair(backstop(false))),
        ("closed: backstop (single)", pair(backstop_single(false))),
        ("closed: failsafe", pair(failsafe(false))),
        ("closed: tower-resilience", pair(resilience(false))),
        ("open: backstop (per host)", pair(open_host)),
        ("open: backstop (single)", pair(open_single)),
        ("open: failsafe", pair(open_failsafe)),
        ("open: tower-resilience", pair(open_resilience)),
    ]
}

fn main() {
    let rt = runtime();
    let _guard = rt.enter();
    let mut cases = cases();
    let (rounds, calls) = if quick() { QUICK } else { (ROUNDS, CALLS) };
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..=rounds {
        for ((_, workers), samples) in cases.iter_mut().zip(&mut samples) {
            let [first, second] = workers;
            let batches: [Vec<Request<()>>; 2] = [
                (0..calls).map(|_| request()).collect(),
                (0..calls).map(|_| request()).collect(),
            ];
            let [batch_a, batch_b] = batches;
            let barrier = Barrier::new(3);
            let rt = &rt;
            let elapsed = std::thread::scope(|scope| {
                for (worker, batch) in [(first, batch_a), (second, batch_b)] {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        let _guard = rt.enter();
                        barrier.wait();
                        for req in batch {
                            black_box(worker(req));
                        }
                    });
                }
                barrier.wait();
                Instant::now()
            })
            .elapsed();
            // Round 0 warms every case up.
            if round > 0 {
                samples.push(elapsed.as_nanos() as f64 / calls as f64);
            }
        }
    }
    println!("| case | median ns per call per thread (2 threads, {rounds} rounds × {calls}) |");
    println!("|---|---:|");
    for ((name, _), samples) in cases.iter().zip(&mut samples) {
        samples.sort_by(f64::total_cmp);
        println!("| {name} | {:.0} |", samples[samples.len() / 2]);
    }
}
