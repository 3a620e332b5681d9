//! [`Server`]: an accept loop that never dies from one bad connection, and drains on shutdown.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backstop_timeout::IdleTimeoutLayer;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, timeout};
use tokio_rustls::TlsAcceptor;
use tower_layer::Layer;
use tower_service::Service;

use crate::config::ServeConfig;

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
}

/// A live view of a running server's counters, for health pages and tests.
#[derive(Debug, Clone, Default)]
pub struct ServerStats(Arc<Counters>);

impl ServerStats {
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
}

/// An HTTP/1.1 + HTTP/2 server over a [`TcpListener`] (optionally TLS) that stays up.
///
/// - **Accept errors** (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`…) are logged at warn and backed
///   off (exponentially, from [`ServeConfig::accept_backoff`] up to one second) instead of ending
///   the loop or spinning; errors that concern only the one connection (`ECONNABORTED`, reset
///   during the handshake) are skipped at once.
/// - **Every connection** runs in its own task; its errors are logged at debug and counted, never
///   fatal.
/// - **Silent clients** are dropped: every stream is wrapped in backstop's idle timeout from its
///   very first read (hyper's own header read timeout does not cover the first read of a new
///   connection), and the header read timeout bounds a slow request head.
/// - **Shutdown** stops accepting, asks every connection to finish its in-flight requests (HTTP/1
///   stops keep-alive, HTTP/2 sends GOAWAY), and waits up to the drain timeout.
///
/// Works with any `tower::Service<Request<Incoming>>` that is `Clone`: an axum `Router`, a
/// `ServiceBuilder` stack, or a `service_fn`.
///
/// ```
/// use std::convert::Infallible;
/// use backstop_server::{Server, ServeConfig};
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use hyper::body::Incoming;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let service = tower::service_fn(|_req: Request<Incoming>| async {
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
    /// before HTTP. Offer `h2` and `http/1.1` in the acceptor's ALPN to get both.
    #[must_use]
    pub fn tls(mut self, acceptor: TlsAcceptor) -> Server {
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
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
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
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
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
        let graceful = GracefulShutdown::new();
        let mut backoff = config.accept_backoff;
        tokio::pin!(signal);

        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut signal => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => {
                    backoff = config.accept_backoff;
                    accepted
                }
                Err(err) if is_per_connection(&err) => {
                    tracing::debug!(error = %err, "accept failed for one connection; going on");
                    continue;
                }
                Err(err) => {
                    stats.0.accept_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        error = %err,
                        backoff_ms = backoff.as_millis() as u64,
                        "accept failed (out of file descriptors or memory?); backing off"
                    );
                    // Keep draining the signal while we wait, so a shutdown is not delayed.
                    tokio::select! {
                        biased;
                        () = &mut signal => break,
                        () = sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    continue;
                }
            };
            stats.0.accepted.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let conn = Connection {
                http: Arc::clone(&http),
                service: TowerToHyperService::new(service.clone()),
                tls: tls.clone(),
                idle,
                handshake_timeout: config.header_read_timeout,
                stats: stats.clone(),
                peer,
            };
            let watcher = graceful.watcher();
            tokio::spawn(conn.run(stream, watcher));
        }

        drop(listener);
        let drained = timeout(config.drain_timeout, graceful.shutdown())
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

/// The longest pause after a failed accept.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Accept errors that concern only the connection being accepted: the next accept may succeed at
/// once.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
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

struct Connection<S> {
    http: Arc<auto::Builder<TokioExecutor>>,
    service: TowerToHyperService<S>,
    tls: Option<TlsAcceptor>,
    idle: Option<IdleTimeoutLayer>,
    handshake_timeout: Duration,
    stats: ServerStats,
    peer: SocketAddr,
}

impl<S, B> Connection<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    async fn run(self, stream: TcpStream, watcher: hyper_util::server::graceful::Watcher) {
        let Connection {
            http,
            service,
            tls,
            idle,
            handshake_timeout,
            stats,
            peer,
        } = self;
        // With an idle timeout, the stream is tracked: a request being handled pauses the read
        // timer, so a handler that thinks longer than the period is not cut off.
        let result = match (idle, tls) {
            (Some(idle), Some(tls)) => {
                let (io, activity) = idle.wrap_server_tracked(stream);
                match handshake(&tls, io, handshake_timeout).await {
                    Ok(stream) => serve_http(&http, stream, activity.layer(service), watcher).await,
                    Err(err) => Err(err),
                }
            }
            (Some(idle), None) => {
                let (io, activity) = idle.wrap_server_tracked(stream);
                serve_http(&http, io, activity.layer(service), watcher).await
            }
            (None, Some(tls)) => match handshake(&tls, stream, handshake_timeout).await {
                Ok(stream) => serve_http(&http, stream, service, watcher).await,
                Err(err) => Err(err),
            },
            (None, None) => serve_http(&http, stream, service, watcher).await,
        };
        if let Err(err) = result {
            stats.0.connection_errors.fetch_add(1, Ordering::Relaxed);
            let err = backstop_classify::Error::classify(err, backstop_classify::Phase::Send);
            tracing::debug!(%peer, kind = %err.kind(), error = %err, "connection ended with an error");
        }
    }
}

/// The TLS handshake, bounded: a client that opens TCP and never finishes TLS is dropped.
async fn handshake<I>(
    tls: &TlsAcceptor,
    stream: I,
    bound: Duration,
) -> Result<tokio_rustls::server::TlsStream<I>, BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match timeout(bound, tls.accept(stream)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(err)) => Err(err.into()),
        Err(_) => Err(Box::new(backstop_classify::Error::new(
            backstop_classify::Kind::TimedOut(backstop_classify::Timer::Header),
            backstop_classify::Phase::Tls,
        ))),
    }
}

async fn serve_http<I, S, B>(
    http: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
) -> Result<(), BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let conn = http.serve_connection_with_upgrades(TokioIo::new(io), service);
    watcher.watch(conn).await
}
