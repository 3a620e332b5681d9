//! `Client::builder().build()` never panics over TLS: not when both of rustls' crypto providers
//! are compiled in (this test package enables backstop's `rustls-aws-lc` next to its default
//! `rustls-ring`, as an application may, and rustls' `aws_lc_rs` next to `ring`), and not when the
//! user's TLS config already lists ALPN protocols (which hyper-rustls' connector builder asserts
//! against). Everything runs against the chaos upstream on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use backstop::{Client, Kind, Retryable};
use backstop_chaos::ChaosServer;
use http::{StatusCode, Version};
use tokio::time::timeout;

async fn bounded<F: std::future::Future>(fut: F) -> F::Output {
    timeout(Duration::from_secs(20), fut)
        .await
        .expect("every call ends on its own")
}

fn client() -> backstop::ClientBuilder {
    Client::builder()
        .deadline(Duration::from_secs(5))
        .attempt_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(1))
        .max_attempts(1)
        .seed(7)
}

/// The chaos server's client config (ring, named), trusting its CA, with `alpn` set.
fn trusting(chaos: &ChaosServer, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut config = chaos.client_tls_config().unwrap().unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

#[tokio::test]
async fn with_both_providers_compiled_in_the_default_client_builds_and_calls_over_tls() {
    // The precondition is real: no process default is installed, and rustls cannot pick one
    // from its crate features, so the usual `ClientConfig::builder()` panics here.
    assert!(rustls::crypto::CryptoProvider::get_default().is_none());
    let usual = std::panic::catch_unwind(rustls::ClientConfig::builder);
    assert!(
        usual.is_err(),
        "with ring and aws-lc-rs both compiled in, ClientConfig::builder() panics"
    );
    assert!(
        rustls::crypto::CryptoProvider::get_default().is_none(),
        "the panic installed nothing"
    );

    let chaos = ChaosServer::builder().tls(true).start().await.unwrap();

    // The default TLS config (webpki roots, its provider named: aws-lc-rs, preferred when
    // `rustls-aws-lc` is on): builds, handshakes, and rejects the chaos certificate no public
    // root signed.
    let default = client().build().expect("build() chooses its provider");
    let err = bounded(default.get(&chaos.url("/"))).await.unwrap_err();
    assert_eq!(
        err.kind(),
        Kind::Tls(backstop::classify::TlsFailure::Certificate),
        "{err:?}"
    );
    assert_eq!(err.retryable(), Retryable::Never);

    // A config trusting the chaos CA: the GET succeeds, over HTTP/2 (offered first by default).
    let trusting = client().tls(trusting(&chaos, &[])).build().unwrap();
    let res = bounded(trusting.get(&chaos.url("/"))).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.version(), Version::HTTP_2);

    assert!(
        rustls::crypto::CryptoProvider::get_default().is_none(),
        "nothing along the way installed a process default"
    );
}

#[tokio::test]
async fn a_preset_alpn_list_is_honoured() {
    // The precondition is real: hyper-rustls' own builder panics on this config.
    let chaos = ChaosServer::builder().tls(true).start().await.unwrap();
    let preset = trusting(&chaos, &[b"h2"]);
    let usual = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(preset.clone())
    }));
    assert!(usual.is_err(), "hyper-rustls asserts an empty ALPN list");

    // The server speaks both; the client offers only what the list says.
    for (alpn, version) in [
        (&[b"h2".as_slice()][..], Version::HTTP_2),
        (&[b"http/1.1".as_slice()][..], Version::HTTP_11),
        (
            &[b"h2".as_slice(), b"http/1.1".as_slice()][..],
            Version::HTTP_2,
        ),
    ] {
        let client = client()
            .tls(trusting(&chaos, alpn))
            .build()
            .expect("a list of protocols the client speaks is honoured");
        let res = bounded(client.get(&chaos.url("/"))).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{alpn:?}");
        assert_eq!(res.version(), version, "{alpn:?}");
    }
}

#[tokio::test]
async fn an_alpn_protocol_the_client_cannot_speak_is_a_config_error() {
    let chaos = ChaosServer::builder().tls(true).start().await.unwrap();
    for alpn in [
        &[b"h3".as_slice()][..],
        &[b"h2".as_slice(), b"fancyprotocol".as_slice()][..],
        &[b"http/1.1".as_slice(), b"http/1.1".as_slice()][..],
    ] {
        let err = client()
            .tls(trusting(&chaos, alpn))
            .build()
            .expect_err("rejected, not panicking");
        assert_eq!(err.field(), "tls.alpn_protocols", "{alpn:?}");
    }
}
