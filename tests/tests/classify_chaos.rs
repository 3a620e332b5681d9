//! Every chaos fault, driven over real loopback sockets with a plain hyper-util client, classified
//! on the client side by `backstop-classify`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use backstop_chaos::{ChaosServer, ConnectionFault, Fault, RetryAfter, closed_port_addr};
use backstop_classify::{
    ClassifyLayer, Error, Kind, Outcome, Phase, ProtocolFailure, Retryable, Timer, TlsFailure,
};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt};

type Body = Full<Bytes>;

fn http_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

fn request(method: Method, url: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap()
}

/// Sends through `ClassifyLayer` and returns the classified error; the whole exchange is bounded.
async fn classified_err<C>(client: C, req: Request<Body>) -> Error
where
    C: tower::Service<Request<Body>, Response = http::Response<hyper::body::Incoming>>
        + Send
        + 'static,
    C::Error: Into<backstop_classify::BoxError>,
    C::Future: Send,
{
    let svc = ClassifyLayer::new().layer(client);
    let outcome = tokio::time::timeout(Duration::from_secs(10), svc.oneshot(req))
        .await
        .expect("the exchange must end on its own");
    match outcome {
        Ok(res) => panic!("expected an error, got {}", res.status()),
        Err(err) => err,
    }
}

#[tokio::test]
async fn refused_is_safe_in_phase_connect() {
    let addr = closed_port_addr().unwrap();
    let err = classified_err(
        http_client(),
        request(Method::POST, &format!("http://{addr}/")),
    )
    .await;
    assert_eq!(err.kind(), Kind::Refused, "{err:?}");
    assert_eq!(err.phase(), Phase::Connect);
    assert_eq!(err.retryable(), Retryable::Safe);
}

#[tokio::test]
async fn accept_then_reset_is_a_reset() {
    let listener = ConnectionFault::AcceptThenReset.start().await.unwrap();
    let err = classified_err(
        http_client(),
        request(Method::GET, &format!("http://{}/", listener.addr())),
    )
    .await;
    // The RST can land before hyper starts writing (hyper hands the request back unwritten: safe
    // to resend, whatever the method) or while it writes or waits (the peer may have read it).
    // Either way the kernel reports ECONNRESET (or EPIPE when our write follows the RST).
    assert!(
        matches!(err.kind(), Kind::Reset | Kind::BrokenPipe),
        "{err:?}"
    );
    let never_started = format!("{err:?}").contains("Canceled");
    let expected = if never_started {
        Retryable::Safe
    } else {
        Retryable::IfIdempotent
    };
    assert_eq!(err.retryable(), expected, "{err:?}");
}

#[tokio::test]
async fn reset_after_read_is_if_idempotent_and_delivered_once() {
    let chaos = ChaosServer::start().await.unwrap();
    for client in [http_client(), h2_client()] {
        chaos.reset_counts();
        let url = chaos.fault_url(&Fault::ResetAfterRead);
        let err = classified_err(client, request(Method::POST, &url)).await;
        assert!(
            matches!(err.kind(), Kind::Reset | Kind::Protocol(_)),
            "{err:?}"
        );
        assert_eq!(err.retryable(), Retryable::IfIdempotent, "{err:?}");
        assert_eq!(chaos.count("POST", "/fault/reset-after-read"), 1);
    }
}

#[tokio::test]
async fn close_after_read_is_an_incomplete_message() {
    let chaos = ChaosServer::start().await.unwrap();
    let err = classified_err(
        http_client(),
        request(Method::GET, &chaos.fault_url(&Fault::CloseAfterRead)),
    )
    .await;
    assert_eq!(
        err.kind(),
        Kind::Protocol(ProtocolFailure::Incomplete),
        "{err:?}"
    );
    assert_eq!(err.phase(), Phase::AwaitHeaders);
    assert_eq!(err.retryable(), Retryable::IfIdempotent);
}

#[tokio::test]
async fn garbage_is_malformed() {
    let chaos = ChaosServer::start().await.unwrap();
    let err = classified_err(
        http_client(),
        request(Method::GET, &chaos.fault_url(&Fault::Garbage)),
    )
    .await;
    assert_eq!(
        err.kind(),
        Kind::Protocol(ProtocolFailure::Malformed),
        "{err:?}"
    );
}

