//! TLS: the client configuration the probe hands to `backstop::Client`, and the diagnostic
//! handshake that reads what the client does not expose (version, cipher suite, ALPN, the
//! certificate chain and why it was or was not trusted).
//!
//! The diagnostic handshake is a second, separate TLS connection made after the client's call:
//! it never decides the outcome of the probe (the client's call does), it only explains it.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Which HTTP versions to offer in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alpn {
    /// `h2` then `http/1.1` (the client's default).
    Both,
    /// `http/1.1` only (`--http1`).
    Http1,
    /// `h2` only (`--http2`).
    Http2,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::Both => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::Http2 => vec![b"h2".to_vec()],
        }
    }
}

/// What the probe trusts: `--cacert`, `--insecure`, or the Mozilla roots the client uses by
/// default.
#[derive(Debug, Clone)]
pub(crate) struct Trust {
    /// The roots certificates are checked against (also with `--insecure`, to say whether the
    /// certificate *would* have been trusted).
    pub(crate) roots: Arc<RootCertStore>,
    /// `--insecure`: accept any certificate.
    pub(crate) insecure: bool,
}

impl Trust {
    /// The trust `--cacert` (replacing the default roots, as curl's option does) and
    /// `--insecure` ask for.
    pub(crate) fn new(cacert: Option<&std::path::Path>, insecure: bool) -> Result<Trust, String> {
        let roots = match cacert {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("--cacert {}: {e}", path.display()))?;
                for cert in certs {
                    let cert = cert.map_err(|e| format!("--cacert {}: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("--cacert {}: {e}", path.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!(
                        "--cacert {}: no PEM certificate in the file",
                        path.display()
                    ));
                }
                roots
            }
            None => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        Ok(Trust {
            roots: Arc::new(roots),
            insecure,
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls configuration for the client: the trust asked for and the ALPN list (an explicit
/// list is honoured as given by `backstop::ClientBuilder::tls`).
pub(crate) fn client_config(trust: &Trust, alpn: Alpn) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?;
    let mut config = if trust.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(DangerousAcceptAnyCertificate::new()))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(trust.roots.clone())
            .with_no_client_auth()
    };
    config.alpn_protocols = alpn.protocols();
    Ok(config)
}

/// DANGEROUS: accepts every server certificate, whoever issued it and whatever name it is for
/// (`--insecure`, and the diagnostic handshake, which must go on to describe a certificate the
/// client refused). The handshake signatures are still checked, so the peer must hold the key of
/// the certificate it sent; but anyone can make such a certificate, so this protects nothing.
#[derive(Debug)]
pub(crate) struct DangerousAcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
    /// For the diagnostic handshake: where to record the chain and the real verifier's verdict.
    recorder: Option<Recorder>,
}

/// Records the chain and the real verifier's verdict, without letting the verdict decide.
#[derive(Debug)]
struct Recorder {
    real: Arc<WebPkiServerVerifier>,
    seen: Arc<Mutex<Seen>>,
}

impl DangerousAcceptAnyCertificate {
    pub(crate) fn new() -> DangerousAcceptAnyCertificate {
        DangerousAcceptAnyCertificate {
            algorithms: provider().signature_verification_algorithms,
            recorder: None,
        }
    }

    fn recording(real: Arc<WebPkiServerVerifier>, seen: Arc<Mutex<Seen>>) -> Self {
        DangerousAcceptAnyCertificate {
            recorder: Some(Recorder { real, seen }),
            ..DangerousAcceptAnyCertificate::new()
        }
    }
}

impl ServerCertVerifier for DangerousAcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(Recorder { real, seen }) = &self.recorder {
            let verdict = real
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map(|_| ())
                .map_err(|e| e.to_string());
            if let Ok(mut seen) = seen.lock() {
                seen.chain = std::iter::once(end_entity.clone().into_owned())
                    .chain(intermediates.iter().map(|c| c.clone().into_owned()))
                    .collect();
                seen.verdict = Some(verdict);
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What the verifier of the diagnostic handshake saw.
#[derive(Debug, Default)]
struct Seen {
    chain: Vec<CertificateDer<'static>>,
    verdict: Option<Result<(), String>>,
}

/// The leaf certificate, as a person reads it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CertInfo {
    pub(crate) subject: String,
    pub(crate) issuer: String,
    pub(crate) not_before: String,
    pub(crate) not_after: String,
    /// Whole days until `not_after` (negative: expired).
    pub(crate) days_left: i64,
    /// The DNS names and IP addresses it is issued for.
    pub(crate) names: Vec<String>,
    /// Whether one of `names` matches the host asked for.
    pub(crate) name_match: bool,
}

/// The details of the diagnostic handshake.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TlsDetails {
    pub(crate) version: Option<String>,
    pub(crate) cipher: Option<String>,
    pub(crate) alpn: Option<String>,
    pub(crate) certificate: Option<CertInfo>,
    /// Whether the chain verified against the roots in use (`--cacert` or the default ones).
    pub(crate) trusted: Option<bool>,
    /// Why it did not, in rustls' words.
    pub(crate) verification_error: Option<String>,
}

