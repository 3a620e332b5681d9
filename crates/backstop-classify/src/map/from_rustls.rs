//! rustls's errors into backstop's TLS failures (feature `rustls`).

use crate::error::Error;
use crate::failure::Phase;
use crate::kind::TlsFailure;

impl From<rustls::Error> for Error {
    fn from(err: rustls::Error) -> Error {
        Error::classify(err, Phase::Tls)
    }
}

/// A certificate problem (ours or the peer's alert about it), or any other handshake failure.
pub(super) fn tls_failure(err: &rustls::Error) -> TlsFailure {
    match err {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::InvalidCertRevocationList(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::UnsupportedNameType => TlsFailure::Certificate,
        rustls::Error::AlertReceived(
            rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnsupportedCertificate
            | rustls::AlertDescription::CertificateRevoked
            | rustls::AlertDescription::CertificateExpired
            | rustls::AlertDescription::CertificateUnknown
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateRequired,
        ) => TlsFailure::Certificate,
        _ => TlsFailure::Handshake,
    }
}
