//! The load shedder's counter (feature `metrics`), read from `metrics_util`'s debugging recorder.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod recorded;

use std::convert::Infallible;

use backstop_server::ShedWith503Layer;
use backstop_server::metrics::SHED;
use http::{Request, Response, StatusCode};
use recorded::Recorded;
use tower::{Layer, Service, ServiceExt};

fn get() -> Request<()> {
    Request::get("/").body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn shed_requests_are_counted() {
    let (recorded, _recorder) = Recorded::install();
    let shed = ShedWith503Layer::new(1);
    let mut svc = shed.layer(tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let held = svc.call(get());
    for _ in 0..3 {
        let res = svc.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(held.await.unwrap().status(), StatusCode::OK);
    // Admitted: not counted.
    svc.ready().await.unwrap().call(get()).await.unwrap();
    let metrics = recorded.take();
    assert_eq!(metrics.counter(SHED, &[]), Some(3), "{metrics:#?}");
}
