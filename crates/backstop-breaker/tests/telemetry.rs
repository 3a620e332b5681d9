//! What a breaker reports to `tracing`: one "circuit breaker transition" event per state change.
//! In a binary of its own (tracing caches callsite interest process-wide); every test installs a
//! capturing subscriber on its own thread.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use backstop_breaker::{CircuitBreakerLayer, State};
use backstop_classify::Kind;
use backstop_testing::capture::{Capture, EventRecord, Value};
use common::*;
use tower::Layer;
use tracing::Level;

const HOST: &str = "http://db.internal/q";

#[tokio::test(start_paused = true)]
async fn closed_open_half_open_closed_is_three_events() {
    let (capture, _guard) = Capture::install();
    let mock = Mock::new();
    mock.reply(Reply::Status(503));
    let layer = opens_after_two_failures();
    let mut svc = layer.layer(mock.clone());
    for _ in 0..2 {
        assert_eq!(call(&mut svc, HOST).await.unwrap().status(), 503);
    }
    let err = call(&mut svc, HOST).await.unwrap_err();
    assert_eq!(err.kind(), Kind::BreakerOpen);
    tokio::time::sleep(Duration::from_secs(10)).await;
    mock.reply(Reply::Status(200));
    assert_eq!(call(&mut svc, HOST).await.unwrap().status(), 200);
    assert_eq!(layer.breakers().snapshots()[0].1.state, State::Closed);

    let events = capture.events_with("circuit breaker transition");
    let seen = transitions(&events);
    let expected = [
        ("closed", "open", Level::WARN),
        ("open", "half_open", Level::INFO),
        ("half_open", "closed", Level::INFO),
    ]
    .map(|(from, to, level)| (from.to_owned(), to.to_owned(), level));
    assert_eq!(seen, expected);
    for event in &events {
        assert_eq!(event.target, "backstop_breaker");
        assert_eq!(
            event.get("key"),
            Some(&Value::Text("http://db.internal:80".into()))
        );
    }
    assert_eq!(events[0].get("open_for_ms"), Some(&Value::U64(10_000)));
    assert_eq!(
        events[0].get("reason"),
        Some(&Value::Str("consecutive failures".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn changes_by_hand_are_reported_too() {
    let (capture, _guard) = Capture::install();
    let layer = CircuitBreakerLayer::new();
    let mut svc = layer.layer(Mock::new());
    call(&mut svc, HOST).await.unwrap();
    let key = layer.breakers().snapshots()[0].0.clone();
    layer.breakers().force_open(&key);
    layer.breakers().automatic(&key);
    let events = capture.events_with("circuit breaker transition");
    let seen = transitions(&events);
    assert_eq!(
        seen,
        [
            ("closed".to_owned(), "forced_open".to_owned(), Level::WARN),
            ("forced_open".to_owned(), "closed".to_owned(), Level::INFO),
        ]
    );
    assert_eq!(
        events[0].get("reason"),
        Some(&Value::Str("changed by hand".into()))
    );
}

/// Each transition event's `from`, `to` and level, in order.
fn transitions(events: &[EventRecord]) -> Vec<(String, String, Level)> {
    events
        .iter()
        .map(|e| {
            (
                e.get("from").unwrap().text(),
                e.get("to").unwrap().text(),
                e.level,
            )
        })
        .collect()
}
