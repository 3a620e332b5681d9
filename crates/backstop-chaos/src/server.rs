//! The request-level chaos server.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsAcceptor;

use crate::body::ChaosBody;
use crate::fault::{MAX_BODY, parse_query};
use crate::io::{Action, ChaosIo, ConnCtl, Stream};
use crate::{Fault, RetryAfter, Script, TlsIdentity, digest, lock};

/// The bytes sent by [`Fault::Garbage`] instead of a response.
pub const GARBAGE: &[u8] =
    b"\x00\x01\x02\xffgarbage: this is not HTTP at all\r\n\xde\xad\xbe\xef\r\n\r\n";

/// Header selecting a fault: `x-chaos-fault: <name>[?<params>]`.
pub const FAULT_HEADER: &str = "x-chaos-fault";

/// One request as received by the chaos server, recorded after its body was
/// read (completely, unless the client gave up).
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Request method.
    pub method: Method,
    /// Request path, without the query.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// The `idempotency-key` header, if present and valid UTF-8.
    pub idempotency_key: Option<String>,
    /// The `x-request-id` header, if present and valid UTF-8.
    pub request_id: Option<String>,
    /// Every request header as received, e.g. to check which deadline header a client sent.
    pub headers: http::HeaderMap,
    /// Number of body bytes received.
    pub body_len: u64,
    /// [`digest`] of the body bytes received.
    pub body_digest: u64,
    /// Whether the body was received up to its end (false if the client
    /// aborted mid-body).
    pub body_complete: bool,
    /// Name of the fault applied ([`Fault::name`]), or `"bad-request"`.
    pub fault: &'static str,
    /// When the body had been read (tokio clock).
    pub at: Instant,
}

pub(crate) struct Shared {
    routes: Mutex<Vec<(String, Script)>>,
    log: Mutex<Vec<Delivery>>,
    connections: AtomicU64,
}

