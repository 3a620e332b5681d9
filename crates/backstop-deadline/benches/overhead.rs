//! Success-path overhead of the deadline layers against tower's `Timeout`, side by side, on a
//! no-op inner service (criterion). Allocation counts are in `tests/allocations.rs`; a
//! round-robin run of the same cases, fairer on a loaded machine, is `benches/interleaved.rs`.
//!
//! `cargo bench -p backstop-deadline --bench overhead -- --warm-up-time 1 --measurement-time 3`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

mod common;

use criterion::{Criterion, criterion_group, criterion_main};

fn overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("deadline");
    for mut case in common::cases() {
        group.bench_function(case.name, |b| b.iter_custom(|iters| (case.run)(iters)));
    }
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
