//! The rate rules: an exact sliding window, what counts as a failure, slow calls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use backstop_breaker::{CircuitBreakerLayer, State, Window};
use backstop_classify::{ClassifyLayer, HttpPolicy, Kind, Retryable};
use common::*;
use http::StatusCode;
use tower::{Layer, ServiceBuilder};

const HOST: &str = "http://pay.internal/charge";

fn rate_only(window: Window, minimum: u32) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .no_consecutive_failures()
        .failure_rate(0.5)
        .window(window)
        .minimum_calls(minimum)
        .open_jitter(0.0)
        .build()
        .unwrap()
}

fn state(layer: &CircuitBreakerLayer) -> State {
    layer.breakers().snapshots()[0].1.state
}

async fn run(
    svc: &mut backstop_breaker::CircuitBreaker<Mock>,
    mock: &Mock,
    reply: Reply,
    n: usize,
) {
    mock.reply(reply);
    for _ in 0..n {
        let _ = call(svc, HOST).await;
    }
}

#[tokio::test(start_paused = true)]
async fn after_1000_successes_failures_filling_half_the_window_trip() {
    // The peer bug: a window that never slides would need 1,000 failures to reach 50 %.
    let mock = Mock::new();
    let layer = rate_only(Window::count(100), 100);
    let mut svc = layer.layer(mock.clone());
    run(&mut svc, &mock, Reply::Status(200), 1000).await;
    run(&mut svc, &mock, Reply::Status(503), 49).await;
    let snapshot = layer.breakers().snapshots()[0].1;
    assert_eq!(snapshot.state, State::Closed);
    assert_eq!((snapshot.calls, snapshot.failures), (100, 49));
    run(&mut svc, &mock, Reply::Status(503), 1).await;
    assert_eq!(state(&layer), State::Open);
    assert_eq!(mock.calls(), 1050);
}

#[tokio::test(start_paused = true)]
async fn failures_older_than_the_count_window_no_longer_count() {
    let mock = Mock::new();
    let layer = rate_only(Window::count(100), 100);
    let mut svc = layer.layer(mock.clone());
    run(&mut svc, &mock, Reply::Status(503), 49).await;
    run(&mut svc, &mock, Reply::Status(200), 100).await;
    let snapshot = layer.breakers().snapshots()[0].1;
    assert_eq!((snapshot.calls, snapshot.failures), (100, 0));
    // 49 fresh failures: 49 %, still closed — the old 49 have left the window.
    run(&mut svc, &mock, Reply::Status(503), 49).await;
    assert_eq!(state(&layer), State::Closed);
    assert_eq!(layer.breakers().snapshots()[0].1.failures, 49);
}

#[tokio::test(start_paused = true)]
async fn failures_older_than_the_time_window_no_longer_count() {
    let mock = Mock::new();
    let layer = rate_only(
        Window::Time {
            span: Duration::from_secs(10),
            buckets: 10,
        },
        10,
    );
    let mut svc = layer.layer(mock.clone());
    run(&mut svc, &mock, Reply::Status(503), 9).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    // Ten seconds on, the nine failures have left the window: 1 failure in 10 calls.
    run(&mut svc, &mock, Reply::Status(200), 9).await;
    run(&mut svc, &mock, Reply::Status(503), 1).await;
    let snapshot = layer.breakers().snapshots()[0].1;
    assert_eq!((snapshot.calls, snapshot.failures), (10, 1));
    assert_eq!(snapshot.state, State::Closed);
    // Within the window they do count: 5 of 10.
    let layer = rate_only(
        Window::Time {
            span: Duration::from_secs(10),
            buckets: 10,
        },
        10,
    );
    let mut svc = layer.layer(mock.clone());
    run(&mut svc, &mock, Reply::Status(503), 4).await;
    tokio::time::advance(Duration::from_secs(9)).await;
    run(&mut svc, &mock, Reply::Status(200), 5).await;
    assert_eq!(state(&layer), State::Closed);
    run(&mut svc, &mock, Reply::Status(503), 1).await;
    assert_eq!(state(&layer), State::Open);
}

