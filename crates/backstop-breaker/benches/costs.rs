//! The breaker's own cost per call, case by case, in two forms that a shared, loaded machine
//! cannot distort in the same way:
//!
//! - `costs -- --only <case> <calls>` runs one case `calls` times, for counting instructions
//!   under valgrind: `valgrind --tool=callgrind --toggle-collect='costs::measured*' ...` counts
//!   only what runs inside [`measured`] — `poll_ready`, `call`, one `poll` to completion and the
//!   drop of the result (and of the request, which every service here consumes). Requests are
//!   built before, outside the counted function.
//! - `costs` alone times every case in 41 interleaved rounds of prebuilt requests and prints the
//!   median per case, so load drifting during the run hits every case alike.
//!
//! `cargo bench -p backstop-breaker --bench costs`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::time::Instant;

use common::*;
use http::Request;
use tower::Service;

const ROUNDS: usize = 41;
const CALLS: usize = 5_000;
/// Rounds and calls of a quick run (see [`quick`]).
const QUICK: (usize, usize) = (3, 100);

/// Whether this is a quick run: `cargo test` runs the bench binary without `--bench` (as
/// criterion's test mode does, `--test` too): a few calls per case, to show it still runs, and
/// no figure worth reading. `cargo bench` passes `--bench`.
fn quick() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench")
}

/// The counted region: one whole call with a prebuilt request.
#[inline(never)]
fn measured<S: Service<Request<()>>>(svc: &mut S, req: Request<()>) -> bool {
    drive(svc, req)
}

/// The counted region of the baseline for rejections: what every case pays to drop the request.
#[inline(never)]
fn measured_drop(req: Request<()>) -> bool {
    drop(black_box(req));
    false
}

type Case = (&'static str, Box<dyn FnMut(Request<()>) -> bool>);

fn case<S: Service<Request<()>> + 'static>(name: &'static str, mut svc: S) -> Case {
    (name, Box::new(move |req| measured(&mut svc, req)))
}

fn cases() -> Vec<Case> {
    let mut open_host = backstop(true);
    trip(&mut open_host);
    let mut open_single = backstop_single(true);
    trip(&mut open_single);
    let mut open_failsafe = failsafe(true);
    trip(&mut open_failsafe);
    let mut open_resilience = resilience(true);
    trip(&mut open_resilience);
    let mut closed = vec![
        case("closed: bare", NoOp { fail: false }),
        case("closed: backstop (per host)", backstop(false)),
        case("closed: backstop (single)", backstop_single(false)),
        case(
            "closed: backstop (per host, default rules)",
            backstop_default_rules(false),
        ),
        case("closed: failsafe", failsafe(false)),
        case("closed: tower-resilience", resilience(false)),
        case("open: backstop (per host)", open_host),
        case("open: backstop (single)", open_single),
        case("open: failsafe", open_failsafe),
        case("open: tower-resilience", open_resilience),
    ];
    let drop_only: Case = ("request drop only", Box::new(measured_drop));
    closed.insert(0, drop_only);
    closed
}

fn main() {
    // tower-resilience needs a runtime (it sleeps in `poll_ready` while open). Time is never
    // paused in this binary, so tokio's `test-util` clock reads `std::time::Instant` directly.
    let rt = runtime();
    let _guard = rt.enter();
    let mut cases = cases();
    // Warm every case up (first calls create breakers and touch cold code).
    for (_, run) in &mut cases {
        for _ in 0..100 {
            run(request());
        }
    }

    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--only") {
        let index: usize = args.get(at + 1).and_then(|a| a.parse().ok()).unwrap_or(0);
        let calls: usize = args.get(at + 2).and_then(|a| a.parse().ok()).unwrap_or(0);
        let (name, run) = &mut cases[index];
        let requests: Vec<Request<()>> = (0..calls).map(|_| request()).collect();
        for req in requests {
            black_box(run(req));
        }
        println!("{index} {name}: {calls} calls");
        return;
    }
    if args.iter().any(|a| a == "--list") {
        for (index, (name, _)) in cases.iter().enumerate() {
            println!("{index} {name}");
        }
        return;
    }

    let (rounds, calls) = if quick() { QUICK } else { (ROUNDS, CALLS) };
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for ((_, run), samples) in cases.iter_mut().zip(&mut samples) {
            let requests: Vec<Request<()>> = (0..calls).map(|_| request()).collect();
            let start = Instant::now();
            for req in requests {
                black_box(run(req));
            }
            samples.push(start.elapsed().as_nanos() as f64 / calls as f64);
        }
    }
    println!("| case | median ns/call (interleaved, {rounds} rounds × {calls}) |");
    println!("|---|---:|");
    for ((name, _), samples) in cases.iter().zip(&mut samples) {
        samples.sort_by(f64::total_cmp);
        println!("| {name} | {:.0} |", samples[samples.len() / 2]);
    }
}
