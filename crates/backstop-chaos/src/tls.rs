//! Throw-away certificate authority and server certificate for TLS mode.

use std::io;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// A freshly generated CA plus a server certificate it signed.
///
/// The server certificate is valid for `localhost`, `127.0.0.1` and `::1`.
/// Clients that should trust the server add [`TlsIdentity::ca_cert_der`] (or
/// the PEM) to their root store; clients that should *not* trust it simply
/// use their normal roots.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    leaf_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

fn other<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(e.to_string())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsIdentity {
    /// Generates a new CA and server certificate (ECDSA P-256).
    pub fn generate() -> io::Result<TlsIdentity> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "backstop-chaos test CA");
        ca_params.distinguished_name = dn;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().map_err(other)?;
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(other)?;

        let mut leaf_params = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])
        .map_err(other)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "localhost");
        leaf_params.distinguished_name = dn;
        let leaf_key = KeyPair::generate().map_err(other)?;
        let leaf = leaf_params.signed_by(&leaf_key, &ca).map_err(other)?;

        Ok(TlsIdentity {
            ca_der: ca.der().clone(),
            ca_pem: ca.pem(),
            leaf_der: leaf.der().clone(),
            key_der: leaf_key.serialize_der(),
        })
    }

    /// The CA certificate (DER) to trust.
    pub fn ca_cert_der(&self) -> CertificateDer<'static> {
        self.ca_der.clone()
    }

    /// The CA certificate (PEM), e.g. for `curl --cacert`.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server (leaf) certificate (DER).
    pub fn server_cert_der(&self) -> CertificateDer<'static> {
        self.leaf_der.clone()
    }

    /// A root store containing only the CA.
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        // A freshly generated, well-formed certificate: adding cannot fail in
        // practice, and a failure would only surface as an untrusted server.
        let _ = roots.add(self.ca_der.clone());
        roots
    }

    /// A rustls client configuration (ring provider) trusting only the CA.
    ///
    /// No ALPN protocols are set, as `hyper_rustls::HttpsConnectorBuilder`
    /// requires; with a bare `tokio_rustls` connector set
    /// `alpn_protocols` yourself (`h2` and/or `http/1.1`).
    pub fn client_config(&self) -> io::Result<ClientConfig> {
        let cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(other)?
            .with_root_certificates(self.root_store())
            .with_no_client_auth();
        Ok(cfg)
    }

    /// The rustls server configuration used by the chaos server (ALPN `h2`,
    /// `http/1.1`).
    pub fn server_config(&self) -> io::Result<ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(other)?
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf_der.clone(), self.ca_der.clone()], key)
            .map_err(other)?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(cfg)
    }
}