/// Why the diagnostic handshake could not be made.
#[derive(Debug)]
pub(crate) struct InspectError(pub(crate) String);

impl fmt::Display for InspectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Makes the diagnostic handshake with `addr`, for `host`, within `bound`.
pub(crate) async fn inspect(
    addr: SocketAddr,
    host: &str,
    trust: &Trust,
    alpn: Alpn,
    bound: Duration,
) -> Result<TlsDetails, InspectError> {
    let real = WebPkiServerVerifier::builder_with_provider(trust.roots.clone(), provider())
        .build()
        .map_err(|e| InspectError(format!("no usable root certificate: {e}")))?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let verifier = DangerousAcceptAnyCertificate::recording(real, seen.clone());
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| InspectError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = alpn.protocols();
    let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
        .map_err(|e| InspectError(format!("{host} is not a TLS server name: {e}")))?
        .to_owned();
    let started = Instant::now();
    let handshake = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| InspectError(format!("connect {addr}: {e}")))?;
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| InspectError(format!("handshake with {addr}: {e}")))
    };
    let stream = tokio::time::timeout(bound, handshake).await.map_err(|_| {
        InspectError(format!(
            "handshake with {addr} not done after {}",
            crate::fmt_duration(started.elapsed())
        ))
    })??;
    let (_, conn) = stream.get_ref();
    let version = conn.protocol_version().map(|v| format!("{v:?}"));
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()));
    let alpn = conn
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let (chain, verdict) = match seen.lock() {
        Ok(mut seen) => (std::mem::take(&mut seen.chain), seen.verdict.take()),
        Err(_) => (Vec::new(), None),
    };
    let certificate = chain.first().and_then(|leaf| describe(leaf, host));
    Ok(TlsDetails {
        version,
        cipher,
        alpn,
        certificate,
        trusted: verdict.as_ref().map(Result::is_ok),
        verification_error: verdict.and_then(Result::err),
    })
}

/// Reads the fields a person checks from a DER certificate (`None` when it does not parse).
pub(crate) fn describe(der: &CertificateDer<'_>, host: &str) -> Option<CertInfo> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
    let validity = cert.validity();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let days_left = (validity.not_after.timestamp() - now).div_euclid(86_400);
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => {
                        let b: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
                        names.push(std::net::Ipv4Addr::from(b).to_string());
                    }
                    16 => {
                        let mut b = [0u8; 16];
                        b.copy_from_slice(bytes);
                        names.push(std::net::Ipv6Addr::from(b).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name_match = names.iter().any(|name| matches_name(name, host));
    Some(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: validity.not_before.to_string(),
        not_after: validity.not_after.to_string(),
        days_left,
        names,
        name_match,
    })
}

/// RFC 6125 matching, as far as a diagnostic needs it: exact (case-insensitive), or a `*.`
/// wildcard standing for exactly one left-most label.
fn matches_name(pattern: &str, host: &str) -> bool {
    if pattern.eq_ignore_ascii_case(host) {
        return true;
    }
    match (pattern.strip_prefix("*."), host.split_once('.')) {
        (Some(suffix), Some((label, rest))) => {
            !label.is_empty() && suffix.eq_ignore_ascii_case(rest)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::matches_name;

    #[test]
    fn wildcards_stand_for_one_label() {
        assert!(matches_name("localhost", "LOCALHOST"));
        assert!(matches_name("*.example.com", "a.example.com"));
        assert!(!matches_name("*.example.com", "a.b.example.com"));
        assert!(!matches_name("*.example.com", "example.com"));
    }
}