#[tokio::test(start_paused = true)]
async fn too_many_requests_counts_toward_the_rate_but_not_the_run() {
    let mock = Mock::new();
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(3)
        .failure_rate(0.9)
        .minimum_calls(10)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock.clone());
    run(&mut svc, &mock, Reply::Status(429), 5).await;
    let snapshot = layer.breakers().snapshots()[0].1;
    assert_eq!(snapshot.state, State::Closed);
    assert_eq!(snapshot.consecutive_failures, 0);
    assert_eq!(snapshot.failures, 5);
    run(&mut svc, &mock, Reply::Status(429), 5).await;
    assert_eq!(state(&layer), State::Open, "10 of 10 throttled: rate trips");

    // Configurable: 429 may count toward the run as well.
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(3)
        .no_failure_rate()
        .throttled_counts_consecutive(true)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock.clone());
    run(&mut svc, &mock, Reply::Status(429), 3).await;
    assert_eq!(state(&layer), State::Open);
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_cancellations_are_not_failures() {
    let mock = Mock::new();
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(3)
        .failure_rate(0.5)
        .minimum_calls(3)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock.clone());
    run(&mut svc, &mock, Reply::Status(404), 10).await;
    run(&mut svc, &mock, Reply::Status(400), 10).await;
    let snapshot = layer.breakers().snapshots()[0].1;
    assert_eq!((snapshot.calls, snapshot.failures), (20, 0));
    run(&mut svc, &mock, Reply::Fail(Kind::Cancelled), 10).await;
    let snapshot = layer.breakers().snapshots()[0].1;
    assert_eq!(
        (snapshot.calls, snapshot.failures),
        (20, 0),
        "cancelled: neither"
    );
    // Timeouts and connect errors are failures.
    run(&mut svc, &mock, Reply::Fail(Kind::Refused), 2).await;
    run(
        &mut svc,
        &mock,
        Reply::Fail(Kind::TimedOut(backstop_classify::Timer::Attempt)),
        1,
    )
    .await;
    assert_eq!(state(&layer), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_counts_as_neither() {
    let mock = Mock::new();
    let layer = rate_only(Window::count(10), 1);
    let mut svc = layer.layer(mock.clone());
    mock.reply(Reply::Hang);
    for _ in 0..5 {
        let fut = tower::Service::call(
            tower::ServiceExt::<http::Request<()>>::ready(&mut svc)
                .await
                .unwrap(),
            get(HOST),
        );
        drop(fut);
    }
    assert_eq!(layer.breakers().snapshots()[0].1.calls, 0);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_the_slow_call_rule() {
    let mock = Mock::new();
    let layer = CircuitBreakerLayer::builder()
        .no_consecutive_failures()
        .no_failure_rate()
        .slow_calls(Duration::from_secs(1), 0.5)
        .window(Window::count(10))
        .minimum_calls(10)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock.clone());
    run(&mut svc, &mock, Reply::Status(200), 5).await;
    mock.delay(Duration::from_secs(2));
    run(&mut svc, &mock, Reply::Status(200), 4).await;
    let snapshot = layer.breakers().snapshots()[0].1;
    assert_eq!((snapshot.calls, snapshot.slow_calls), (9, 4));
    assert_eq!(snapshot.state, State::Closed);
    run(&mut svc, &mock, Reply::Status(200), 1).await;
    assert_eq!(state(&layer), State::Open);
}

#[tokio::test(start_paused = true)]
async fn the_outcome_of_classify_layer_is_honoured() {
    // The ClassifyLayer inside says 404 is a failure of this dependency (a custom judge maps it).
    let mock = Mock::new();
    mock.reply(Reply::Status(404));
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(2)
        .no_failure_rate()
        .judge(|outcome| match outcome.failure().map(|f| f.kind()) {
            Some(Kind::Status(StatusCode::NOT_FOUND)) => backstop_breaker::Verdict::Failure,
            _ => backstop_breaker::default_verdict(outcome),
        })
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(breaker.clone())
        .layer(ClassifyLayer::with_policy(
            HttpPolicy::new().success(StatusCode::SERVICE_UNAVAILABLE),
        ))
        .service(mock.clone());
    // 503 is a success for this policy, so it never trips...
    mock.reply(Reply::Status(503));
    for _ in 0..5 {
        let res = call(&mut svc, HOST).await.unwrap();
        assert_eq!(res.status(), 503);
    }
    assert_eq!(breaker.breakers().snapshots()[0].1.state, State::Closed);
    // ...while 404 does, through the custom judge.
    mock.reply(Reply::Status(404));
    for _ in 0..2 {
        let _ = call(&mut svc, HOST).await;
    }
    assert_eq!(breaker.breakers().snapshots()[0].1.state, State::Open);
    let err = call(&mut svc, HOST).await.unwrap_err();
    assert_eq!(err.retryable(), Retryable::Safe);
}

#[tokio::test(start_paused = true)]
async fn a_judge_is_asked_about_successes_too() {
    // The judge's verdict on a success is asked once, when the layer is built, and used for
    // every success: one the status shows (no ClassifyLayer) and one a ClassifyLayer stored.
    let strict = || {
        CircuitBreakerLayer::builder()
            .consecutive_failures(3)
            .no_failure_rate()
            .judge(|_| backstop_breaker::Verdict::Failure)
            .build()
            .unwrap()
    };
    let mock = Mock::new();
    mock.reply(Reply::Status(200));
    let bare = strict();
    let mut svc = bare.layer(mock.clone());
    for _ in 0..3 {
        assert_eq!(call(&mut svc, HOST).await.unwrap().status(), 200);
    }
    assert_eq!(state(&bare), State::Open);
    let classified = strict();
    let mut svc = ServiceBuilder::new()
        .layer(classified.clone())
        .layer(ClassifyLayer::new())
        .service(mock.clone());
    for _ in 0..3 {
        assert_eq!(call(&mut svc, HOST).await.unwrap().status(), 200);
    }
    assert_eq!(state(&classified), State::Open);
}
