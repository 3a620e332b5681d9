//! What the deadline layers report to `tracing`: one "deadline expired" event where a deadline
//! fires, client side or server side. In a binary of its own (tracing caches callsite interest
//! process-wide); every test installs a capturing subscriber on its own thread.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod capture;
mod support;

use std::convert::Infallible;
use std::time::Duration;

use backstop_classify::{Kind, Timer};
use backstop_deadline::{AttemptTimeoutLayer, DeadlineLayer, InnerWaits, ServerDeadlineLayer};
use capture::{Capture, EventRecord, Value};
use http::{Request, Response, StatusCode};
use support::{Behaviour, Recorder, upstream};
use tower::{Layer, ServiceExt};
use tracing::Level;

const MS: fn(u64) -> Duration = Duration::from_millis;

fn get() -> Request<()> {
    Request::get("http://127.0.0.1:9/").body(()).unwrap()
}

fn expired(capture: &Capture) -> Vec<EventRecord> {
    capture.events_with("deadline expired")
}

#[tokio::test(start_paused = true)]
async fn the_client_deadline_firing_is_one_event() {
    let (capture, _guard) = Capture::install();
    let svc = DeadlineLayer::new(MS(300)).layer(upstream(Recorder::default(), Behaviour::Stall));
    let err = svc.oneshot(get()).await.unwrap_err();
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline));
    let events = expired(&capture);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].level, Level::INFO);
    assert_eq!(events[0].target, "backstop_deadline");
    assert_eq!(events[0].get("side"), Some(&Value::Str("client".into())));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_timer_standing_in_for_the_deadline_reports_it_once() {
    let (capture, _guard) = Capture::install();
    let svc = DeadlineLayer::builder()
        .timeout(MS(300))
        .inner_waits(InnerWaits::BoundedByAttemptTimeout)
        .build()
        .unwrap()
        .layer(
            AttemptTimeoutLayer::new(Duration::from_secs(5))
                .layer(upstream(Recorder::default(), Behaviour::Stall)),
        );
    let err = svc.oneshot(get()).await.unwrap_err();
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline));
    let events = expired(&capture);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].get("side"), Some(&Value::Str("client".into())));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_timeout_of_its_own_is_no_deadline_expiry() {
    let (capture, _guard) = Capture::install();
    let svc =
        AttemptTimeoutLayer::new(MS(100)).layer(upstream(Recorder::default(), Behaviour::Stall));
    let err = svc.oneshot(get()).await.unwrap_err();
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Attempt));
    assert!(expired(&capture).is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_server_deadline_firing_is_one_event_with_its_budget() {
    let (capture, _guard) = Capture::install();
    let layer = ServerDeadlineLayer::builder()
        .default_timeout(MS(200))
        .build()
        .unwrap();
    let handler = tower::service_fn(|_req: Request<()>| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, Infallible>(Response::new(String::new()))
    });
    let res = layer.layer(handler).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    let events = expired(&capture);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].level, Level::INFO);
    assert_eq!(events[0].target, "backstop_deadline");
    assert_eq!(events[0].get("side"), Some(&Value::Str("server".into())));
    assert_eq!(events[0].get("budget_ms"), Some(&Value::U64(200)));

    // The caller's own budget, when it is the one that runs out.
    let req = Request::get("/")
        .header("request-timeout-ms", "50")
        .body(())
        .unwrap();
    let handler = tower::service_fn(|_req: Request<()>| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, Infallible>(Response::new(String::new()))
    });
    let res = layer.layer(handler).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    let events = expired(&capture);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].get("budget_ms"), Some(&Value::U64(50)));
}
