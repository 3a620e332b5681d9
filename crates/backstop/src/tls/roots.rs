//! The certificate verification of the default TLS configuration: the platform verifier with
//! `platform-verifier`, else the union of the roots the features compile in (`webpki-roots`)
//! or load (`native-roots`).

#[cfg(not(feature = "platform-verifier"))]
use rustls::RootCertStore;
use rustls::client::WantsClientCert;
use rustls::{ClientConfig, ConfigBuilder, WantsVerifier};

use crate::policy::ConfigError;

/// Verifies server certificates as the features say; no roots at all is a [`ConfigError`]
/// naming `tls`.
pub(super) fn verify(
    builder: ConfigBuilder<ClientConfig, WantsVerifier>,
) -> Result<ConfigBuilder<ClientConfig, WantsClientCert>, ConfigError> {
    #[cfg(feature = "platform-verifier")]
    {
        use rustls_platform_verifier::BuilderVerifierExt;
        builder.with_platform_verifier().map_err(|e| {
            ConfigError::new("tls", format!("the platform verifier cannot start: {e}"))
        })
    }
    #[cfg(not(feature = "platform-verifier"))]
    {
        let mut roots = RootCertStore::empty();
        add_webpki(&mut roots);
        add_native(&mut roots);
        if roots.is_empty() {
            return Err(no_roots());
        }
        Ok(builder.with_root_certificates(roots))
    }
}

#[cfg(not(feature = "platform-verifier"))]
fn no_roots() -> ConfigError {
    let why = if cfg!(feature = "native-roots") {
        "no root certificates: none of the system's could be loaded (see the warnings logged)"
    } else {
        "no root certificates"
    };
    ConfigError::new(
        "tls",
        format!(
            "{why}: enable backstop's `webpki-roots`, `native-roots` or `platform-verifier` \
             feature, or pass a configuration with `ClientBuilder::tls`"
        ),
    )
}

/// The Mozilla roots, compiled in.
#[cfg(not(feature = "platform-verifier"))]
fn add_webpki(roots: &mut RootCertStore) {
    #[cfg(feature = "webpki-roots")]
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    #[cfg(not(feature = "webpki-roots"))]
    let _ = roots;
}

/// The system's roots, read now.
#[cfg(not(feature = "platform-verifier"))]
fn add_native(roots: &mut RootCertStore) {
    #[cfg(feature = "native-roots")]
    {
        let loaded = rustls_native_certs::load_native_certs();
        add_loaded(roots, loaded.certs, &loaded.errors);
    }
    #[cfg(not(feature = "native-roots"))]
    let _ = roots;
}

/// Adds the certificates that parse, warning about the others and about what failed to load:
/// a broken certificate of the system's must not stop the client, unless nothing is left.
#[cfg(all(feature = "native-roots", not(feature = "platform-verifier")))]
fn add_loaded(
    roots: &mut RootCertStore,
    certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    errors: &[impl std::fmt::Display],
) -> usize {
    for err in errors {
        tracing::warn!(error = %err, "TLS: some of the system's root certificates could not be read");
    }
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if ignored > 0 {
        tracing::warn!(
            ignored,
            added,
            "TLS: skipped system root certificates that do not parse"
        );
    }
    added
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A builder with some provider: the roots are under test, not the provider, so when the
    /// features compile none in, ring's (which the dev-dependencies enable in rustls).
    fn builder() -> ConfigBuilder<ClientConfig, WantsVerifier> {
        let provider = crate::tls::provider::compiled_in()
            .unwrap_or_else(|_| std::sync::Arc::new(rustls::crypto::ring::default_provider()));
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
    }

    #[cfg(not(any(
        feature = "webpki-roots",
        feature = "native-roots",
        feature = "platform-verifier"
    )))]
    #[test]
    fn without_a_roots_feature_it_is_a_config_error_naming_tls_and_the_features() {
        let err = verify(builder()).err().expect("no roots, no configuration");
        assert_eq!(err.field(), "tls");
        for named in [
            "webpki-roots",
            "native-roots",
            "platform-verifier",
            "ClientBuilder::tls",
        ] {
            assert!(err.rule().contains(named), "{named}: {}", err.rule());
        }
    }

    #[cfg(all(feature = "webpki-roots", not(feature = "platform-verifier")))]
    #[test]
    fn with_webpki_roots_the_default_verification_builds() {
        assert!(verify(builder()).is_ok());
    }

    #[cfg(feature = "platform-verifier")]
    #[test]
    fn with_the_platform_verifier_the_default_verification_builds() {
        assert!(verify(builder()).is_ok());
    }

    #[cfg(all(feature = "native-roots", not(feature = "platform-verifier")))]
    #[test]
    fn a_system_certificate_that_does_not_parse_is_skipped_not_fatal() {
        let mut roots = RootCertStore::empty();
        let garbage = rustls::pki_types::CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        let errors = ["/etc/ssl/certs/broken.pem: unreadable"];
        assert_eq!(add_loaded(&mut roots, vec![garbage], &errors), 0);
        // Nothing added: the caller's `no_roots`, not a panic.
        assert!(roots.is_empty());
        // Whatever this machine's store holds: a configuration, or the error naming `tls`.
        if let Err(err) = verify(builder()) {
            assert_eq!(err.field(), "tls");
        }
    }
}
