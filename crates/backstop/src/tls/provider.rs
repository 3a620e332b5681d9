//! The crypto provider of the default TLS configuration, chosen without a panic.
//!
//! `rustls::ClientConfig::builder()` uses the process default and, when none was installed,
//! picks one from rustls' crate features — and panics when both `ring` and `aws-lc-rs` are
//! compiled in, or neither. The default configuration names its provider instead: the process
//! default when the application installed one (its choice wins), else the one backstop's
//! features compiled in.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

use crate::policy::ConfigError;

/// The provider: the process default, else aws-lc-rs with `rustls-aws-lc` (an explicit opt-in
/// next to the default `rustls-ring`), else ring with `rustls-ring`, else a [`ConfigError`]
/// naming `tls`. Installs nothing.
pub(crate) fn provider() -> Result<Arc<CryptoProvider>, ConfigError> {
    match CryptoProvider::get_default() {
        Some(installed) => Ok(Arc::clone(installed)),
        None => compiled_in(),
    }
}

/// The provider backstop's features compiled in.
pub(super) fn compiled_in() -> Result<Arc<CryptoProvider>, ConfigError> {
    #[cfg(feature = "rustls-aws-lc")]
    return Ok(Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    #[cfg(all(feature = "rustls-ring", not(feature = "rustls-aws-lc")))]
    return Ok(Arc::new(rustls::crypto::ring::default_provider()));
    #[cfg(not(any(feature = "rustls-ring", feature = "rustls-aws-lc")))]
    return Err(ConfigError::new(
        "tls",
        "no crypto provider: enable backstop's `rustls-ring` or `rustls-aws-lc` feature, \
         install a process default (`rustls::crypto::CryptoProvider::install_default`), or pass \
         a configuration with `ClientBuilder::tls`",
    ));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Which provider a `CryptoProvider` is: its random source says (`Ring`, `AwsLcRs`).
    #[cfg(any(feature = "rustls-ring", feature = "rustls-aws-lc"))]
    fn name(provider: &CryptoProvider) -> String {
        format!("{:?}", provider.secure_random)
    }

    #[cfg(feature = "rustls-aws-lc")]
    #[test]
    fn with_rustls_aws_lc_the_compiled_in_provider_is_aws_lc_rs_even_next_to_ring() {
        assert_eq!(name(&compiled_in().unwrap()), "AwsLcRs");
    }

    /// The README's promise: a process default the application installed wins over the provider
    /// backstop's features would pick (aws-lc-rs here, both being compiled in). Installing is
    /// process-wide and happens once; the other tests of this binary read `compiled_in`, or build
    /// clients that work with either provider.
    #[cfg(all(feature = "rustls-ring", feature = "rustls-aws-lc"))]
    #[test]
    fn a_process_default_the_application_installed_wins_over_the_compiled_in_choice() {
        assert_eq!(name(&compiled_in().unwrap()), "AwsLcRs");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let installed = CryptoProvider::get_default().unwrap();
        assert_eq!(
            name(installed),
            "Ring",
            "this test installed the process default"
        );
        assert_eq!(name(&provider().unwrap()), "Ring");
    }

    #[cfg(all(feature = "rustls-ring", not(feature = "rustls-aws-lc")))]
    #[test]
    fn with_rustls_ring_alone_the_compiled_in_provider_is_ring() {
        assert_eq!(name(&compiled_in().unwrap()), "Ring");
    }

    #[cfg(not(any(feature = "rustls-ring", feature = "rustls-aws-lc")))]
    #[test]
    fn without_a_provider_feature_it_is_a_config_error_naming_tls_and_the_ways_out() {
        let err = compiled_in().unwrap_err();
        assert_eq!(err.field(), "tls");
        for named in [
            "rustls-ring",
            "rustls-aws-lc",
            "install_default",
            "ClientBuilder::tls",
        ] {
            assert!(err.rule().contains(named), "{named}: {}", err.rule());
        }
    }
}