#[tokio::test]
async fn stalled_headers_end_with_our_timer() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = ClassifyLayer::new().layer(http_client());
    let req = request(
        Method::GET,
        &chaos.fault_url(&Fault::StallHeaders { duration: None }),
    );
    let elapsed = tokio::time::timeout(Duration::from_millis(300), client.oneshot(req))
        .await
        .unwrap_err();
    let err = Error::from(elapsed);
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Attempt));
    assert_eq!(err.retryable(), Retryable::IfIdempotent);
}

#[tokio::test]
async fn stalled_body_arrives_as_a_success_head_then_stalls() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = ClassifyLayer::new().layer(http_client());
    let req = request(
        Method::GET,
        &chaos.fault_url(&Fault::StallBody {
            sent: 16,
            total: 1024,
            duration: None,
        }),
    );
    let res = client.oneshot(req).await.unwrap();
    assert_eq!(res.extensions().get::<Outcome>(), Some(&Outcome::Success));
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.data_ref().map(|d| d.len()), Some(16));
    let stalled = tokio::time::timeout(Duration::from_millis(300), body.frame()).await;
    assert!(stalled.is_err(), "the rest of the body must not arrive");
}

#[tokio::test]
async fn drip_delivers_every_byte_slowly() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = ClassifyLayer::new().layer(http_client());
    let req = request(
        Method::GET,
        &chaos.fault_url(&Fault::Drip {
            chunk: 1,
            interval: Duration::from_millis(20),
            total: 5,
        }),
    );
    let res = client.oneshot(req).await.unwrap();
    assert_eq!(res.extensions().get::<Outcome>(), Some(&Outcome::Success));
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 5);
}

#[tokio::test]
async fn statuses_and_retry_after_forms() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = ClassifyLayer::new().layer(http_client());
    let cases = [
        (Fault::status(404), Retryable::Never, None),
        (Fault::status(500), Retryable::IfIdempotent, None),
        (Fault::status(429), Retryable::IfIdempotent, None),
        (
            Fault::status_retry_after(503, RetryAfter::Seconds(2)),
            Retryable::IfIdempotent,
            Some(Duration::from_secs(2)),
        ),
        (
            Fault::status_retry_after(503, RetryAfter::Raw("tomorrow-ish".into())),
            Retryable::IfIdempotent,
            None,
        ),
        (
            Fault::status_retry_after(503, RetryAfter::Seconds(99_999_999)),
            Retryable::IfIdempotent,
            Some(backstop_classify::DEFAULT_RETRY_AFTER_CAP),
        ),
    ];
    for (fault, retryable, retry_after) in cases {
        let res = client
            .clone()
            .oneshot(request(Method::GET, &chaos.fault_url(&fault)))
            .await
            .unwrap();
        let failure = res
            .extensions()
            .get::<Outcome>()
            .and_then(|o| o.failure().copied())
            .unwrap_or_else(|| panic!("{fault:?} must be a failure"));
        assert_eq!(failure.kind(), Kind::Status(res.status()));
        assert_eq!(failure.retryable(), retryable, "{fault:?}");
        assert_eq!(failure.retry_after(), retry_after, "{fault:?}");
    }

    // An HTTP-date two seconds ahead: the wait is about two seconds (the date has one-second
    // resolution, so it may read as one).
    let res = client
        .oneshot(request(
            Method::GET,
            &chaos.fault_url(&Fault::status_retry_after(503, RetryAfter::DateIn(2))),
        ))
        .await
        .unwrap();
    let wait = res
        .extensions()
        .get::<Outcome>()
        .and_then(|o| o.failure().and_then(|f| f.retry_after()))
        .expect("an HTTP-date Retry-After is honoured");
    assert!(
        wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2),
        "{wait:?}"
    );

    let ok = ClassifyLayer::new()
        .layer(http_client())
        .oneshot(request(Method::GET, &chaos.url("/")))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.extensions().get::<Outcome>(), Some(&Outcome::Success));
}

