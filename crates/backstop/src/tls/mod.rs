//! The client's TLS (the `tls` feature): the default configuration and the HTTPS connector
//! ([`HttpsConnector`], ours over tokio-rustls, so that its future can tell the connect timeout
//! which phase it is in), built without a panic.
//!
//! Two things in the usual way of building these panic at run time, and `build()` must not:
//!
//! - `rustls::ClientConfig::builder()` uses the process-default crypto provider, and when none
//!   was installed it picks one from rustls' crate features; when another crate of the
//!   application enables rustls' `aws-lc-rs` provider next to `ring`, the choice is ambiguous and
//!   it panics. The default configuration therefore names its provider (`provider.rs`).
//! - hyper-rustls' `HttpsConnectorBuilder::with_tls_config` asserts that the configuration has
//!   no ALPN protocols (we no longer use it, but keep its lesson): a user's ALPN list is checked
//!   here and, when the client can speak every protocol in it, honoured as given (see
//!   [`https_connector`]).
//!
//! The roots the default configuration trusts follow the features (`roots.rs`).

mod connector;
mod provider;
mod roots;
mod stream;

pub(crate) use connector::HttpsConnector;

use crate::policy::ConfigError;

/// The ALPN identifier of HTTP/2.
const H2: &[u8] = b"h2";
/// The ALPN identifier of HTTP/1.1.
const HTTP_1_1: &[u8] = b"http/1.1";

/// The default TLS configuration: the safe default protocol versions (TLS 1.2 and 1.3), the
/// crypto provider named (the process default, else the one compiled in: see `provider.rs`) so
/// that another one compiled into the application cannot make the choice ambiguous, and the
/// roots the features choose (see `roots.rs`).
pub(crate) fn default_config() -> Result<rustls::ClientConfig, ConfigError> {
    let provider = provider::provider()?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            ConfigError::new(
                "tls",
                format!("the crypto provider supports no safe protocol version: {e}"),
            )
        })?;
    Ok(roots::verify(builder)?.with_no_client_auth())
}

/// Wraps `tcp` in an HTTPS connector (plain `http://` URLs pass through to `tcp`).
///
/// With no ALPN protocols in `config`, the client offers `h2` then `http/1.1`, and speaks
/// whichever the server picks. A non-empty list is honoured as given — its protocols, in its
/// order — when every entry is `h2` or `http/1.1`, each at most once; anything else is a
/// [`ConfigError`] naming `tls.alpn_protocols`, since the client could not speak a protocol it
/// offered, and a server choosing one would be answered in the wrong protocol.
pub(crate) fn https_connector<H>(
    mut config: rustls::ClientConfig,
    tcp: H,
) -> Result<HttpsConnector<H>, ConfigError> {
    if config.alpn_protocols.is_empty() {
        config.alpn_protocols = vec![H2.to_vec(), HTTP_1_1.to_vec()];
    } else {
        check_alpn(&config.alpn_protocols)?;
    }
    Ok(HttpsConnector::new(tcp, std::sync::Arc::new(config)))
}

/// Accepts an ALPN list of `h2` and `http/1.1` only, none twice.
fn check_alpn(protocols: &[Vec<u8>]) -> Result<(), ConfigError> {
    for (i, protocol) in protocols.iter().enumerate() {
        if protocol.as_slice() != H2 && protocol.as_slice() != HTTP_1_1 {
            return Err(ConfigError::new(
                "tls.alpn_protocols",
                format!(
                    "may list only \"h2\" and \"http/1.1\" (the protocols the client speaks), \
                     not {:?}; leave it empty to offer both",
                    String::from_utf8_lossy(protocol)
                ),
            ));
        }
        if protocols[..i].contains(protocol) {
            return Err(ConfigError::new(
                "tls.alpn_protocols",
                format!("lists {:?} twice", String::from_utf8_lossy(protocol)),
            ));
        }
    }
    Ok(())
}

/// A configuration for tests that never complete a handshake (ALPN checks, refused URIs, the
/// layers' bounds): whatever the features, ring (the dev-dependencies enable it) and no roots.
#[cfg(test)]
#[allow(clippy::expect_used)]
pub(crate) fn test_config() -> rustls::ClientConfig {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn config_with(alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut config = test_config();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    #[cfg(all(
        any(feature = "rustls-ring", feature = "rustls-aws-lc"),
        any(feature = "webpki-roots", feature = "platform-verifier")
    ))]
    #[test]
    fn the_default_config_has_no_alpn_and_a_provider() {
        let config = default_config().unwrap();
        assert!(config.alpn_protocols.is_empty());
        assert!(!config.crypto_provider().cipher_suites.is_empty());
    }

    /// With TLS but no way to choose a provider or roots, the builder says so instead of
    /// panicking, and a configuration of one's own still builds.
    #[cfg(not(all(
        any(feature = "rustls-ring", feature = "rustls-aws-lc"),
        any(
            feature = "webpki-roots",
            feature = "native-roots",
            feature = "platform-verifier"
        )
    )))]
    #[test]
    fn without_a_provider_or_roots_build_is_a_config_error_naming_tls() {
        let err = crate::Client::builder().build().unwrap_err();
        assert_eq!(err.field(), "tls");
        assert!(err.rule().contains("ClientBuilder::tls"), "{}", err.rule());
        assert!(crate::Client::builder().tls(test_config()).build().is_ok());
    }

    #[test]
    fn an_empty_list_offers_h2_then_http_1_1() {
        assert!(https_connector(config_with(&[]), ()).is_ok());
    }

    #[test]
    fn h2_and_http_1_1_in_any_order_are_accepted() {
        for alpn in [
            &[H2][..],
            &[HTTP_1_1][..],
            &[H2, HTTP_1_1][..],
            &[HTTP_1_1, H2][..],
        ] {
            assert!(https_connector(config_with(alpn), ()).is_ok(), "{alpn:?}");
        }
    }

    #[test]
    fn another_protocol_or_a_repeat_is_a_config_error_naming_the_field() {
        for alpn in [
            &[b"h3".as_slice()][..],
            &[H2, b"spdy/3".as_slice()][..],
            &[b"".as_slice()][..],
            &[H2, H2][..],
        ] {
            let Err(err) = https_connector(config_with(alpn), ()) else {
                panic!("{alpn:?} is rejected");
            };
            assert_eq!(err.field(), "tls.alpn_protocols", "{alpn:?}");
        }
    }
}
