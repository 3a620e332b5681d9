//! The breaker's gauge and counters (feature `metrics`), read from `metrics_util`'s debugging
//! recorder.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use backstop_breaker::metrics::{FROM, KEY, REJECTIONS, STATE, TO, TRANSITIONS};
use backstop_breaker::{CircuitBreakerLayer, Single};
use backstop_classify::Kind;
use backstop_testing::recorded::Recorded;
use common::*;
use tower::Layer;

#[tokio::test(start_paused = true)]
async fn an_opening_breaker_moves_its_gauge_and_counts_the_transition_and_rejections() {
    let (recorded, _recorder) = Recorded::install();
    let mock = Mock::new();
    let layer = opens_after_two_failures();
    let mut svc = layer.layer(mock.clone());
    let key = (KEY, "http://gauge.internal:80");

    // Created closed: the gauge is set to 0 at once.
    assert_eq!(
        call(&mut svc, "http://gauge.internal/")
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = recorded.take();
    assert_eq!(metrics.gauge(STATE, &[key]), Some(0.0), "{metrics:#?}");
    assert_eq!(
        metrics.counter(TRANSITIONS, &[key, (FROM, "closed"), (TO, "open")]),
        None
    );

    mock.reply(Reply::Status(503));
    for _ in 0..2 {
        call(&mut svc, "http://gauge.internal/").await.unwrap();
    }
    for _ in 0..3 {
        let err = call(&mut svc, "http://gauge.internal/").await.unwrap_err();
        assert_eq!(err.kind(), Kind::BreakerOpen);
    }
    let metrics = recorded.take();
    assert_eq!(metrics.gauge(STATE, &[key]), Some(2.0));
    assert_eq!(
        metrics.counter(TRANSITIONS, &[key, (FROM, "closed"), (TO, "open")]),
        Some(1)
    );
    assert_eq!(metrics.counter(REJECTIONS, &[key]), Some(3));

    // Probe after the open period: half-open (1), then closed (0) when it succeeds.
    tokio::time::sleep(Duration::from_secs(10)).await;
    mock.reply(Reply::Status(200));
    call(&mut svc, "http://gauge.internal/").await.unwrap();
    let metrics = recorded.take();
    assert_eq!(
        metrics.counter(TRANSITIONS, &[key, (FROM, "open"), (TO, "half_open")]),
        Some(1)
    );
    assert_eq!(
        metrics.counter(TRANSITIONS, &[key, (FROM, "half_open"), (TO, "closed")]),
        Some(1)
    );
    assert_eq!(metrics.gauge(STATE, &[key]), Some(0.0));
    assert_eq!(metrics.counter(REJECTIONS, &[key]), Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_single_breaker_is_labelled_single() {
    let (recorded, _recorder) = Recorded::install();
    let layer = CircuitBreakerLayer::builder().key(Single).build().unwrap();
    let mut svc = layer.layer(Mock::new());
    call(&mut svc, "http://one.internal/").await.unwrap();
    layer.breakers().force_open(&());
    assert!(call(&mut svc, "http://one.internal/").await.is_err());
    let metrics = recorded.take();
    let key = (KEY, "single");
    assert_eq!(metrics.gauge(STATE, &[key]), Some(2.0), "{metrics:#?}");
    assert_eq!(
        metrics.counter(TRANSITIONS, &[key, (FROM, "closed"), (TO, "forced_open")]),
        Some(1)
    );
    assert_eq!(metrics.counter(REJECTIONS, &[key]), Some(1));
}
