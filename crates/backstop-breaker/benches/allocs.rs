//! Allocations per call of each case (a binary of its own: the counting allocator is global).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::alloc::System;

use common::*;
use http::Request;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::Service;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const N: usize = 10_000;

/// Whether this is a quick run: `cargo test` runs the bench binary without `--bench` (as
/// criterion's test mode does, `--test` too): a few calls per case, to show it still runs, and
/// no figure worth reading. `cargo bench` passes `--bench`.
fn quick() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench")
}

fn count<S: Service<Request<()>>>(name: &str, mut svc: S) {
    let n = if quick() { 100 } else { N };
    drive(&mut svc, request());
    let region = Region::new(GLOBAL);
    for _ in 0..n {
        std::hint::black_box(drive(&mut svc, request()));
    }
    let change = region.change();
    println!(
        "{name:<34} {:>6.2} allocations/call {:>8.1} bytes/call",
        change.allocations as f64 / n as f64,
        change.bytes_allocated as f64 / n as f64
    );
}

fn main() {
    let rt = runtime();
    let _guard = rt.enter();
    count("closed/bare", NoOp { fail: false });
    count("closed/backstop (per host)", backstop(false));
    count("closed/backstop (single)", backstop_single(false));
    count("closed/tower-resilience", resilience(false));
    count("closed/failsafe", failsafe(false));
    let mut ours = backstop(true);
    trip(&mut ours);
    let mut theirs = resilience(true);
    trip(&mut theirs);
    let mut fs = failsafe(true);
    trip(&mut fs);
    count("open/backstop (per host)", ours);
    count("open/tower-resilience", theirs);
    count("open/failsafe", fs);
}
