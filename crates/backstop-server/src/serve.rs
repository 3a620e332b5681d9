//! [`Server`]: an accept loop that never dies from one bad connection, and drains on shutdown.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::timeout;
use tower_service::Service;

use crate::accept::{Accepted, Acceptor};
use crate::config::ServeConfig;
use crate::connection::{Connection, TlsAcceptor};
use crate::request::IncomingBody;

/// A boxed error, as hyper and tower pass them around.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a server did, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeSummary {
    /// Connections accepted.
    pub accepted: u64,
    /// Accept calls that failed (e.g. `EMFILE`); the loop backed off and went on.
    pub accept_errors: u64,
    /// Connections that ended with an error (idle timeout, reset, TLS failure, malformed HTTP…),
    /// logged and otherwise ignored.
    pub connection_errors: u64,
    /// Whether every in-flight connection finished within the drain timeout.
    pub drained: bool,
}

/// Counters shared with the connection tasks.
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    accept_errors: AtomicU64,
    connection_errors: AtomicU64,
    open: AtomicU64,
}

/// A live view of a running server's counters, for health pages and tests.
#[derive(Debug, Clone, Default)]
pub struct ServerStats(Arc<Counters>);

impl ServerStats {
    /// Counts a connection that ended with an error (from its task, `connection.rs`).
    pub(crate) fn connection_failed(&self) {
        self.0.connection_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an accepted connection (`accept.rs`).
    pub(crate) fn count_accepted(&self) {
        self.0.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed accept call (`accept.rs`).
    pub(crate) fn count_accept_error(&self) {
        self.0.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.0.accepted.load(Ordering::Relaxed)
    }

    /// Failed accept calls so far.
    pub fn accept_errors(&self) -> u64 {
        self.0.accept_errors.load(Ordering::Relaxed)
    }

    /// Connections that ended with an error so far.
    pub fn connection_errors(&self) -> u64 {
        self.0.connection_errors.load(Ordering::Relaxed)
    }

    /// Connections open now (at most [`ServeConfig::max_connections`]).
    pub fn open_connections(&self) -> u64 {
        self.0.open.load(Ordering::Relaxed)
    }
}

/// Counts a connection open from its acceptance until its task ends, and holds its place under
/// the connection cap.
#[derive(Debug)]
pub(crate) struct OpenConnection {
    stats: ServerStats,
    _slot: OwnedSemaphorePermit,
}

impl OpenConnection {
    pub(crate) fn new(stats: ServerStats, slot: OwnedSemaphorePermit) -> OpenConnection {
        stats.0.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection { stats, _slot: slot }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.stats.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An HTTP/1.1 + HTTP/2 server over a [`TcpListener`] (optionally TLS) that stays up.
///
/// - **Accept errors** (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`…) are logged at warn and backed
///   off (exponentially, from [`accept_backoff`](crate::ServeConfigBuilder::accept_backoff) up
///   to one second) instead of ending the loop or spinning; errors that concern only the one
///   connection (`ECONNABORTED`, reset during the handshake) are skipped at once.
/// - **Every connection** runs in its own task; its errors are logged at debug and counted, never
///   fatal.
/// - **Silent clients** are dropped: every stream is wrapped in backstop's idle timeout from its
///   very first read (hyper's own header read timeout does not cover the first read of a new
///   connection), and the header read timeout bounds a slow request head.
/// - **Trickling clients** are dropped too: a handler waiting longer than the idle period for the
///   next bytes of its request body gets an error ([`IncomingBody`]), answers, and the connection
///   closes — the client does not hold the handler and its load-shed slot until the deadline.
/// - **Connections are capped** ([`ServeConfig::max_connections`]): at the cap the loop stops
///   accepting until a connection ends; new clients wait in the listen backlog.
/// - **Every request** carries the client's address in its extensions: [`PeerAddr`], and with the
///   `axum` feature (on by default) axum's `ConnectInfo<SocketAddr>`.
/// - **Shutdown** stops accepting and closes at once every connection with no request in
///   progress (idle keep-alive, a request head still arriving, a TLS handshake); the others
///   finish their in-flight requests (HTTP/1 stops keep-alive, HTTP/2 sends GOAWAY) for up to
///   the drain timeout. The drain thus ends when the last real request does. A request whose
///   head is still in the kernel's buffers when its connection is closed was never seen, and a
///   client may send it again, as after any keep-alive close. [`shutdown_signal`] is the usual
///   trigger: it completes on `SIGTERM` or `SIGINT`.
///
/// Works with any `tower::Service<Request<IncomingBody>>` that is `Clone`: an axum `Router`, a
/// `ServiceBuilder` stack, or a `service_fn`.
///
/// [`PeerAddr`]: crate::PeerAddr
/// [`shutdown_signal`]: crate::shutdown_signal
///
/// ```
/// use std::convert::Infallible;
/// use backstop_server::{PeerAddr, IncomingBody, Server, ServeConfig};
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let service = tower::service_fn(|req: Request<IncomingBody>| async move {
///     let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
///     assert!(peer.is_some_and(|addr| addr.ip().is_loopback()));
///     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
/// });
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let server = Server::new(listener, ServeConfig::default());
/// let running = tokio::spawn(server.serve_with_shutdown(service, async {
///     let _ = stopped.await;
/// }));
/// // … serve traffic, then:
/// let _ = stop.send(());
/// let summary = running.await??;
/// assert!(summary.drained);
/// # Ok(())
/// # }
/// ```
pub struct Server {
    listener: TcpListener,
    config: ServeConfig,
    tls: Option<TlsAcceptor>,
    stats: ServerStats,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("config", &self.config)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Server {
    /// A server on an already bound listener.
    pub fn new(listener: TcpListener, config: ServeConfig) -> Server {
        Server {
            listener,
            config,
            tls: None,
            stats: ServerStats::default(),
        }
    }

    /// Binds `addr` and returns a server on it.
    pub async fn bind(addr: SocketAddr, config: ServeConfig) -> io::Result<Server> {
        Ok(Server::new(TcpListener::bind(addr).await?, config))
    }

    /// Serves TLS: every accepted stream does the handshake (bounded by the header read timeout)
    /// before HTTP. Offer `h2` and `http/1.1` in the acceptor's ALPN to get both. With the `tls`
    /// feature.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls(mut self, acceptor: tokio_rustls::TlsAcceptor) -> Server {
        self.tls = Some(acceptor);
        self
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A live view of the counters.
    pub fn stats(&self) -> ServerStats {
        self.stats.clone()
    }

    /// Serves until the process ends.
    pub async fn serve<S, B>(self, service: S) -> io::Result<ServeSummary>
    where
        S: Service<Request<IncomingBody>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.serve_with_shutdown(service, std::future::pending::<()>())
            .await
    }

    /// Serves until `signal` completes, then drains in-flight requests for up to the drain
    /// timeout.
    pub async fn serve_with_shutdown<S, B, F>(
        self,
        service: S,
        signal: F,
    ) -> io::Result<ServeSummary>
    where
        S: Service<Request<IncomingBody>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
        F: Future<Output = ()> + Send,
    {
        let Server {
            listener,
            config,
            tls,
            stats,
        } = self;
        let http = Arc::new(http_builder(&config));
        let idle = config.idle;
        // Every connection holds a receiver; the sender says "shut down", and its `closed()`
        // tells when the last connection has ended.
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut acceptor = Acceptor::new(listener, &config, stats.clone());
        tokio::pin!(signal);

        loop {
            // The signal first, also while the acceptor waits for a place or backs off, so a
            // shutdown is not delayed.
            let accepted = tokio::select! {
                biased;
                () = &mut signal => break,
                accepted = acceptor.accept() => accepted,
            };
            // The cap's semaphore is never closed; should it be, serving stops like on a signal.
            let Some(Accepted { stream, peer, open }) = accepted else {
                break;
            };
            // Without the `tls` feature the acceptor is `Option<Infallible>`, which is `Copy`.
            #[cfg_attr(not(feature = "tls"), allow(clippy::clone_on_copy))]
            let conn = Connection {
                http: Arc::clone(&http),
                service: service.clone(),
                tls: tls.clone(),
                idle,
                handshake_timeout: config.header_read_timeout,
                stats: stats.clone(),
                peer,
                shutdown: shutdown_rx.clone(),
                open,
            };
            tokio::spawn(conn.run(stream));
        }

        drop(acceptor);
        drop(shutdown_rx);
        shutdown.send_replace(true);
        let drained = timeout(config.drain_timeout, shutdown.closed())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                drain_timeout_ms = config.drain_timeout.as_millis() as u64,
                "connections still open after the drain timeout; abandoning them"
            );
        }
        Ok(ServeSummary {
            accepted: stats.accepted(),
            accept_errors: stats.accept_errors(),
            connection_errors: stats.connection_errors(),
            drained,
        })
    }
}

fn http_builder(config: &ServeConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.http2_max_concurrent_streams);
    if let Some(keep_alive) = config.http2_keep_alive {
        keep_alive.apply_to_server(&mut builder);
    }
    builder
}
