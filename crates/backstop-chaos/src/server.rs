//! The request-level chaos server: its builder and public handle. What it records lives in
//! [`delivery`], its connections in [`conn`], the handling of each request's fault in [`handle`].

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::{Fault, Script, TlsIdentity, lock};

mod conn;
mod delivery;
mod handle;

pub(crate) use conn::bind_reuse;
use conn::{ConnCtx, accept_loop};
pub use delivery::Delivery;
use delivery::Shared;

/// The bytes sent by [`Fault::Garbage`] instead of a response.
pub const GARBAGE: &[u8] =
    b"\x00\x01\x02\xffgarbage: this is not HTTP at all\r\n\xde\xad\xbe\xef\r\n\r\n";

/// Header selecting a fault: `x-chaos-fault: <name>[?<params>]`.
pub const FAULT_HEADER: &str = "x-chaos-fault";

/// Configures and starts a [`ChaosServer`].
#[derive(Debug, Clone)]
pub struct ChaosServerBuilder {
    tls: bool,
    addr: SocketAddr,
    scripts: Vec<(String, Script)>,
}

impl Default for ChaosServerBuilder {
    fn default() -> Self {
        ChaosServerBuilder {
            tls: false,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            scripts: Vec::new(),
        }
    }
}

impl ChaosServerBuilder {
    /// Serve HTTPS (HTTP/1.1 and HTTP/2 via ALPN) with a freshly generated
    /// certificate instead of plain HTTP (HTTP/1.1 and HTTP/2 prior
    /// knowledge). Default: false.
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Listen address; must be a loopback address. Default `127.0.0.1:0`
    /// (an ephemeral port).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Attach a script to a path prefix from the start (see
    /// [`ChaosServer::script`]).
    pub fn script(mut self, prefix: impl Into<String>, script: Script) -> Self {
        self.scripts.push((prefix.into(), script));
        self
    }

    /// Binds the listener and starts serving on the current tokio runtime.
    ///
    /// Errors: `InvalidInput` for a non-loopback address, the bind error, or
    /// (`Other`) a certificate generation / TLS configuration failure.
    pub async fn start(self) -> io::Result<ChaosServer> {
        if !self.addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "backstop-chaos only listens on loopback, refusing {}",
                    self.addr
                ),
            ));
        }
        let identity = if self.tls {
            Some(Arc::new(TlsIdentity::generate()?))
        } else {
            None
        };
        let acceptor = match &identity {
            Some(id) => Some(TlsAcceptor::from(Arc::new(id.server_config()?))),
            None => None,
        };
        let listener = bind_reuse(self.addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            routes: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            connections: AtomicU64::new(0),
        });
        {
            let mut routes = lock(&shared.routes);
            for (prefix, script) in self.scripts {
                routes.retain(|(p, _)| *p != prefix);
                routes.push((prefix, script));
            }
        }
        let (tx, rx) = mpsc::channel(8);
        let ctx = Arc::new(ConnCtx {
            shared: shared.clone(),
            tls: acceptor,
        });
        let task = tokio::spawn(accept_loop(listener, addr, ctx, rx));
        tracing::debug!(%addr, tls = self.tls, "backstop-chaos listening");
        Ok(ChaosServer {
            addr,
            identity,
            shared,
            cmds: tx,
            task: Some(task),
        })
    }
}

/// A fault-injecting HTTP/1.1 + HTTP/2 server on loopback.
///
/// Dropping it (or [`ChaosServer::shutdown`]) stops the listener and aborts
/// every connection task.
///
/// The delivery log keeps every request until [`ChaosServer::reset_counts`];
/// long-running benchmarks should reset it now and then.
#[derive(Debug)]
pub struct ChaosServer {
    addr: SocketAddr,
    identity: Option<Arc<TlsIdentity>>,
    shared: Arc<Shared>,
    cmds: mpsc::Sender<Cmd>,
    task: Option<JoinHandle<()>>,
}

impl Drop for ChaosServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl ChaosServer {
    /// A builder with the defaults (plain HTTP on `127.0.0.1:0`).
    pub fn builder() -> ChaosServerBuilder {
        ChaosServerBuilder::default()
    }

    /// Starts a plain-HTTP server on an ephemeral `127.0.0.1` port.
    pub async fn start() -> io::Result<ChaosServer> {
        ChaosServer::builder().start().await
    }