impl Shared {
    fn route(&self, path: &str) -> Fault {
        let mut routes = lock(&self.routes);
        let best = routes
            .iter_mut()
            .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len());
        match best {
            Some((_, script)) => script.next_fault(Instant::now()),
            None => Fault::Ok,
        }
    }
}

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

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
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

    /// The ordered log of every request received since start or the last
    /// [`ChaosServer::reset_counts`].
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.shared.log).clone()
    }

    /// Number of requests received.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.log).len()
    }

    /// Number of requests with this method (e.g. `"POST"` or `Method::POST`)
    /// and exactly this path (without query).
    pub fn count(&self, method: impl AsRef<str>, path: &str) -> usize {
        let method = method.as_ref();
        self.count_where(|d| d.method.as_str() == method && d.path == path)
    }

    /// Number of requests with exactly this path, any method.
    pub fn count_path(&self, path: &str) -> usize {
        self.count_where(|d| d.path == path)
    }

    /// Number of requests carrying `idempotency-key: <key>`.
    pub fn count_key(&self, key: &str) -> usize {
        self.count_where(|d| d.idempotency_key.as_deref() == Some(key))
    }

    /// Number of requests carrying `x-request-id: <id>`.
    pub fn count_request_id(&self, id: &str) -> usize {
        self.count_where(|d| d.request_id.as_deref() == Some(id))
    }

    fn count_where(&self, f: impl Fn(&Delivery) -> bool) -> usize {
        lock(&self.shared.log).iter().filter(|d| f(d)).count()
    }

    /// Number of TCP connections accepted (including ones whose TLS
    /// handshake failed).
    pub fn connection_count(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Clears the delivery log and the connection counter.
    pub fn reset_counts(&self) {
        lock(&self.shared.log).clear();
        self.shared.connections.store(0, Ordering::Relaxed);
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

struct ConnCtx {
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
}

/// Binds a tokio listener with `SO_REUSEADDR` (so the port can be re-bound
/// while old connections sit in `TIME_WAIT`).
pub(crate) fn bind_reuse(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

enum Event {
    Accepted(io::Result<TcpStream>),
    Command(Option<Cmd>),
    Joined,
    Rebind,
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    ctx: Arc<ConnCtx>,
    mut cmds: mpsc::Receiver<Cmd>,
) {
    let mut listener = Some(listener);
    let mut conns = JoinSet::new();
    let mut up_at: Option<Instant> = None;
    loop {
        let event = match &listener {
            Some(l) => tokio::select! {
                r = l.accept() => Event::Accepted(r.map(|(s, _)| s)),
                Some(_) = conns.join_next(), if !conns.is_empty() => Event::Joined,
                c = cmds.recv() => Event::Command(c),
            },
            None => tokio::select! {
                () = tokio::time::sleep_until(up_at.unwrap_or_else(Instant::now)), if up_at.is_some() => Event::Rebind,
                Some(_) = conns.join_next(), if !conns.is_empty() => Event::Joined,
                c = cmds.recv() => Event::Command(c),
            },
        };
        match event {
            Event::Accepted(Ok(stream)) => {
                ctx.shared.connections.fetch_add(1, Ordering::Relaxed);
                conns.spawn(serve_conn(stream, ctx.clone()));
            }
            Event::Accepted(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Event::Joined => {}
            Event::Command(None) => return,
            Event::Command(Some(Cmd::Down { up_after, ack })) => {
                listener = None;
                conns.abort_all();
                up_at = up_after.map(|d| Instant::now() + d);
                tracing::debug!(%addr, ?up_after, "chaos server down");
                let _ = ack.send(());
            }
            Event::Command(Some(Cmd::Up { ack })) => {
                let result = if listener.is_some() {
                    Ok(())
                } else {
                    bind_reuse(addr).map(|l| {
                        listener = Some(l);
                        up_at = None;
                        tracing::debug!(%addr, "chaos server up");
                    })
                };
                let _ = ack.send(result);
            }
            Event::Rebind => match bind_reuse(addr) {
                Ok(l) => {
                    listener = Some(l);
                    up_at = None;
                    tracing::debug!(%addr, "chaos server up");
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "re-bind failed, retrying");
                    up_at = Some(Instant::now() + Duration::from_millis(50));
                }
            },
        }
    }
}

async fn serve_conn(tcp: TcpStream, ctx: Arc<ConnCtx>) {
    let _ = tcp.set_nodelay(true);
    let stream = match &ctx.tls {
        None => Stream::Plain(tcp),
        Some(acceptor) => match acceptor.accept(tcp).await {
            Ok(s) => Stream::Tls(Box::new(s)),
            Err(e) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                return;
            }
        },
    };
    let ctl = Arc::new(ConnCtl::default());
    let io = TokioIo::new(ChaosIo::new(stream, ctl.clone()));
    let shared = ctx.shared.clone();
    let svc_ctl = ctl.clone();
    let svc = service_fn(move |req| handle(req, shared.clone(), svc_ctl.clone()));
    let builder = auto::Builder::new(TokioExecutor::new());
    {
        let conn = builder.serve_connection(io, svc);
        tokio::pin!(conn);
        let mut graceful = false;
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "connection ended with error");
                    }
                    break;
                }
                () = ctl.notify.notified() => {
                    if ctl.action().is_some() {
                        break;
                    }
                    if ctl.graceful_wanted() && !graceful {
                        graceful = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    if graceful {
                        ctl.graceful_started();
                    }
                }
            }
        }
    }
    // The hyper connection (and with it the IO) is dropped here; if a handler
    // asked for an action, the IO handed the raw stream back.
    let (Some(action), Some(mut stream)) = (ctl.action(), ctl.take_stream()) else {
        return;
    };
    match action {
        Action::Reset => {
            if let Err(e) = socket2::SockRef::from(stream.tcp()).set_linger(Some(Duration::ZERO)) {
                tracing::warn!(error = %e, "SO_LINGER failed; closing without RST");
            }
            drop(stream);
        }
        Action::Close => {
            let _ = timeout(Duration::from_secs(1), stream.shutdown()).await;
        }
        Action::Garbage => {
            let _ = timeout(Duration::from_secs(1), async {
                stream.write_all(GARBAGE).await?;
                stream.shutdown().await
            })
            .await;
        }
        Action::GoAway { last_stream_id } => {
            if !ctl.write_at_boundary() {
                // hyper was cut off in the middle of a frame; a frame of ours would be read as
                // the rest of it. Closing says less but nothing false.
                tracing::warn!("GOAWAY fault: the connection was mid-frame; closing instead");
                let _ = timeout(Duration::from_secs(1), stream.shutdown()).await;
                return;
            }
            let _ = timeout(Duration::from_secs(1), async {
                stream.write_all(&goaway_frame(last_stream_id)).await?;
                stream.flush().await?;
                stream.shutdown().await
            })
            .await;
            // Read until the client closes, as a server that sent GOAWAY does: closing with its
            // bytes unread would reset the connection, and the reset could overtake the GOAWAY.
            let _ = timeout(Duration::from_secs(1), async {
                let mut scratch = [0u8; 4096];
                while matches!(stream.read(&mut scratch).await, Ok(n) if n > 0) {}
            })
            .await;
        }
    }
}

