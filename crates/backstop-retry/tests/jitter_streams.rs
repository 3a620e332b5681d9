//! Requests under one layer draw their jitter from streams of their own: clients that fail
//! together must not retry together, yet a seeded layer repeats itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use backstop_retry::{Jitter, ReplayBody, RetryInfo, RetryLayer};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{Layer, ServiceExt, service_fn};

/// The delays a seeded layer sleeps for `requests` failing requests, retried twice each.
async fn delays(seed: u64, requests: usize) -> Vec<Vec<Duration>> {
    let layer = RetryLayer::builder()
        .base_delay(Duration::from_millis(100))
        .max_delay(Duration::from_secs(1))
        .jitter(Jitter::Full)
        .max_attempts(3)
        .no_budget()
        .seed(seed)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|_req: Request<ReplayBody<Full<Bytes>>>| async {
        Ok::<_, std::io::Error>(
            Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .body(())
                .unwrap(),
        )
    }));
    let mut all = Vec::new();
    for _ in 0..requests {
        let req = Request::get("http://127.0.0.1/")
            .body(Full::default())
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        all.push(RetryInfo::of(&res).delays().collect::<Vec<_>>());
    }
    all
}

#[tokio::test(start_paused = true)]
async fn requests_of_one_layer_draw_different_delays() {
    let run = delays(7, 8).await;
    let mut first_retries: Vec<_> = run.iter().map(|d| d[0]).collect();
    first_retries.sort();
    first_retries.dedup();
    // Eight draws from [0, 100 ms] at millisecond resolution: all alike only if they share a
    // stream, which is how every request of a layer once drew the same delays.
    assert!(first_retries.len() > 1, "{run:?}");
    assert!(run.iter().any(|d| *d != run[0]), "{run:?}");
}

#[tokio::test(start_paused = true)]
async fn a_seeded_layer_repeats_its_delays_request_by_request() {
    assert_eq!(delays(7, 5).await, delays(7, 5).await);
    assert_ne!(delays(7, 5).await, delays(8, 5).await);
}
