//! The full `backstop::Client` stack against the chaos upstream on loopback: each fault, and the
//! method-dependent outcomes the documentation promises.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use backstop::{
    CallInfo, CallInfoExt, Client, FnResolver, Kind, Phase, ProtocolFailure, Retryable, Timer,
};
use backstop_chaos::{BlackHole, ChaosServer, ConnectionFault, Fault, Script, closed_port_addr};
use bytes::Bytes;
use common::{bounded, request};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

/// A client with short bounds so faults resolve in well under a second of real time.
fn client() -> backstop::ClientBuilder {
    Client::builder()
        .deadline(Duration::from_secs(5))
        .attempt_timeout(Duration::from_millis(800))
        .connect_timeout(Duration::from_millis(300))
        .idle_timeout(Duration::from_millis(400))
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .seed(7)
}

#[tokio::test]
async fn get_503_503_200_succeeds_on_the_third_attempt() {
    let chaos = ChaosServer::start().await.unwrap();
    chaos.script("/flaky", Script::fail_times(2, Fault::status(503)));
    let client = client().build().unwrap();
    let res = bounded(client.get(&chaos.url("/flaky"))).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let info = CallInfo::of(&res).cloned().unwrap();
    assert_eq!(info.attempts, 3);
    assert_eq!(info.delays.len(), 2);
    assert!(info.delays.iter().all(|d| *d <= Duration::from_millis(50)));
    assert_eq!(chaos.count("GET", "/flaky"), 3);
    assert_eq!(info.breaker, Some(backstop::breaker::State::Closed));
    assert!(info.time_to_headers > Duration::ZERO);
    let connect = info.connect.expect("the first call opened the connection");
    assert_eq!(connect.resolve, None, "an IP address is not resolved");
    assert_eq!(connect.tls, None, "plain http has no handshake");
    assert!(connect.tcp <= connect.total);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok\n");

    let first_try = bounded(client.get(&chaos.url("/"))).await.unwrap();
    let info = CallInfo::of(&first_try).cloned().unwrap();
    assert_eq!(
        (info.attempts, info.breaker),
        (1, Some(backstop::breaker::State::Closed))
    );
    assert_eq!(info.connect, None, "the pooled connection was reused");
}

#[tokio::test]
async fn post_reset_after_the_server_read_it_is_not_retried() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = client().build().unwrap();
    let err = bounded(client.send(request(
        Method::POST,
        &chaos.fault_url(&Fault::ResetAfterRead),
    )))
    .await
    .unwrap_err();
    assert_eq!(err.kind(), Kind::Reset, "{err:?}");
    assert_eq!(err.retryable(), Retryable::IfIdempotent);
    assert_eq!(chaos.count("POST", "/fault/reset-after-read"), 1);

    // The same fault on a PUT (idempotent) is retried until the attempts run out.
    let err = bounded(client.send(request(
        Method::PUT,
        &chaos.fault_url(&Fault::ResetAfterRead),
    )))
    .await
    .unwrap_err();
    assert_eq!(err.kind(), Kind::Reset, "{err:?}");
    assert_eq!(chaos.count("PUT", "/fault/reset-after-read"), 3);
}

#[tokio::test]
async fn post_503_is_returned_not_retried_but_with_an_idempotency_key_it_is() {
    let chaos = ChaosServer::start().await.unwrap();
    chaos.script("/charge", Script::fail_times(2, Fault::status(503)));
    let client = client().build().unwrap();
    let res = bounded(client.send(request(Method::POST, &chaos.url("/charge"))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(CallInfo::of(&res).map(|i| i.attempts), Some(1));

    let mut keyed = request(Method::POST, &chaos.url("/charge"));
    keyed
        .headers_mut()
        .insert("idempotency-key", "order-17".parse().unwrap());
    let res = bounded(client.send(keyed)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(chaos.count_key("order-17"), 2);
}

#[tokio::test]
async fn post_to_a_closed_port_is_retried_as_never_sent() {
    let closed = closed_port_addr().unwrap();
    let client = client().build().unwrap();
    let started = Instant::now();
    let err = bounded(client.post(&format!("http://{closed}/charge"), "{}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Refused);
    assert_eq!(err.phase(), Phase::Connect);
    assert_eq!(err.retryable(), Retryable::Safe);
    assert_eq!(
        err.attempts(),
        Some(3),
        "never sent, so retried until the attempts ran out"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_black_holed_connect_fails_at_the_connect_bound() {
    let hole = BlackHole::start().await.unwrap();
    let client = client().max_attempts(1).build().unwrap();
    let started = Instant::now();
    let err = bounded(client.get(&format!("http://{}/", hole.addr())))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Connect), "{err:?}");
    assert_eq!(err.phase(), Phase::Connect);
    assert_eq!(err.retryable(), Retryable::Safe);
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_server_stalling_before_headers_hits_the_idle_bound() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = client().max_attempts(1).build().unwrap();
    let err = bounded(client.get(&chaos.fault_url(&Fault::StallHeaders { duration: None })))
        .await
        .unwrap_err();
    // The connection's idle bound (400 ms) fires before the attempt bound (800 ms).
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Idle), "{err:?}");
    assert_eq!(err.retryable(), Retryable::IfIdempotent);
}

#[tokio::test]
async fn a_body_stalling_mid_stream_fails_with_idle_while_reading_the_body() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = client().build().unwrap();
    let res = bounded(client.get(&chaos.fault_url(&Fault::StallBody {
        sent: 16,
        total: 1024,
        duration: None,
    })))
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let err = bounded(res.into_body().collect()).await.unwrap_err();
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Idle), "{err:?}");
    assert_eq!(err.phase(), Phase::ReadBody);
}

