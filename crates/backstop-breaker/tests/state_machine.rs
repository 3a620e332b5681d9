//! The state machine under paused time: trip, fail fast, probe, close, re-open for longer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::error::Error as _;
use std::time::Duration;

use backstop_breaker::{CircuitBreakerLayer, State};
use backstop_classify::{Kind, Phase, Retryable};
use common::*;
use tower::{Layer, Service, ServiceExt};

const HOST: &str = "http://db.internal/q";

fn layer(consecutive: u32) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .consecutive_failures(consecutive)
        .no_failure_rate()
        .open_for(Duration::from_secs(10))
        .open_jitter(0.0)
        .build()
        .unwrap()
}

fn state(layer: &CircuitBreakerLayer) -> State {
    layer.breakers().snapshots()[0].1.state
}

#[tokio::test(start_paused = true)]
async fn trips_after_n_consecutive_failures_and_fails_fast_while_open() {
    let mock = Mock::new();
    mock.reply(Reply::Status(503));
    let layer = layer(5);
    let mut svc = layer.layer(mock.clone());
    for i in 0..4 {
        let res = call(&mut svc, HOST).await.unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(state(&layer), State::Closed, "after {} failures", i + 1);
    }
    // A success in between resets the run.
    mock.reply(Reply::Status(200));
    call(&mut svc, HOST).await.unwrap();
    mock.reply(Reply::Status(503));
    for _ in 0..4 {
        call(&mut svc, HOST).await.unwrap();
    }
    assert_eq!(state(&layer), State::Closed);
    call(&mut svc, HOST).await.unwrap();
    assert_eq!(state(&layer), State::Open);
    assert_eq!(mock.calls(), 10);

    for _ in 0..50 {
        let err = call(&mut svc, HOST).await.unwrap_err();
        assert_eq!(err.kind(), Kind::BreakerOpen);
        assert_eq!(err.phase(), Phase::Local);
        assert_eq!(err.retryable(), Retryable::Safe);
        assert!(err.source().is_none());
    }
    assert_eq!(mock.calls(), 10, "no call reaches the upstream while open");
    let snapshot = layer.breakers().snapshots()[0].1;
    assert_eq!(snapshot.next_probe_in, Some(Duration::from_secs(10)));
    assert_eq!(snapshot.trips, 1);
}

async fn trip<S>(svc: &mut S, n: u32)
where
    S: Service<http::Request<()>, Error = backstop_classify::Error>,
{
    for _ in 0..n {
        let _ = call(svc, HOST).await;
    }
}

#[tokio::test(start_paused = true)]
async fn admits_exactly_one_probe_with_100_concurrent_callers_then_closes_on_success() {
    let mock = Mock::new();
    mock.reply(Reply::Status(503));
    let layer = layer(3);
    let mut svc = layer.layer(mock.clone());
    trip(&mut svc, 3).await;
    assert_eq!(state(&layer), State::Open);
    tokio::time::advance(Duration::from_secs(10)).await;

    // The upstream recovered but answers slowly, so every caller races while the probe is out.
    mock.reply(Reply::Status(200));
    mock.delay(Duration::from_millis(100));
    let calls_before = mock.calls();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let mut svc = svc.clone();
        tasks.push(tokio::spawn(async move { call(&mut svc, HOST).await }));
    }
    let mut admitted = 0;
    let mut rejected = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(res) => {
                assert_eq!(res.status(), 200);
                admitted += 1;
            }
            Err(err) => {
                assert_eq!(err.kind(), Kind::BreakerOpen);
                rejected += 1;
            }
        }
    }
    assert_eq!((admitted, rejected), (1, 99));
    assert_eq!(mock.calls() - calls_before, 1);
    assert_eq!(mock.max_in_flight(), 1);
    assert_eq!(state(&layer), State::Closed);
    // Closed again: everyone flows.
    mock.delay(Duration::ZERO);
    for _ in 0..10 {
        assert_eq!(call(&mut svc, HOST).await.unwrap().status(), 200);
    }
}

#[tokio::test(start_paused = true)]
async fn reopens_for_longer_on_probe_failure() {
    let mock = Mock::new();
    mock.reply(Reply::Fail(Kind::Refused));
    let layer = layer(3);
    let mut svc = layer.layer(mock.clone());
    trip(&mut svc, 3).await;
    let first = layer.breakers().snapshots()[0].1;
    assert_eq!(first.state, State::Open);
    assert_eq!(first.next_probe_in, Some(Duration::from_secs(10)));

    tokio::time::advance(Duration::from_secs(10)).await;
    let probe = call(&mut svc, HOST).await.unwrap_err();
    assert_eq!(
        probe.kind(),
        Kind::Refused,
        "the probe reached the upstream"
    );
    let second = layer.breakers().snapshots()[0].1;
    assert_eq!(second.state, State::Open);
    assert_eq!(second.trips, 2);
    assert_eq!(second.next_probe_in, Some(Duration::from_secs(20)));

    // Still open 19 s later; the next probe goes at 20 s.
    tokio::time::advance(Duration::from_secs(19)).await;
    assert!(is_open_rejection(&call(&mut svc, HOST).await));
    tokio::time::advance(Duration::from_secs(1)).await;
    let calls = mock.calls();
    let _ = call(&mut svc, HOST).await;
    assert_eq!(mock.calls(), calls + 1);
    assert_eq!(
        layer.breakers().snapshots()[0].1.next_probe_in,
        Some(Duration::from_secs(40))
    );
}

