//! Per-key breakers, the bounded map, manual control, visibility, readiness, configuration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use backstop_breaker::{
    CircuitBreakerLayer, Readiness, Reason, RequestHead, State, StateChange, Window,
};
use backstop_classify::Kind;
use common::*;
use tower::{Layer, Service};

#[tokio::test(start_paused = true)]
async fn one_dead_host_never_opens_another() {
    let mock = Mock::new();
    mock.reply_for("down.internal", Reply::Fail(Kind::Refused));
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(3)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock.clone());
    let mut healthy_ok = 0;
    for _ in 0..200 {
        let _ = call(&mut svc, "http://down.internal/x").await;
        let res = call(&mut svc, "http://up.internal/y").await.unwrap();
        assert_eq!(res.status(), 200);
        healthy_ok += 1;
    }
    assert_eq!(healthy_ok, 200);
    assert_eq!(mock.calls_to("down.internal"), 3);
    assert_eq!(mock.calls_to("up.internal"), 200);
    let breakers = layer.breakers();
    assert_eq!(breakers.len(), 2);
    let mut states: Vec<_> = breakers
        .snapshots()
        .into_iter()
        .map(|(key, s)| (key.to_string(), s.state))
        .collect();
    states.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        states,
        [
            ("http://down.internal:80".to_string(), State::Open),
            ("http://up.internal:80".to_string(), State::Closed)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_map_is_bounded_and_forgets_idle_breakers_first() {
    let mock = Mock::new();
    let layer = CircuitBreakerLayer::builder()
        .max_keys(8)
        .idle_after(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut svc = layer.layer(mock.clone());
    let breakers = layer.breakers();
    for i in 0..100 {
        call(&mut svc, &format!("http://h{i}.internal/"))
            .await
            .unwrap();
        assert!(breakers.len() <= 8, "{} keys after {i}", breakers.len());
    }
    assert_eq!(breakers.len(), 8);
    // Use is sampled by sweeps: a breaker goes once a sweep finds it unused for `idle_after`.
    tokio::time::advance(Duration::from_secs(120)).await;
    breakers.evict_idle();
    assert!(breakers.len() <= 8);
    tokio::time::advance(Duration::from_secs(61)).await;
    mock.reply_for("sick.internal", Reply::Status(503));
    for _ in 0..5 {
        let _ = call(&mut svc, "http://sick.internal/").await;
    }
    assert_eq!(breakers.len(), 1, "the idle ones were swept");
    for i in 0..6 {
        call(&mut svc, &format!("http://n{i}.internal/"))
            .await
            .unwrap();
        let _ = call(&mut svc, "http://sick.internal/").await;
    }
    let sick = breakers
        .snapshots()
        .into_iter()
        .find(|(key, _)| key.host() == "sick.internal");
    assert_eq!(sick.map(|(_, s)| s.state), Some(State::Open));
    // Idle eviction on demand.
    tokio::time::advance(Duration::from_secs(120)).await;
    breakers.evict_idle();
    tokio::time::advance(Duration::from_secs(60)).await;
    breakers.evict_idle();
    assert!(breakers.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_key_function_groups_requests() {
    let mock = Mock::new();
    mock.reply(Reply::Status(503));
    let layer = CircuitBreakerLayer::builder()
        .key_fn(|head: &RequestHead<'_>| {
            head.uri()
                .path()
                .split('/')
                .nth(1)
                .unwrap_or("")
                .to_string()
        })
        .consecutive_failures(2)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock.clone());
    let _ = call(&mut svc, "http://a.internal/orders/1").await;
    let _ = call(&mut svc, "http://b.internal/orders/2").await;
    assert_eq!(
        layer.breakers().state(&"orders".to_string()),
        Some(State::Open)
    );
    mock.reply(Reply::Status(200));
    assert!(call(&mut svc, "http://a.internal/users/1").await.is_ok());
    assert!(is_open_rejection(
        &call(&mut svc, "http://c.internal/orders/3").await
    ));
}

#[tokio::test(start_paused = true)]
async fn force_open_force_closed_metrics_only_and_automatic() {
    let mock = Mock::new();
    let layer = CircuitBreakerLayer::single()
        .consecutive_failures(2)
        .build()
        .unwrap();
    let breakers = layer.breakers();
    let mut svc = layer.layer(mock.clone());

    breakers.force_open(&());
    assert!(is_open_rejection(&call(&mut svc, "http://x/").await));
    assert_eq!(mock.calls(), 0);
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert!(is_open_rejection(&call(&mut svc, "http://x/").await));

    breakers.force_closed(&());
    mock.reply(Reply::Status(500));
    for _ in 0..10 {
        assert_eq!(call(&mut svc, "http://x/").await.unwrap().status(), 500);
    }
    assert_eq!(breakers.state(&()), Some(State::ForcedClosed));

    breakers.metrics_only(&());
    for _ in 0..10 {
        assert_eq!(call(&mut svc, "http://x/").await.unwrap().status(), 500);
    }
    let snapshot = breakers.snapshot(&()).unwrap();
    assert!(snapshot.metrics_only);
    assert_eq!(snapshot.state, State::Open, "what would be");
    assert_eq!(mock.calls(), 20);

    breakers.automatic(&());
    assert_eq!(breakers.state(&()), Some(State::Closed));
    for _ in 0..2 {
        let _ = call(&mut svc, "http://x/").await;
    }
    assert!(is_open_rejection(&call(&mut svc, "http://x/").await));
}

#[tokio::test(start_paused = true)]
async fn state_changes_are_reported_to_callbacks_and_subscribers() {
    let mock = Mock::new();
    mock.reply(Reply::Status(503));
    let seen: Arc<Mutex<Vec<StateChange<()>>>> = Arc::default();
    let layer = CircuitBreakerLayer::single()
        .consecutive_failures(2)
        .open_for(Duration::from_secs(5))
        .open_jitter(0.0)
        .on_state_change({
            let seen = seen.clone();
            move |change| seen.lock().unwrap().push(change.clone())
        })
        .build()
        .unwrap();
    let mut rx = layer.breakers().subscribe(&());
    assert_eq!(*rx.borrow_and_update(), State::Closed);
    let mut svc = layer.layer(mock.clone());
    for _ in 0..2 {
        let _ = call(&mut svc, "http://x/").await;
    }
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), State::Open);
    tokio::time::advance(Duration::from_secs(5)).await;
    mock.reply(Reply::Status(200));
    call(&mut svc, "http://x/").await.unwrap();
    assert_eq!(*rx.borrow_and_update(), State::Closed);
    let seen: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|c| (c.from, c.to, c.reason, c.open_for))
        .collect();
    assert_eq!(
        seen,
        [
            (
                State::Closed,
                State::Open,
                Reason::ConsecutiveFailures,
                Some(Duration::from_secs(5))
            ),
            (State::Open, State::HalfOpen, Reason::CoolDownElapsed, None),
            (
                State::HalfOpen,
                State::Closed,
                Reason::ProbesSucceeded,
                None
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn not_ready_mode_is_pending_while_open_and_reserves_the_probe() {
    let mock = Mock::new();
    mock.reply(Reply::Status(503));
    let layer = CircuitBreakerLayer::single()
        .consecutive_failures(2)
        .open_for(Duration::from_secs(5))
        .open_jitter(0.0)
        .readiness(Readiness::NotReady)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock.clone());
    for _ in 0..2 {
        let _ = call(&mut svc, "http://x/").await;
    }
    let mut other = svc.clone();
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(Service::<http::Request<()>>::poll_ready(&mut svc, &mut cx).is_pending());
    // Ready once the cool-down has passed, holding the only probe permit.
    let ready = bounded(std::future::poll_fn(|cx| {
        Service::<http::Request<()>>::poll_ready(&mut svc, cx)
    }))
    .await;
    assert!(ready.is_ok());
    assert_eq!(layer.breakers().snapshot(&()).unwrap().probes_in_flight, 1);
    assert!(Service::<http::Request<()>>::poll_ready(&mut other, &mut cx).is_pending());
    // The probe fails: still not ready; it succeeds later: ready again, closed.
    let _ = svc.call(get("http://x/")).await;
    assert_eq!(layer.breakers().state(&()), Some(State::Open));
    mock.reply(Reply::Status(200));
    let res = bounded(async {
        std::future::poll_fn(|cx| Service::<http::Request<()>>::poll_ready(&mut other, cx))
            .await
            .unwrap();
        other.call(get("http://x/")).await
    })
    .await;
    assert_eq!(res.unwrap().status(), 200);
    assert_eq!(layer.breakers().state(&()), Some(State::Closed));
    assert!(matches!(
        Service::<http::Request<()>>::poll_ready(&mut svc, &mut cx),
        Poll::Ready(Ok(()))
    ));
}

#[test]
fn invalid_settings_are_rejected_naming_the_field() {
    let field = |r: Result<CircuitBreakerLayer, backstop_breaker::ConfigError>| {
        r.map(|_| ()).unwrap_err().field().to_owned()
    };
    let b = CircuitBreakerLayer::builder;
    assert_eq!(
        field(b().consecutive_failures(0).build()),
        "consecutive_failures"
    );
    assert_eq!(field(b().failure_rate(0.0).build()), "failure_rate");
    assert_eq!(field(b().failure_rate(f64::NAN).build()), "failure_rate");
    assert_eq!(field(b().failure_rate(1.5).build()), "failure_rate");
    assert_eq!(
        field(b().slow_calls(Duration::ZERO, 0.5).build()),
        "slow_calls"
    );
    assert_eq!(field(b().window(Window::count(0)).build()), "window");
    assert_eq!(
        field(b().window(Window::count(10)).minimum_calls(11).build()),
        "minimum_calls"
    );
    assert_eq!(
        field(
            b().window(Window::Time {
                span: Duration::from_millis(5),
                buckets: 10
            })
            .build()
        ),
        "window"
    );
    assert_eq!(field(b().half_open_probes(0).build()), "half_open_probes");
    assert_eq!(field(b().open_for(Duration::ZERO).build()), "open_for");
    assert_eq!(
        field(
            b().open_for(Duration::from_secs(10))
                .max_open_for(Duration::from_secs(1))
                .build()
        ),
        "max_open_for"
    );
    assert_eq!(field(b().open_multiplier(0.5).build()), "open_multiplier");
    assert_eq!(field(b().open_jitter(1.0).build()), "open_jitter");
    assert_eq!(field(b().max_keys(0).build()), "max_keys");
    assert_eq!(
        field(b().no_consecutive_failures().no_failure_rate().build()),
        "consecutive_failures"
    );
    let err = b().failure_rate(2.0).build().map(|_| ()).unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid setting `failure_rate`: must be in (0, 1]"),
        "{err}"
    );
    assert!(b().build().is_ok());
}

/// The exported bounds are the ones `build` enforces, ends included: code validating its own
/// configuration with them (the facade's `Policy`) accepts exactly what the layer accepts.
#[test]
fn the_exported_bounds_are_the_ones_build_enforces() {
    use backstop_breaker::{
        COUNT_WINDOW_RANGE, HALF_OPEN_PROBES_RANGE, MAX_DURATION, MIN_BUCKET_WIDTH,
        MIN_OPEN_MULTIPLIER, OPEN_JITTER_RANGE, TIME_WINDOW_BUCKETS_RANGE, is_valid_rate,
    };
    let field = |r: Result<CircuitBreakerLayer, backstop_breaker::ConfigError>| {
        r.err().map(|e| e.field().to_owned())
    };
    let b = CircuitBreakerLayer::builder;
    let probes = |n| field(b().half_open_probes(n).build());
    assert_eq!(probes(*HALF_OPEN_PROBES_RANGE.start()), None);
    assert_eq!(probes(*HALF_OPEN_PROBES_RANGE.end()), None);
    assert_eq!(
        probes(HALF_OPEN_PROBES_RANGE.start() - 1).as_deref(),
        Some("half_open_probes")
    );
    assert_eq!(
        probes(HALF_OPEN_PROBES_RANGE.end() + 1).as_deref(),
        Some("half_open_probes")
    );

    let count = |n| field(b().window(Window::count(n)).minimum_calls(1).build());
    assert_eq!(count(*COUNT_WINDOW_RANGE.start()), None);
    assert_eq!(count(*COUNT_WINDOW_RANGE.end()), None);
    assert_eq!(
        count(COUNT_WINDOW_RANGE.end() + 1).as_deref(),
        Some("window")
    );

    let time = |span, buckets| field(b().window(Window::Time { span, buckets }).build());
    let span = Duration::from_secs(60);
    assert_eq!(time(span, *TIME_WINDOW_BUCKETS_RANGE.start()), None);
    assert_eq!(time(span, *TIME_WINDOW_BUCKETS_RANGE.end()), None);
    assert_eq!(time(span, 0).as_deref(), Some("window"));
    assert_eq!(
        time(span, TIME_WINDOW_BUCKETS_RANGE.end() + 1).as_deref(),
        Some("window")
    );
    assert_eq!(time(MIN_BUCKET_WIDTH * 10, 10), None);
    assert_eq!(
        time(MIN_BUCKET_WIDTH * 10 - Duration::from_nanos(1), 10).as_deref(),
        Some("window")
    );
    assert_eq!(
        time(MAX_DURATION + Duration::from_secs(1), 10).as_deref(),
        Some("window")
    );

    let open_for = |d| field(b().open_for(d).max_open_for(MAX_DURATION).build());
    assert_eq!(open_for(MAX_DURATION), None);
    assert_eq!(
        open_for(MAX_DURATION + Duration::from_secs(1)).as_deref(),
        Some("open_for")
    );
    let idle = |d| field(b().idle_after(d).build());
    assert_eq!(idle(MAX_DURATION), None);
    assert_eq!(
        idle(MAX_DURATION + Duration::from_secs(1)).as_deref(),
        Some("idle_after")
    );

    let jitter = |j| field(b().open_jitter(j).build());
    assert_eq!(jitter(OPEN_JITTER_RANGE.start), None);
    assert_eq!(jitter(OPEN_JITTER_RANGE.end - 0.001), None);
    assert_eq!(
        jitter(OPEN_JITTER_RANGE.end).as_deref(),
        Some("open_jitter")
    );
    let multiplier = |m| field(b().open_multiplier(m).build());
    assert_eq!(multiplier(MIN_OPEN_MULTIPLIER), None);
    assert_eq!(
        multiplier(MIN_OPEN_MULTIPLIER - 0.001).as_deref(),
        Some("open_multiplier")
    );

    for rate in [0.001, 0.5, 1.0] {
        assert!(is_valid_rate(rate), "{rate}");
        assert_eq!(field(b().failure_rate(rate).build()), None, "{rate}");
    }
    for rate in [0.0, -0.5, 1.001, f64::NAN, f64::INFINITY] {
        assert!(!is_valid_rate(rate), "{rate}");
        assert_eq!(
            field(b().failure_rate(rate).build()).as_deref(),
            Some("failure_rate"),
            "{rate}"
        );
    }
}