#[tokio::test]
async fn the_deadline_stops_the_whole_call() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = Client::builder()
        .deadline(Duration::from_millis(600))
        .attempt_timeout(Duration::from_millis(250))
        .idle_timeout(Duration::from_secs(10))
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .max_attempts(10)
        .breaker(false)
        .build()
        .unwrap();
    let started = Instant::now();
    let err = bounded(client.get(&chaos.fault_url(&Fault::StallHeaders { duration: None })))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(err.kind(), Kind::TimedOut(Timer::Deadline | Timer::Attempt)),
        "{err:?}"
    );
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );
    // Ten attempts of 250 ms cannot fit in 600 ms.
    assert!(chaos.count("GET", "/fault/stall-headers") <= 3);
}

#[tokio::test]
async fn a_sick_host_opens_its_breaker_and_calls_fail_fast() {
    let chaos = ChaosServer::start().await.unwrap();
    chaos.set_fault_for("/", Fault::status(503));
    let client = client().max_attempts(1).build().unwrap();
    for _ in 0..5 {
        let res = bounded(client.get(&chaos.url("/"))).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let delivered = chaos.request_count();
    let err = bounded(client.get(&chaos.url("/"))).await.unwrap_err();
    assert_eq!(err.kind(), Kind::BreakerOpen);
    let (_, snapshot) = client.breakers().unwrap().snapshots().remove(0);
    assert_eq!(snapshot.state, backstop::breaker::State::Open);
    assert_eq!(err.phase(), Phase::Local);
    assert_eq!(
        chaos.request_count(),
        delivered,
        "an open breaker sends nothing"
    );
}

#[tokio::test]
async fn https_with_a_trusted_certificate_and_garbage_over_tls() {
    let chaos = ChaosServer::builder().tls(true).start().await.unwrap();
    let trusting = client()
        .tls(chaos.client_tls_config().unwrap().unwrap())
        .build()
        .unwrap();
    let res = bounded(trusting.get(&chaos.url("/"))).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let untrusting = client().max_attempts(1).build().unwrap();
    let err = bounded(untrusting.get(&chaos.url("/"))).await.unwrap_err();
    assert_eq!(
        err.kind(),
        Kind::Tls(backstop::classify::TlsFailure::Certificate),
        "{err:?}"
    );
    assert_eq!(err.phase(), Phase::Tls);
    assert_eq!(err.retryable(), Retryable::Never);
    assert_eq!(
        err.call_info().unwrap().connect,
        None,
        "no connection was made"
    );
}

/// The client's HTTPS connector tells the connect timeout that the time went to the handshake.
#[tokio::test]
async fn a_tls_handshake_that_never_completes_fails_at_the_connect_bound_in_tls() {
    let stall = ConnectionFault::TlsStall.start().await.unwrap();
    let client = client().max_attempts(1).build().unwrap();
    let err = bounded(client.get(&format!("https://{}/", stall.addr())))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Connect), "{err:?}");
    assert_eq!(err.phase(), Phase::Tls, "{err:?}");
    assert_eq!(err.retryable(), Retryable::Safe);
    assert_eq!(stall.connection_count(), 1, "TCP itself connected");
}

/// A call that failed over a connection it opened still reports how long opening it took (the
/// connection's facts come with hyper-util's error); the next call on a new connection, too.
#[tokio::test]
async fn a_call_failing_over_a_new_connection_reports_its_timings() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = client().max_attempts(1).build().unwrap();
    let err = bounded(client.get(&chaos.fault_url(&Fault::Garbage)))
        .await
        .unwrap_err();
    let connect = err.call_info().unwrap().connect.expect("a new connection");
    assert!(
        connect.tcp > Duration::ZERO && connect.tcp <= connect.total,
        "{connect:?}"
    );
    assert_eq!((connect.resolve, connect.tls), (None, None));
}

