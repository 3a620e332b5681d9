//! The deadline layers' counter (feature `metrics`), read from `metrics_util`'s debugging
//! recorder.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod recorded;
mod support;

use std::convert::Infallible;
use std::time::Duration;

use backstop_classify::{Kind, Timer};
use backstop_deadline::metrics::{EXPIRED, SIDE, SIDE_CLIENT, SIDE_SERVER};
use backstop_deadline::{AttemptTimeoutLayer, DeadlineLayer, ServerDeadlineLayer};
use http::{Request, Response, StatusCode};
use recorded::Recorded;
use support::{Behaviour, Recorder, upstream};
use tower::{Layer, ServiceExt};

fn get() -> Request<()> {
    Request::get("http://127.0.0.1:9/").body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn expiries_are_counted_by_side() {
    let (recorded, _recorder) = Recorded::install();
    for _ in 0..2 {
        let svc = DeadlineLayer::new(Duration::from_millis(300))
            .layer(upstream(Recorder::default(), Behaviour::Stall));
        let err = svc.oneshot(get()).await.unwrap_err();
        assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline));
    }
    // An attempt's own timeout is not a deadline.
    let svc = AttemptTimeoutLayer::new(Duration::from_millis(100))
        .layer(upstream(Recorder::default(), Behaviour::Stall));
    assert!(svc.oneshot(get()).await.is_err());
    let metrics = recorded.take();
    assert_eq!(
        metrics.counter(EXPIRED, &[(SIDE, SIDE_CLIENT)]),
        Some(2),
        "{metrics:#?}"
    );
    assert_eq!(metrics.counter(EXPIRED, &[(SIDE, SIDE_SERVER)]), None);

    let layer = ServerDeadlineLayer::builder()
        .default_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let handler = tower::service_fn(|_req: Request<()>| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, Infallible>(Response::new(String::new()))
    });
    let res = layer.layer(handler).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    let metrics = recorded.take();
    assert_eq!(metrics.counter(EXPIRED, &[(SIDE, SIDE_SERVER)]), Some(1));
    assert_eq!(metrics.counter(EXPIRED, &[(SIDE, SIDE_CLIENT)]), Some(0));
}