/// An HTTP/2 `GOAWAY` frame (RFC 9113 §6.8) with error code `NO_ERROR`.
fn goaway_frame(last_stream_id: u32) -> [u8; 17] {
    let mut frame = [0u8; 17];
    // Length 8, type 0x7, no flags, stream 0.
    frame[..9].copy_from_slice(&[0, 0, 8, 0x7, 0, 0, 0, 0, 0]);
    frame[9..13].copy_from_slice(&(last_stream_id & 0x7fff_ffff).to_be_bytes());
    // Error code NO_ERROR (0): bytes 13..17 stay zero.
    frame
}

struct ReadBody {
    len: u64,
    digest: u64,
    complete: bool,
    kept: Option<Vec<u8>>,
}

async fn read_body(mut body: Incoming, keep: bool) -> ReadBody {
    let mut out = ReadBody {
        len: 0,
        digest: digest::OFFSET,
        complete: true,
        kept: keep.then(Vec::new),
    };
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "request body aborted");
                out.complete = false;
                break;
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    out.len += data.len() as u64;
                    out.digest = digest::update(out.digest, &data);
                    if let Some(kept) = &mut out.kept {
                        if kept.len() + data.len() <= MAX_BODY {
                            kept.extend_from_slice(&data);
                        } else {
                            out.kept = None;
                        }
                    }
                }
            }
        }
    }
    out
}

fn header_string(parts: &http::request::Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn select_fault(parts: &http::request::Parts, shared: &Shared) -> Result<Fault, String> {
    let query = parts.uri.query().unwrap_or("");
    if let Some(h) = parts.headers.get(FAULT_HEADER) {
        let h = h
            .to_str()
            .map_err(|_| format!("{FAULT_HEADER} header is not visible ASCII"))?
            .trim();
        let (name, header_query) = h.split_once('?').unwrap_or((h, ""));
        let mut params = parse_query(query)?;
        params.extend(parse_query(header_query)?);
        return Fault::parse(name.trim(), &params);
    }
    if let Some(rest) = parts.uri.path().strip_prefix("/fault/") {
        return Fault::parse(rest.trim_end_matches('/'), &parse_query(query)?);
    }
    Ok(shared.route(parts.uri.path()))
}

/// What a handler may fail with: hyper answers an HTTP/2 request whose service failed with an
/// `h2::Error` by resetting the stream with that error's reason.
type HandlerError = Box<dyn std::error::Error + Send + Sync>;

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
) -> Result<Response<ChaosBody>, HandlerError> {
    let (parts, body) = req.into_parts();
    let chosen = select_fault(&parts, &shared);
    let h2 = parts.version == Version::HTTP_2;
    match chosen {
        Ok(Fault::RefusedStream) if h2 => {
            tracing::debug!(path = parts.uri.path(), "refusing the stream");
            return Err(Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM)));
        }
        Ok(Fault::GoAway) if h2 => {
            return match ctl.h2_decide_goaway() {
                Some(last_stream_id) => {
                    tracing::debug!(path = parts.uri.path(), last_stream_id, "GOAWAY");
                    Ok(take_over(&ctl, Action::GoAway { last_stream_id }).await)
                }
                // Another request's GOAWAY is on its way; this connection is going.
                None => Ok(std::future::pending().await),
            };
        }
        Ok(Fault::RefusedStream | Fault::GoAway) => {
            // HTTP/1.1 cannot say "not processed": read the request, keep no record of it,
            // close without a response.
            read_body(body, false).await;
            return Ok(take_over(&ctl, Action::Close).await);
        }
        _ => {}
    }
    if h2 && !ctl.h2_begin_processing() {
        // A GOAWAY sent on this connection may cover this stream: it must not be delivered.
        return Ok(std::future::pending().await);
    }
    let read = read_body(body, matches!(chosen, Ok(Fault::Echo))).await;
    let delivery = Delivery {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        idempotency_key: header_string(&parts, "idempotency-key"),
        request_id: header_string(&parts, "x-request-id"),
        headers: parts.headers.clone(),
        body_len: read.len,
        body_digest: read.digest,
        body_complete: read.complete,
        fault: chosen.as_ref().map_or("bad-request", Fault::name),
        at: Instant::now(),
    };
    tracing::debug!(method = %delivery.method, path = %delivery.path, fault = delivery.fault, "request");
    lock(&shared.log).push(delivery);
    let fault = match chosen {
        Ok(f) => f,
        Err(msg) => {
            let resp = simple(
                StatusCode::BAD_REQUEST,
                format!("bad chaos request: {msg}\n"),
            );
            return Ok(with_info(resp, "bad-request", &read));
        }
    };
    let name = fault.name();
    if fault == Fault::GoAwayGraceful {
        ctl.graceful_shutdown().await;
    }
    let resp = respond(fault, &read, &ctl).await;
    Ok(with_info(resp, name, &read))
}