#[tokio::test]
async fn untrusted_self_signed_certificate_is_a_certificate_failure() {
    let chaos = ChaosServer::builder().tls(true).start().await.unwrap();
    // Trusts nothing: the chaos CA is unknown to it.
    let config = trusting_nothing();
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build(https);
    let err = classified_err(client, request(Method::GET, &chaos.url("/"))).await;
    assert_eq!(err.kind(), Kind::Tls(TlsFailure::Certificate), "{err:?}");
    assert_eq!(err.phase(), Phase::Tls);
    assert_eq!(err.retryable(), Retryable::Never);
    assert_eq!(chaos.request_count(), 0);

    // The same server, trusted, answers.
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(chaos.client_tls_config().unwrap().unwrap())
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build(https);
    let res = client
        .request(request(Method::GET, &chaos.url("/")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn tls_stall_ends_with_our_timer() {
    let listener = ConnectionFault::TlsStall.start().await.unwrap();
    let config = trusting_nothing();
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build(https);
    let req = request(Method::GET, &format!("https://{}/", listener.addr()));
    let elapsed = tokio::time::timeout(Duration::from_millis(300), client.request(req))
        .await
        .unwrap_err();
    assert_eq!(Error::from(elapsed).kind(), Kind::TimedOut(Timer::Attempt));
    assert!(listener.connection_count() >= 1);
}

#[tokio::test]
async fn black_hole_with_hyper_util_connect_timeout_is_a_connect_timeout() {
    let hole = backstop_chaos::BlackHole::start().await.unwrap();
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_millis(250)));
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build(connector);
    let started = tokio::time::Instant::now();
    let err = classified_err(
        client,
        request(Method::POST, &format!("http://{}/", hole.addr())),
    )
    .await;
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Connect), "{err:?}");
    assert_eq!(err.phase(), Phase::Connect);
    assert_eq!(err.retryable(), Retryable::Safe);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}

#[tokio::test]
async fn echo_round_trips_and_is_counted_with_its_digest() {
    let chaos = ChaosServer::start().await.unwrap();
    let mut req = request(Method::PUT, &chaos.fault_url(&Fault::Echo));
    req.headers_mut()
        .insert("idempotency-key", "k-1".parse().unwrap());
    let res = http_client().request(req).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"payload");
    let deliveries = chaos.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        deliveries[0].body_digest,
        backstop_chaos::digest(b"payload")
    );
    assert_eq!(chaos.count_key("k-1"), 1);
}

/// A TLS config trusting no certificate. The provider is named: this test binary compiles in both
/// of rustls' providers, so `ClientConfig::builder()` would panic.
fn trusting_nothing() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth()
}

/// HTTP/2's "never processed" answers, through hyper-util's client (the h2 error nested in
/// hyper's, nested in hyper-util's): safe to retry for any method, over h2c and TLS.
#[tokio::test]
async fn refused_stream_and_goaway_are_safe_for_a_post() {
    for tls in [false, true] {
        let chaos = ChaosServer::builder().tls(tls).start().await.unwrap();
        let cases = [
            (Fault::RefusedStream, ProtocolFailure::RefusedStream),
            (Fault::GoAway, ProtocolFailure::GoAway),
        ];
        for (fault, expected) in cases {
            let req = request(Method::POST, &chaos.fault_url(&fault));
            let err = if tls {
                let https = HttpsConnectorBuilder::new()
                    .with_tls_config(chaos.client_tls_config().unwrap().unwrap())
                    .https_only()
                    .enable_http2()
                    .build();
                let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build(https);
                classified_err(client, req).await
            } else {
                classified_err(h2_client(), req).await
            };
            assert_eq!(err.kind(), Kind::Protocol(expected), "tls {tls}: {err:?}");
            assert_eq!(err.retryable(), Retryable::Safe, "tls {tls}: {err:?}");
        }
        assert_eq!(chaos.request_count(), 0, "neither was delivered");

        // A stream the GOAWAY covers is not claimed unprocessed: a POST in flight when another
        // stream's GOAWAY closes the connection may have been processed.
        if !tls {
            let client = h2_client();
            let stalled = tokio::spawn(client.request(request(
                Method::POST,
                &chaos.fault_url(&Fault::StallHeaders { duration: None }),
            )));
            while chaos.request_count() == 0 {
                tokio::task::yield_now().await;
            }
            let err = classified_err(
                client.clone(),
                request(Method::POST, &chaos.fault_url(&Fault::GoAway)),
            )
            .await;
            assert_eq!(err.retryable(), Retryable::Safe, "{err:?}");
            let covered = tokio::time::timeout(Duration::from_secs(10), stalled)
                .await
                .unwrap()
                .unwrap()
                .unwrap_err();
            let covered = Error::classify(covered, Phase::AwaitHeaders);
            assert_eq!(covered.retryable(), Retryable::IfIdempotent, "{covered:?}");
        }
    }
}
