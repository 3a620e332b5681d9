//! Against the chaos upstream on loopback: a flapping dependency, and two hosts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use backstop_breaker::{CircuitBreakerLayer, State};
use backstop_chaos::{ChaosServer, Fault, Script};
use backstop_classify::{ClassifyLayer, Error, Kind};
use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

const BOUND: Duration = Duration::from_secs(5);

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

async fn send<S, B>(svc: &mut S, url: &str) -> Result<u16, Error>
where
    S: Service<Request<Empty<Bytes>>, Response = http::Response<B>, Error = Error>,
{
    let req = Request::get(url).body(Empty::new()).unwrap();
    let fut = async { svc.ready().await?.call(req).await };
    let res = tokio::time::timeout(BOUND, fut)
        .await
        .expect("call exceeded its bound")?;
    Ok(res.status().as_u16())
}

#[tokio::test(start_paused = true)]
async fn a_dependency_flapping_down_for_10s_sees_only_probes_and_recovers_within_one_cool_down() {
    let chaos = ChaosServer::start().await.unwrap();
    let cool_down = Duration::from_secs(2);
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(5)
        .open_for(cool_down)
        .max_open_for(cool_down)
        .open_jitter(0.0)
        .build()
        .unwrap();
    let breakers = breaker.breakers();
    let mut svc = ServiceBuilder::new()
        .layer(breaker)
        .layer(ClassifyLayer::new())
        .service(client());
    let url = chaos.url("/svc");
    let start = Instant::now();
    chaos.script(
        "/svc",
        Script::down_for_from_now(Duration::from_secs(10), Fault::status(503)),
    );

    let tick = Duration::from_millis(100);
    let mut failures_before_open = 0;
    let mut opened_at = None;
    let mut delivered_while_down = 0;
    let mut delivered_total = 0;
    let mut closed_after_recovery = None;
    while start.elapsed() < Duration::from_secs(15) {
        let result = send(&mut svc, &url).await;
        let down = start.elapsed() < Duration::from_secs(10);
        match &result {
            Ok(503) if opened_at.is_none() => failures_before_open += 1,
            Err(err) => assert_eq!(err.kind(), Kind::BreakerOpen, "{err}"),
            _ => {}
        }
        if result.is_ok() {
            delivered_total += 1;
            if down {
                delivered_while_down += 1;
            }
        }
        let state = breakers.snapshots()[0].1.state;
        if opened_at.is_none() && state == State::Open {
            opened_at = Some(start.elapsed());
        }
        if closed_after_recovery.is_none() && !down && state == State::Closed {
            closed_after_recovery = Some(start.elapsed());
        }
        tokio::time::sleep(tick).await;
    }
    // Opens within the trip rule: exactly five failures reached the upstream first.
    assert_eq!(failures_before_open, 5);
    assert!(opened_at.is_some());
    // While open, only probes: at most one per cool-down of the down period.
    let probes = delivered_while_down - 5;
    let max_probes = (10 / cool_down.as_secs()) as usize;
    assert!(
        probes <= max_probes,
        "{probes} calls reached the down upstream while open (max {max_probes})"
    );
    assert!(
        probes >= 1,
        "the breaker must have probed during the outage"
    );
    // The upstream saw exactly the calls the breaker let through.
    assert_eq!(chaos.count_path("/svc"), delivered_total);
    // Closes within one cool-down (plus one tick of our caller) of the recovery.
    let closed = closed_after_recovery.expect("the breaker closed after recovery");
    assert!(
        closed <= Duration::from_secs(10) + cool_down + tick,
        "closed {closed:?} after start"
    );
    chaos.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn one_host_down_one_healthy_over_loopback() {
    let healthy = ChaosServer::start().await.unwrap();
    let sick = ChaosServer::start().await.unwrap();
    sick.down().await;
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(3)
        .build()
        .unwrap();
    let breakers = breaker.breakers();
    let mut svc = ServiceBuilder::new()
        .layer(breaker)
        .layer(ClassifyLayer::new())
        .service(client());
    let mut refused = 0;
    let mut rejected = 0;
    for _ in 0..50 {
        match send(&mut svc, &sick.url("/")).await {
            Err(err) if err.kind() == Kind::Refused => refused += 1,
            Err(err) if err.kind() == Kind::BreakerOpen => rejected += 1,
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(send(&mut svc, &healthy.url("/")).await.unwrap(), 200);
    }
    assert_eq!((refused, rejected), (3, 47));
    assert_eq!(healthy.count_path("/"), 50);
    let mut states: Vec<_> = breakers
        .snapshots()
        .into_iter()
        .map(|(key, s)| (key.port(), s.state))
        .collect();
    states.sort_by_key(|(port, _)| *port != Some(healthy.addr().port()));
    assert_eq!(
        states,
        [
            (Some(healthy.addr().port()), State::Closed),
            (Some(sick.addr().port()), State::Open)
        ]
    );
    healthy.shutdown().await;
    sick.shutdown().await;
}
