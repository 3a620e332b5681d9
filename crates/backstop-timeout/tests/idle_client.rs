//! ConnectionIdleTimeoutLayer and BodyIdleTimeoutLayer on the client side, against the chaos server on loopback (tokio clock
//! paused: the chaos server's stalls and drips follow it too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use backstop_chaos::{ChaosServer, Fault};
use backstop_classify::{Error, Kind, Phase, Retryable, Timer};
use backstop_timeout::{BodyIdleTimeoutLayer, ConnectionIdleTimeoutLayer, TcpConnector};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::{Instant, sleep};
use tower::{Layer, ServiceBuilder, ServiceExt};

const PERIOD: Duration = Duration::from_secs(1);
const SLACK: Duration = Duration::from_millis(50);

fn assert_within(elapsed: Duration, expected: Duration) {
    assert!(
        elapsed >= expected && elapsed <= expected + SLACK,
        "took {elapsed:?}, expected {expected:?}"
    );
}

fn idle() -> ConnectionIdleTimeoutLayer {
    ConnectionIdleTimeoutLayer::new(PERIOD)
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stalls_mid_stream_fails_with_idle_within_the_period() {
    let server = ChaosServer::start().await.unwrap();
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(idle().layer(TcpConnector::new()));
    let client = ServiceBuilder::new()
        .layer(BodyIdleTimeoutLayer::new(PERIOD))
        .service(client);
    let stall = Fault::StallBody {
        sent: 16,
        total: 1024,
        duration: None,
    };
    let req = http::Request::get(server.fault_url(&stall))
        .body(Empty::new())
        .unwrap();
    let mut body = std::pin::pin!(client.oneshot(req).await.unwrap().into_body());
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap().len(), 16);
    let stalled_at = Instant::now();
    let err = body.frame().await.unwrap().unwrap_err();
    assert_within(stalled_at.elapsed(), PERIOD);
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Idle));
    assert_eq!(err.phase(), Phase::ReadBody);
    assert_eq!(err.retryable(), Retryable::IfIdempotent);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_drip_of_one_byte_per_half_period_never_trips() {
    let server = ChaosServer::start().await.unwrap();
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(idle().layer(TcpConnector::new()));
    let client = ServiceBuilder::new()
        .layer(BodyIdleTimeoutLayer::new(PERIOD))
        .service(client);
    let drip = Fault::Drip {
        chunk: 1,
        interval: PERIOD / 2,
        total: 10,
    };
    let start = Instant::now();
    let req = http::Request::get(server.fault_url(&drip))
        .body(Empty::new())
        .unwrap();
    let res = client.oneshot(req).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 10);
    // The whole body took far longer than the period; no gap did.
    assert!(start.elapsed() >= PERIOD * 4, "took {:?}", start.elapsed());
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_answers_fails_the_connection_with_idle() {
    let server = ChaosServer::start().await.unwrap();
    // The connector layer alone: no body layer.
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(idle().layer(TcpConnector::new()));
    let stall = Fault::StallHeaders { duration: None };
    let start = Instant::now();
    let err = client
        .get(server.fault_url(&stall).parse().unwrap())
        .await
        .unwrap_err();
    assert_within(start.elapsed(), PERIOD);
    let err = Error::find_in(&err).expect("classified");
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Idle));
    assert_eq!(err.phase(), Phase::AwaitHeaders);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_pooled_http1_connection_resting_longer_than_the_period_is_reused() {
    let server = ChaosServer::start().await.unwrap();
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(idle().layer(TcpConnector::new()));
    let client = ServiceBuilder::new()
        .layer(BodyIdleTimeoutLayer::new(PERIOD))
        .service(client);
    for round in 0..3 {
        let req = http::Request::get(server.url("/"))
            .body(Empty::new())
            .unwrap();
        let res = client.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200, "round {round}");
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok\n");
        sleep(PERIOD * 5).await;
    }
    assert_eq!(
        server.connection_count(),
        1,
        "one connection served every round"
    );
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_pooled_http2_connection_with_keep_alive_pings_is_reused() {
    let server = ChaosServer::start().await.unwrap();
    let mut builder = Client::builder(TokioExecutor::new());
    builder.http2_only(true);
    idle().http2_keep_alive().apply_to_client(&mut builder);
    let client = builder.build::<_, Empty<Bytes>>(idle().layer(TcpConnector::new()));
    let client = ServiceBuilder::new()
        .layer(BodyIdleTimeoutLayer::new(PERIOD))
        .service(client);
    for round in 0..3 {
        let req = http::Request::get(server.url("/"))
            .body(Empty::new())
            .unwrap();
        let res = client.clone().oneshot(req).await.unwrap();
        assert_eq!(res.version(), http::Version::HTTP_2);
        assert_eq!(res.status(), 200, "round {round}");
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok\n");
        sleep(PERIOD * 5).await;
    }
    assert_eq!(
        server.connection_count(),
        1,
        "one connection served every round"
    );
    server.shutdown().await;
}
