//! HTTP/2 (prior knowledge and ALPN) and TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io;

use backstop_chaos::{ChaosServer, Fault};
use common::*;
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

fn tls_client(cfg: rustls::ClientConfig, h2: bool) -> HttpsClient {
    let b = HttpsConnectorBuilder::new()
        .with_tls_config(cfg)
        .https_only();
    let connector = if h2 {
        b.enable_http2().build()
    } else {
        b.enable_http1().build()
    };
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

fn trusting(chaos: &ChaosServer) -> rustls::ClientConfig {
    chaos.client_tls_config().unwrap().unwrap()
}

#[tokio::test]
async fn h2_prior_knowledge_ok_and_reset() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = h2_client();
    let resp = bounded(client.request(get(&chaos.url("/fault/ok"))))
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok\n");

    let err = bounded(client.request(post(&chaos.fault_url(&Fault::ResetAfterRead), b"abc")))
        .await
        .unwrap_err();
    assert_eq!(
        io_kind(&err),
        Some(io::ErrorKind::ConnectionReset),
        "{}",
        describe(&err)
    );
    let d = chaos.deliveries();
    assert_eq!(
        d.last().unwrap().body_digest,
        backstop_chaos::digest(b"abc")
    );
}

#[tokio::test]
async fn h2_close_after_read_and_stall() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = h2_client();
    let res = bounded(client.request(get(&chaos.fault_url(&Fault::CloseAfterRead)))).await;
    assert!(res.is_err());
    let res = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        client.request(get(
            &chaos.fault_url(&Fault::StallHeaders { duration: None })
        )),
    )
    .await;
    assert!(res.is_err(), "h2 stall-headers must time out");
}

#[tokio::test]
async fn tls_h2_via_alpn_ok_and_reset() {
    let chaos = ChaosServer::builder().tls(true).start().await.unwrap();
    assert!(chaos.url("/").starts_with("https://127.0.0.1:"));
    let client = tls_client(trusting(&chaos), true);
    let resp = bounded(client.request(get(&chaos.url("/fault/ok"))))
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);

    let err = bounded(client.request(get(&chaos.fault_url(&Fault::ResetAfterRead))))
        .await
        .unwrap_err();
    assert_eq!(
        io_kind(&err),
        Some(io::ErrorKind::ConnectionReset),
        "{}",
        describe(&err)
    );
}

#[tokio::test]
async fn tls_h1_ok_reset_close_garbage() {
    let chaos = ChaosServer::builder().tls(true).start().await.unwrap();
    let client = tls_client(trusting(&chaos), false);
    let resp = bounded(client.request(get(&chaos.url("/")))).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_11);
    assert_eq!(resp.status(), 200);

    let err = bounded(client.request(get(&chaos.fault_url(&Fault::ResetAfterRead))))
        .await
        .unwrap_err();
    assert_eq!(
        io_kind(&err),
        Some(io::ErrorKind::ConnectionReset),
        "{}",
        describe(&err)
    );

    let err = bounded(client.request(get(&chaos.fault_url(&Fault::CloseAfterRead))))
        .await
        .unwrap_err();
    assert!(
        hyper_err(&err).is_some_and(|h| h.is_incomplete_message()),
        "{}",
        describe(&err)
    );

    let err = bounded(client.request(get(&chaos.fault_url(&Fault::Garbage))))
        .await
        .unwrap_err();
    assert!(
        hyper_err(&err).is_some_and(|h| h.is_parse()),
        "{}",
        describe(&err)
    );
}

#[tokio::test]
async fn untrusting_client_fails_handshake() {
    let chaos = ChaosServer::builder().tls(true).start().await.unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let client = tls_client(cfg, false);
    let err = bounded(client.request(get(&chaos.url("/"))))
        .await
        .unwrap_err();
    assert!(
        chain(&err)
            .iter()
            .any(|e| e.to_string().contains("certificate")),
        "{}",
        describe(&err)
    );
    assert_eq!(chaos.request_count(), 0);
}

#[tokio::test]
async fn certificate_material_is_exposed() {
    let chaos = ChaosServer::builder().tls(true).start().await.unwrap();
    let pem = chaos.ca_cert_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(!chaos.ca_cert_der().unwrap().is_empty());
    assert_eq!(chaos.root_store().unwrap().len(), 1);

    let plain = ChaosServer::start().await.unwrap();
    assert!(plain.ca_cert_der().is_none());
    assert!(plain.client_tls_config().is_none());
}
