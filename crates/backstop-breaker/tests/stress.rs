//! Many tasks on a multi-threaded runtime race for half-open permits: the number of probes in
//! flight never exceeds the permit count, even with probes abandoned mid-flight.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backstop_breaker::CircuitBreakerLayer;
use common::*;
use tower::Layer;

const PROBES: u32 = 2;
const TASKS: usize = 64;
const CALLS_PER_TASK: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_permits_are_never_exceeded() {
    // The upstream always fails, so once tripped the breaker never closes again: every call
    // that reaches the upstream after the trip is a probe.
    let mock = Mock::new();
    mock.reply(Reply::Status(503));
    let layer = CircuitBreakerLayer::single()
        .consecutive_failures(1)
        .half_open_probes(PROBES)
        .open_for(Duration::from_micros(200))
        .max_open_for(Duration::from_micros(200))
        .open_jitter(0.0)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock.clone());
    let _ = call(&mut svc, "http://x/").await;
    assert_eq!(mock.calls(), 1);
    mock.delay(Duration::from_micros(50));

    let abandoned = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let mut svc = svc.clone();
        let abandoned = abandoned.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..CALLS_PER_TASK {
                let fut = call(&mut svc, "http://x/");
                if (task + i) % 7 == 0 {
                    // Abandon some calls (probes among them) part-way.
                    if tokio::time::timeout(Duration::from_micros(20), fut)
                        .await
                        .is_err()
                    {
                        abandoned.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    let _ = fut.await;
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    bounded(async {
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await;
    let probes = mock.calls() - 1;
    assert!(
        mock.max_in_flight() <= PROBES as usize,
        "{} probes in flight at once (permits: {PROBES})",
        mock.max_in_flight()
    );
    assert!(probes >= 10, "the stress must exercise probing: {probes}");
    eprintln!(
        "probes: {probes}, max in flight: {}, abandoned: {}",
        mock.max_in_flight(),
        abandoned.load(Ordering::Relaxed)
    );
}