fn simple(status: StatusCode, body: impl Into<Bytes>) -> Response<ChaosBody> {
    let mut resp = Response::new(ChaosBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn with_info(mut resp: Response<ChaosBody>, fault: &str, read: &ReadBody) -> Response<ChaosBody> {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(fault) {
        h.insert(FAULT_HEADER, v);
    }
    h.insert("x-chaos-body-len", HeaderValue::from(read.len));
    if let Ok(v) = HeaderValue::from_str(&format!("{:016x}", read.digest)) {
        h.insert("x-chaos-body-digest", v);
    }
    resp
}

async fn take_over(ctl: &ConnCtl, action: Action) -> Response<ChaosBody> {
    ctl.request(action);
    // The connection task drops this connection; never answer.
    std::future::pending().await
}

async fn respond(fault: Fault, read: &ReadBody, ctl: &ConnCtl) -> Response<ChaosBody> {
    match fault {
        Fault::Ok | Fault::GoAwayGraceful => simple(StatusCode::OK, "ok\n"),
        Fault::Status {
            code,
            retry_after,
            body_len,
        } => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = match body_len {
                Some(n) => Bytes::from(vec![b'x'; n]),
                None => Bytes::from(format!("status {code}\n")),
            };
            let mut resp = simple(status, body);
            let value = match retry_after {
                None => None,
                Some(RetryAfter::Seconds(n)) => Some(HeaderValue::from(n)),
                Some(RetryAfter::DateIn(n)) => {
                    let at = SystemTime::now() + Duration::from_secs(n);
                    HeaderValue::from_str(&httpdate::fmt_http_date(at)).ok()
                }
                Some(RetryAfter::Raw(s)) => HeaderValue::from_str(&s).ok(),
            };
            if let Some(v) = value {
                resp.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
            resp
        }
        Fault::ResetAfterRead => take_over(ctl, Action::Reset).await,
        Fault::CloseAfterRead => take_over(ctl, Action::Close).await,
        Fault::Garbage => take_over(ctl, Action::Garbage).await,
        Fault::StallHeaders { duration } => match duration {
            None => std::future::pending().await,
            Some(d) => {
                tokio::time::sleep(d).await;
                simple(StatusCode::OK, "ok\n")
            }
        },
        Fault::StallBody {
            sent,
            total,
            duration,
        } => {
            let data = Bytes::from(vec![b'x'; total]);
            let sent = sent.min(total);
            let mut body = ChaosBody::empty();
            body.push(data.slice(..sent));
            body.pause(duration);
            body.push(data.slice(sent..));
            let mut resp = simple(StatusCode::OK, Bytes::new());
            *resp.body_mut() = body;
            resp
        }
        Fault::Drip {
            chunk,
            interval,
            total,
        } => {
            let data = Bytes::from(vec![b'x'; total]);
            let mut body = ChaosBody::empty();
            let mut start = 0;
            while start < total {
                if start > 0 {
                    body.pause(Some(interval));
                }
                let end = (start + chunk.max(1)).min(total);
                body.push(data.slice(start..end));
                start = end;
            }
            let mut resp = simple(StatusCode::OK, Bytes::new());
            *resp.body_mut() = body;
            resp
        }
        Fault::Echo => match &read.kept {
            Some(bytes) => simple(StatusCode::OK, bytes.clone()),
            None => simple(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("echo: body larger than {MAX_BODY} bytes\n"),
            ),
        },
        // `handle` answers these before any delivery.
        Fault::RefusedStream | Fault::GoAway => take_over(ctl, Action::Close).await,
    }
}
