//! Success-path overhead of `RetryLayer` against tower's `Retry`, on a no-op upstream, one run.
#![allow(missing_docs)]

#[path = "common.rs"]
mod common;

use std::hint::black_box;

use backstop_retry::RetryLayer;
use common::{call_once, clone_request, noop, request, tower_policy, tower_policy_budget};
use criterion::{Criterion, criterion_group, criterion_main};
use tower::Layer;
use tower::retry::RetryLayer as TowerRetryLayer;

fn overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("retry success path");
    let mut bare = noop();
    group.bench_function("bare service", |b| {
        b.iter(|| black_box(call_once(&mut bare, black_box(request()))))
    });
    let mut bare = noop();
    group.bench_function("bare + request clone alone", |b| {
        b.iter(|| {
            let req = black_box(request());
            let clone = black_box(clone_request(&req));
            drop(clone);
            black_box(call_once(&mut bare, req))
        })
    });
    let mut tower_retry = TowerRetryLayer::new(tower_policy()).layer(noop());
    group.bench_function("tower Retry", |b| {
        b.iter(|| black_box(call_once(&mut tower_retry, black_box(request()))))
    });
    let mut tower_budget = TowerRetryLayer::new(tower_policy_budget()).layer(noop());
    group.bench_function("tower Retry + TpsBudget", |b| {
        b.iter(|| black_box(call_once(&mut tower_budget, black_box(request()))))
    });
    let layer = RetryLayer::builder()
        .no_budget()
        .build()
        .unwrap_or_default();
    let mut ours = layer.layer(noop());
    group.bench_function("backstop RetryLayer, no budget", |b| {
        b.iter(|| black_box(call_once(&mut ours, black_box(request()))))
    });
    let mut ours_budget = RetryLayer::new().layer(noop());
    group.bench_function("backstop RetryLayer (default: budget)", |b| {
        b.iter(|| black_box(call_once(&mut ours_budget, black_box(request()))))
    });
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