#[tokio::test(start_paused = true)]
async fn open_duration_falls_back_to_base_after_a_stable_closed_period() {
    let mock = Mock::new();
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(2)
        .no_failure_rate()
        .open_for(Duration::from_secs(1))
        .open_jitter(0.0)
        .stable_after(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut svc = layer.layer(mock.clone());
    let next = |layer: &CircuitBreakerLayer| layer.breakers().snapshots()[0].1.next_probe_in;
    mock.reply(Reply::Status(500));
    trip(&mut svc, 2).await;
    assert_eq!(next(&layer), Some(Duration::from_secs(1)));
    // Probe fails twice: 2 s, then 4 s.
    tokio::time::advance(Duration::from_secs(1)).await;
    trip(&mut svc, 1).await;
    assert_eq!(next(&layer), Some(Duration::from_secs(2)));
    tokio::time::advance(Duration::from_secs(2)).await;
    trip(&mut svc, 1).await;
    assert_eq!(next(&layer), Some(Duration::from_secs(4)));
    // Recovers; trips again soon after: the streak continues (8 s).
    tokio::time::advance(Duration::from_secs(4)).await;
    mock.reply(Reply::Status(200));
    call(&mut svc, HOST).await.unwrap();
    assert_eq!(state(&layer), State::Closed);
    mock.reply(Reply::Status(500));
    trip(&mut svc, 2).await;
    assert_eq!(next(&layer), Some(Duration::from_secs(8)));
    // Recovers and stays healthy past the stable period: back to the base.
    tokio::time::advance(Duration::from_secs(8)).await;
    mock.reply(Reply::Status(200));
    call(&mut svc, HOST).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    mock.reply(Reply::Status(500));
    trip(&mut svc, 2).await;
    assert_eq!(next(&layer), Some(Duration::from_secs(1)));
    assert_eq!(layer.breakers().snapshots()[0].1.trips, 1);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_returns_its_permit_without_recording() {
    let mock = Mock::new();
    mock.reply(Reply::Status(503));
    let layer = layer(2);
    let mut svc = layer.layer(mock.clone());
    trip(&mut svc, 2).await;
    tokio::time::advance(Duration::from_secs(10)).await;

    mock.reply(Reply::Hang);
    let probe = ServiceExt::<http::Request<()>>::ready(&mut svc)
        .await
        .unwrap()
        .call(get(HOST));
    let snapshot = layer.breakers().snapshots()[0].1;
    assert_eq!(snapshot.state, State::HalfOpen);
    assert_eq!(snapshot.probes_in_flight, 1);
    // While the probe is out, others are rejected.
    assert!(is_open_rejection(&call(&mut svc, HOST).await));
    drop(probe);
    let snapshot = layer.breakers().snapshots()[0].1;
    assert_eq!(snapshot.state, State::HalfOpen, "nothing recorded");
    assert_eq!(snapshot.probes_in_flight, 0);
    // The permit is back: the next caller probes, and its success closes the breaker.
    mock.reply(Reply::Status(200));
    assert_eq!(call(&mut svc, HOST).await.unwrap().status(), 200);
    assert_eq!(state(&layer), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_probe_cancelled_below_returns_its_permit() {
    let mock = Mock::new();
    mock.reply(Reply::Status(503));
    let layer = layer(2);
    let mut svc = layer.layer(mock.clone());
    trip(&mut svc, 2).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    mock.reply(Reply::Fail(Kind::Cancelled));
    assert_eq!(
        call(&mut svc, HOST).await.unwrap_err().kind(),
        Kind::Cancelled
    );
    assert_eq!(state(&layer), State::HalfOpen);
    mock.reply(Reply::Status(200));
    call(&mut svc, HOST).await.unwrap();
    assert_eq!(state(&layer), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn several_probes_must_all_succeed() {
    let mock = Mock::new();
    mock.reply(Reply::Status(503));
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(2)
        .no_failure_rate()
        .half_open_probes(3)
        .open_for(Duration::from_secs(5))
        .open_jitter(0.0)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock.clone());
    trip(&mut svc, 2).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    mock.reply(Reply::Status(200));
    call(&mut svc, HOST).await.unwrap();
    call(&mut svc, HOST).await.unwrap();
    assert_eq!(state(&layer), State::HalfOpen);
    call(&mut svc, HOST).await.unwrap();
    assert_eq!(state(&layer), State::Closed);

    // And one failure among them re-opens.
    mock.reply(Reply::Status(503));
    trip(&mut svc, 2).await;
    tokio::time::advance(Duration::from_secs(20)).await;
    mock.reply(Reply::Status(200));
    call(&mut svc, HOST).await.unwrap();
    mock.reply(Reply::Status(503));
    call(&mut svc, HOST).await.unwrap();
    assert_eq!(state(&layer), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_call_admitted_before_the_trip_cannot_close_the_breaker() {
    let mock = Mock::new();
    let layer = layer(2);
    let mut svc = layer.layer(mock.clone());
    // A slow success is admitted while closed...
    mock.reply(Reply::Status(200));
    mock.delay(Duration::from_secs(15));
    let slow = tokio::spawn({
        let mut svc = svc.clone();
        async move { call(&mut svc, HOST).await }
    });
    tokio::task::yield_now().await;
    // ...then the breaker trips and the cool-down passes.
    mock.delay(Duration::ZERO);
    mock.reply(Reply::Status(503));
    trip(&mut svc, 2).await;
    assert_eq!(state(&layer), State::Open);
    tokio::time::advance(Duration::from_secs(10)).await;
    mock.reply(Reply::Hang);
    let probe = ServiceExt::<http::Request<()>>::ready(&mut svc)
        .await
        .unwrap()
        .call(get(HOST));
    assert_eq!(state(&layer), State::HalfOpen);
    // The old call completes now: it belongs to an older generation and is ignored.
    slow.await.unwrap().unwrap();
    assert_eq!(state(&layer), State::HalfOpen);
    drop(probe);
}