#[tokio::test]
async fn a_new_connection_reports_how_long_dns_tcp_and_tls_took() {
    let chaos = ChaosServer::builder().tls(true).start().await.unwrap();
    let addr = chaos.addr();
    // `localhost` answered by an injected resolver that takes its time: no real lookup.
    let resolver = FnResolver::new(move |_name| async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        Ok::<_, backstop::classify::BoxError>(vec![addr])
    });
    let client = client()
        .resolver(resolver)
        .tls(chaos.client_tls_config().unwrap().unwrap())
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/", addr.port());
    let res = bounded(client.get(&url)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let connect = CallInfo::of(&res)
        .unwrap()
        .connect
        .expect("a new connection");
    let resolve = connect.resolve.expect("a name was resolved");
    assert!(resolve >= Duration::from_millis(30), "{connect:?}");
    let tls = connect.tls.expect("an https connection");
    assert!(
        resolve + connect.tcp + tls <= connect.total,
        "the phases are parts of the whole: {connect:?}"
    );
    assert!(connect.total <= CallInfo::of(&res).unwrap().time_to_headers);

    // Each phase is timed from the moment it was reported, so on loopback — where the TCP
    // connect and the start of the handshake happen in one poll — neither is counted as zero nor
    // as the other's.
    for _ in 0..10 {
        let resolver = FnResolver::new(move |_name| async move {
            Ok::<_, backstop::classify::BoxError>(vec![addr])
        });
        let fresh = Client::builder()
            .resolver(resolver)
            .tls(chaos.client_tls_config().unwrap().unwrap())
            .build()
            .unwrap();
        let res = bounded(fresh.get(&url)).await.unwrap();
        let connect = CallInfo::of(&res).unwrap().connect.unwrap();
        assert!(connect.resolve.is_some(), "{connect:?}");
        assert!(connect.tcp > Duration::ZERO, "{connect:?}");
        assert!(
            connect.tls.is_some_and(|tls| tls > Duration::ZERO),
            "{connect:?}"
        );
    }
}

#[tokio::test]
async fn garbage_and_close_without_response() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = client().max_attempts(1).build().unwrap();
    let err = bounded(client.get(&chaos.fault_url(&Fault::Garbage)))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        Kind::Protocol(ProtocolFailure::Malformed),
        "{err:?}"
    );
    let err = bounded(client.get(&chaos.fault_url(&Fault::CloseAfterRead)))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        Kind::Protocol(ProtocolFailure::Incomplete),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unknown_name_is_dns_not_found_and_never_retried() {
    let resolver = FnResolver::new(|_name| async {
        Err::<Vec<SocketAddr>, _>(
            std::io::Error::other(
                "failed to lookup address information: Name or service not known",
            )
            .into(),
        )
    });
    let client = client().resolver(resolver).build().unwrap();
    let err = bounded(client.get("http://no-such-host.invalid/"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::DnsNotFound, "{err:?}");
    assert_eq!(err.phase(), Phase::Resolve);
    assert_eq!(err.retryable(), Retryable::Never);
}

#[tokio::test]
async fn invalid_settings_are_rejected_naming_the_field() {
    let err = Client::builder()
        .deadline(Duration::from_secs(1))
        .attempt_timeout(Duration::from_secs(2))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "attempt_timeout");
    let err = Client::builder()
        .backoff(Duration::from_secs(2), Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "retry.base_delay");
    let err = Client::builder().max_attempts(0).build().unwrap_err();
    assert_eq!(err.field(), "retry.max_attempts");
}

#[tokio::test]
async fn service_builder_ext_wraps_a_users_own_hyper_client_in_the_same_rules() {
    use backstop::ServiceBuilderExt;
    use backstop::retry::{ReplayBody, RetryInfo};
    use tower::{ServiceBuilder, ServiceExt};

    let chaos = ChaosServer::start().await.unwrap();
    chaos.script("/flaky", Script::fail_times(2, Fault::status(503)));
    let hyper_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<ReplayBody<Full<Bytes>>>();
    // The layers whose settings are checked are built first; the chain needs no `?`.
    let deadline = backstop::deadline::DeadlineLayer::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let attempt = backstop::deadline::AttemptTimeoutLayer::new(Duration::from_secs(1));
    let body_idle = backstop::timeout::BodyIdleTimeoutLayer::new(Duration::from_secs(1));
    let client = ServiceBuilder::new()
        .deadline(deadline)
        .retry_classified(
            backstop::retry::RetryLayer::builder()
                .base_delay(Duration::from_millis(5))
                .max_delay(Duration::from_millis(20))
                .build()
                .unwrap(),
        )
        .circuit_breaker(backstop::breaker::CircuitBreakerLayer::new())
        .classify()
        .attempt_timeout(attempt)
        .body_idle_timeout(body_idle)
        .service(hyper_client);
    let res = bounded(
        client
            .clone()
            .oneshot(request(Method::GET, &chaos.url("/flaky"))),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(RetryInfo::of(&res).attempts(), 3);
    let err = bounded(client.oneshot(request(
        Method::POST,
        &chaos.fault_url(&Fault::ResetAfterRead),
    )))
    .await
    .unwrap_err();
    assert_eq!(err.kind(), Kind::Reset);
    assert_eq!(chaos.count("POST", "/fault/reset-after-read"), 1);
    // An invalid setting is caught where the layer is built, before the chain.
    assert!(
        backstop::deadline::DeadlineLayer::builder()
            .timeout(Duration::ZERO)
            .build()
            .is_err()
    );
}
