//! The success-path cases of `overhead`, measured in interleaved rounds: on a shared machine whose
//! load drifts, every case sees the same conditions, and the median over rounds is compared.
//!
//! `cargo bench -p backstop-retry --bench interleaved`
#![allow(missing_docs)]

#[path = "common.rs"]
mod common;

use std::hint::black_box;
use std::time::Instant;

use backstop_retry::RetryLayer;
use common::{call_once, clone_request, noop, request, tower_policy, tower_policy_budget};
use tower::Layer;
use tower::retry::RetryLayer as TowerRetryLayer;

const ROUNDS: usize = 41;
const CALLS: u32 = 20_000;
/// Rounds and calls of a quick run (see [`quick`]).
const QUICK: (usize, u32) = (3, 100);

/// Whether this is a quick run: `cargo test` runs the bench binary without `--bench` (as
/// criterion's test mode does, `--test` too): a few calls per case, to show it still runs, and
/// no figure worth reading. `cargo bench` passes `--bench`.
fn quick() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench")
}

fn time(calls: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(calls)
}

fn main() {
    let mut bare = noop();
    let mut bare_clone = noop();
    let mut tower_retry = TowerRetryLayer::new(tower_policy()).layer(noop());
    let mut tower_budget = TowerRetryLayer::new(tower_policy_budget()).layer(noop());
    let layer = RetryLayer::builder()
        .no_budget()
        .build()
        .unwrap_or_default();
    let mut ours = layer.layer(noop());
    let mut ours_budget = RetryLayer::new().layer(noop());
    let one = RetryLayer::builder()
        .no_budget()
        .max_attempts(1)
        .build()
        .unwrap_or_default();
    let mut ours_once = one.layer(noop());

    let names = [
        "bare service",
        "bare + request clone alone",
        "tower Retry",
        "tower Retry + TpsBudget",
        "backstop RetryLayer, no budget",
        "backstop RetryLayer (default: budget)",
        "backstop RetryLayer, max_attempts 1 (no clone, no budget)",
    ];
    // `interleaved -- --only <case> <calls>`: run one case, for counting instructions under
    // valgrind (`--tool=callgrind`), which a shared machine cannot disturb.
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--only") {
        let case: usize = args.get(at + 1).and_then(|a| a.parse().ok()).unwrap_or(0);
        let calls: u32 = args.get(at + 2).and_then(|a| a.parse().ok()).unwrap_or(0);
        for _ in 0..calls {
            match case {
                0 => black_box(call_once(&mut bare, black_box(request()))),
                1 => {
                    let req = black_box(request());
                    drop(black_box(clone_request(&req)));
                    black_box(call_once(&mut bare_clone, req))
                }
                2 => black_box(call_once(&mut tower_retry, black_box(request()))),
                3 => black_box(call_once(&mut tower_budget, black_box(request()))),
                4 => black_box(call_once(&mut ours, black_box(request()))),
                5 => black_box(call_once(&mut ours_budget, black_box(request()))),
                _ => black_box(call_once(&mut ours_once, black_box(request()))),
            };
        }
        println!("{}: {calls} calls", names.get(case).unwrap_or(&"?"));
        return;
    }
    let (rounds, calls) = if quick() { QUICK } else { (ROUNDS, CALLS) };
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for _ in 0..rounds {
        samples[0].push(time(calls, || {
            black_box(call_once(&mut bare, black_box(request())));
        }));
        samples[1].push(time(calls, || {
            let req = black_box(request());
            drop(black_box(clone_request(&req)));
            black_box(call_once(&mut bare_clone, req));
        }));
        samples[2].push(time(calls, || {
            black_box(call_once(&mut tower_retry, black_box(request())));
        }));
        samples[3].push(time(calls, || {
            black_box(call_once(&mut tower_budget, black_box(request())));
        }));
        samples[4].push(time(calls, || {
            black_box(call_once(&mut ours, black_box(request())));
        }));
        samples[5].push(time(calls, || {
            black_box(call_once(&mut ours_budget, black_box(request())));
        }));
        samples[6].push(time(calls, || {
            black_box(call_once(&mut ours_once, black_box(request())));
        }));
    }
    let medians: Vec<f64> = samples
        .iter_mut()
        .map(|s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        })
        .collect();
    println!("| case | median ns/call | over bare |");
    println!("|---|---:|---:|");
    for (name, median) in names.iter().zip(&medians) {
        println!("| {name} | {median:.0} | {:+.0} |", median - medians[0]);
    }
}
