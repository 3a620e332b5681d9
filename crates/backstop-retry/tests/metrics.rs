//! The retry layer's counters (feature `metrics`), read from `metrics_util`'s debugging recorder.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use backstop_classify::Error;
use backstop_retry::RetryLayer;
use backstop_retry::metrics::{
    ATTEMPTS, BUDGET_REJECTIONS, REASON, RETRIES, SERVER_ADDRESS, STOP, STOPPED,
};
use backstop_testing::recorded::Recorded;
use bytes::Bytes;
use http::{Request, Response};
use support::{Chunked, Reply, Upstream};
use tower::{Layer, ServiceExt, service_fn};

type Res = Result<Response<http_body_util::Full<Bytes>>, Error>;

async fn call(layer: RetryLayer, upstream: &Upstream, uri: &str) -> Res {
    let up = upstream.clone();
    let svc = layer.layer(service_fn(move |req| up.clone().handle(req)));
    svc.oneshot(Request::get(uri).body(Chunked::empty()).unwrap())
        .await
}

#[tokio::test(start_paused = true)]
async fn a_call_retried_twice_counts_three_attempts_and_two_retries_by_reason() {
    let (recorded, _recorder) = Recorded::install();
    let upstream = Upstream::new([Reply::status(503), Reply::status(503), Reply::status(200)]);
    let layer = RetryLayer::builder().seed(1).build().unwrap();
    let res = call(layer, &upstream, "http://127.0.0.1:8080/x")
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let host = (SERVER_ADDRESS, "127.0.0.1");
    let metrics = recorded.take();
    assert_eq!(metrics.counter(ATTEMPTS, &[host]), Some(3), "{metrics:#?}");
    assert_eq!(
        metrics.counter(RETRIES, &[host, (REASON, "http_status")]),
        Some(2)
    );
    assert_eq!(
        metrics.counter(STOPPED, &[host, (STOP, "attempts_exhausted")]),
        None
    );
    assert_eq!(metrics.counter(BUDGET_REJECTIONS, &[host]), None);

    // A second call to another host: its own series.
    let upstream = Upstream::new([Reply::status(404)]);
    let layer = RetryLayer::builder().seed(1).build().unwrap();
    call(layer, &upstream, "http://localhost:8080/x")
        .await
        .unwrap();
    let other = (SERVER_ADDRESS, "localhost");
    let metrics = recorded.take();
    assert_eq!(metrics.counter(ATTEMPTS, &[other]), Some(1));
    // Counters read since the previous snapshot: nothing more for the first host.
    assert_eq!(metrics.counter(ATTEMPTS, &[host]), Some(0));
    // A 404 is a failure (HttpPolicy) that is never retried.
    assert_eq!(
        metrics.counter(STOPPED, &[other, (STOP, "not_retryable")]),
        Some(1)
    );

    // Credentials in the authority: the same host's series (and never a label of their own).
    let upstream = Upstream::new([Reply::status(200)]);
    let layer = RetryLayer::builder().seed(1).build().unwrap();
    call(layer, &upstream, "http://user:secret@127.0.0.1:8080/x")
        .await
        .unwrap();
    let metrics = recorded.take();
    assert_eq!(metrics.counter(ATTEMPTS, &[host]), Some(1), "{metrics:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_budget_rejection_counts_and_so_does_the_stop() {
    let (recorded, _recorder) = Recorded::install();
    let budget = support::spent_budget();
    let layer = RetryLayer::builder().budget(budget).build().unwrap();
    let upstream = Upstream::new([Reply::status(503), Reply::status(503)]);
    for _ in 0..2 {
        let res = call(layer.clone(), &upstream, "http://127.0.0.1:8080/x")
            .await
            .unwrap();
        assert_eq!(res.status(), 503);
    }
    let host = (SERVER_ADDRESS, "127.0.0.1");
    let metrics = recorded.take();
    assert_eq!(metrics.counter(BUDGET_REJECTIONS, &[host]), Some(2));
    assert_eq!(
        metrics.counter(STOPPED, &[host, (STOP, "budget_exhausted")]),
        Some(2)
    );
    assert_eq!(metrics.counter(ATTEMPTS, &[host]), Some(2));
    assert_eq!(
        metrics.counter(RETRIES, &[host, (REASON, "http_status")]),
        None
    );
}