    /// The bound address (the real port, also after [`ChaosServer::up`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the server speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.identity.is_some()
    }

    /// `http://127.0.0.1:<port><path>` or `https://127.0.0.1:<port><path>`.
    ///
    /// The host is always the IP literal of [`ChaosServer::addr`] (never
    /// `localhost`, so nothing is resolved); the TLS certificate carries an IP
    /// SAN for it. `path` should start with `/`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// The URL selecting `fault`, i.e. `self.url(&fault.to_path())`.
    pub fn fault_url(&self, fault: &Fault) -> String {
        self.url(&fault.to_path())
    }

    /// The TLS identity (CA and server certificate), if TLS is on.
    pub fn tls_identity(&self) -> Option<&TlsIdentity> {
        self.identity.as_deref()
    }

    /// The CA certificate (DER) a client must trust to talk to this TLS
    /// server; `None` for plain HTTP.
    pub fn ca_cert_der(&self) -> Option<rustls::pki_types::CertificateDer<'static>> {
        self.identity.as_ref().map(|i| i.ca_cert_der())
    }

    /// The CA certificate as PEM (for `curl --cacert`); `None` for plain HTTP.
    pub fn ca_cert_pem(&self) -> Option<String> {
        self.identity.as_ref().map(|i| i.ca_cert_pem().to_string())
    }

    /// A root store holding only the CA; `None` for plain HTTP.
    pub fn root_store(&self) -> Option<rustls::RootCertStore> {
        self.identity.as_ref().map(|i| i.root_store())
    }

    /// A rustls client config (ring provider) that trusts this server, with
    /// no ALPN set (ready for `hyper_rustls::HttpsConnectorBuilder::with_tls_config`);
    /// `None` for plain HTTP.
    pub fn client_tls_config(&self) -> Option<io::Result<rustls::ClientConfig>> {
        self.identity.as_ref().map(|i| i.client_config())
    }

    /// Attach `script` to every path starting with `prefix` (replacing any
    /// script on the same prefix). The longest matching prefix wins. Requests
    /// that select a fault explicitly (`/fault/...` or `x-chaos-fault`)
    /// bypass scripts.
    pub fn script(&self, prefix: impl Into<String>, script: Script) {
        let prefix = prefix.into();
        let mut routes = lock(&self.shared.routes);
        routes.retain(|(p, _)| *p != prefix);
        routes.push((prefix, script));
    }

    /// Every request under `prefix` gets `fault` until [`ChaosServer::clear`].
    /// Same as `script(prefix, Script::always(fault))`.
    pub fn set_fault_for(&self, prefix: impl Into<String>, fault: Fault) {
        self.script(prefix, Script::always(fault));
    }

    /// Removes the script or fault on exactly `prefix`.
    pub fn clear(&self, prefix: &str) {
        lock(&self.shared.routes).retain(|(p, _)| p != prefix);
    }

    /// Removes every script and fault.
    pub fn clear_all(&self) {
        lock(&self.shared.routes).clear();
    }

    /// Takes the whole server down: the listener is closed (new connections
    /// are refused with `ECONNREFUSED`) and every open connection is closed.
    /// Returns once that has happened. Idempotent.
    pub async fn down(&self) {
        self.send_down(None).await;
    }

    /// Like [`ChaosServer::down`], then automatically back [`up`](ChaosServer::up)
    /// on the same port after `period` (tokio clock). Returns once down.
    pub async fn down_for(&self, period: Duration) {
        self.send_down(Some(period)).await;
    }

    async fn send_down(&self, up_after: Option<Duration>) {
        let (ack, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Down { up_after, ack }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Re-binds the same address (with `SO_REUSEADDR`) after
    /// [`ChaosServer::down`]. A no-op if already up. Fails if the port was
    /// taken in the meantime.
    pub async fn up(&self) -> io::Result<()> {
        let (ack, rx) = oneshot::channel();
        let gone = || io::Error::other("chaos server task has stopped");
        self.cmds.send(Cmd::Up { ack }).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Stops the server and waits until the listener and all connections are
    /// closed.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

enum Cmd {
    Down {
        up_after: Option<Duration>,
        ack: oneshot::Sender<()>,
    },
    Up {
        ack: oneshot::Sender<io::Result<()>>,
    },
}
