//! What the load shedder reports to `tracing`: a "request shed" event per shed request, a warning
//! at most once a second per layer. In a binary of its own (tracing caches callsite interest
//! process-wide); every test installs a capturing subscriber on its own thread.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod capture;

use std::convert::Infallible;
use std::time::Duration;

use backstop_server::ShedWith503Layer;
use capture::{Capture, Value};
use http::{Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt};
use tracing::Level;

fn get() -> Request<()> {
    Request::get("/slow").body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn shed_requests_are_events_a_warning_at_most_once_a_second() {
    let (capture, _guard) = Capture::install();
    let shed = ShedWith503Layer::new(2);
    let mut svc = shed.layer(tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    // Two admitted calls, held (their permits are taken at `call`).
    let held: Vec<_> = (0..2).map(|_| svc.call(get())).collect();
    assert_eq!(shed.in_flight(), 2);
    for _ in 0..3 {
        let res = svc.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let events = capture.events_with("request shed");
    let levels: Vec<Level> = events.iter().map(|e| e.level).collect();
    assert_eq!(levels, [Level::WARN, Level::DEBUG, Level::DEBUG]);
    for event in &events {
        assert_eq!(event.target, "backstop_server");
        assert_eq!(event.get("in_flight"), Some(&Value::U64(2)));
        assert_eq!(event.get("limit"), Some(&Value::U64(2)));
    }
    assert_eq!(events[0].get("suppressed"), Some(&Value::U64(0)));

    // A second later: a warning again, counting the two logged at debug level since.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let res = svc.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let events = capture.events_with("request shed");
    assert_eq!(events.len(), 4);
    assert_eq!(events[3].level, Level::WARN);
    assert_eq!(events[3].get("suppressed"), Some(&Value::U64(2)));

    // Admitted requests are not events.
    for call in held {
        assert_eq!(call.await.unwrap().status(), StatusCode::OK);
    }
    svc.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(capture.events_with("request shed").len(), 4);
}
