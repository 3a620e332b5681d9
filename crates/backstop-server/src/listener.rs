//! [`AxumListener`]: the server's connection rules for `axum::serve`, when an application keeps
//! axum's own server instead of [`Server`](crate::Server).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::{Listener, ListenerExt, TapIo};
use backstop_timeout::{IdleIo, ServerActivity, ServerIdleTimeout};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::accept::{Accepted, Acceptor};
use crate::config::ServeConfig;
use crate::serve::{OpenConnection, ServerStats};

/// What [`listener`] returns: an [`AxumListener`] passed through axum's
/// [`ListenerExt::tap_io`] with a tap that does nothing.
///
/// The tap is what makes `ConnectInfo<SocketAddr>` work: axum implements
/// `Connected<IncomingStream<'_, L>>` for `SocketAddr` only when `L` is tokio's `TcpListener` or a
/// `TapIo`, and the orphan rule keeps any other crate from adding a listener to that list.
pub type ConnectInfoListener = TapIo<AxumListener, fn(&mut AcceptedStream)>;

/// A listener for `axum::serve` under the server's connection rules, ready for
/// `into_make_service_with_connect_info::<SocketAddr>()`: shorthand for
/// [`AxumListener::new`]`(tcp, config).`[`with_connect_info`](AxumListener::with_connect_info)`()`.
/// Wrap the make-service in [`track_requests`](crate::track_requests) so that a slow handler does
/// not lose its connection at the idle bound.
///
/// ```
/// use std::net::SocketAddr;
/// use std::time::Duration;
/// use axum::{Router, extract::ConnectInfo, routing::get};
/// use backstop_server::{ServeConfig, track_requests};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = ServeConfig::builder()
///     .idle_timeout(Some(Duration::from_secs(60)))
///     .max_connections(5_000)
///     .build()?;
/// let app = Router::new().route(
///     "/",
///     get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { format!("hello {peer}\n") }),
/// );
/// let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let listener = backstop_server::listener(tcp, config);
/// axum::serve(
///     listener,
///     track_requests(app.into_make_service_with_connect_info::<SocketAddr>()),
/// )
/// // A real server passes `backstop_server::shutdown_signal()`: SIGTERM or Ctrl-C.
/// .with_graceful_shutdown(async {})
/// .await?;
/// # Ok(())
/// # }
/// ```
pub fn listener(tcp: TcpListener, config: ServeConfig) -> ConnectInfoListener {
    AxumListener::new(tcp, config).with_connect_info()
}

/// The connection rules of [`Server`](crate::Server), as an [`axum::serve::Listener`], for an
/// application served by `axum::serve`. With the `axum` feature.
///
/// What it applies from the [`ServeConfig`]:
///
/// - **Accept errors** never reach axum (whose `Listener::accept` has no error to return):
///   `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`… are counted, logged at warn and backed off
///   (doubling from `accept_backoff` up to one second); `ECONNABORTED` and the like are skipped.
///   The same code as `Server`'s accept loop.
/// - **The connection cap** (`max_connections`): each [`AcceptedStream`] holds a place until it is
///   dropped, which axum does when the connection ends. At the cap, `accept` waits; new clients
///   wait in the listen backlog.
/// - **Silent clients** (`idle_timeout`): each stream is under backstop's idle rule from its first
///   read, so a client that connects and says nothing, or stops reading a response, is dropped
///   after the idle period.
/// - **Slow handlers are not cut**, if the make-service given to `axum::serve` is wrapped in
///   [`track_requests`](crate::track_requests): it tells each stream when a request is in
///   progress, and the read timer pauses meanwhile, as under `Server`. Without it, hyper's read
///   kept pending on an HTTP/1 connection (to notice a client hanging up) is timed while the
///   handler thinks, and a handler that takes longer than the idle period before its response
///   starts loses its connection.
/// - `TCP_NODELAY` on every stream, as `Server` sets it.
///
/// - **Stalled request bodies**, with `track_requests` too: a handler waiting longer than the idle
///   period for the next bytes of its request body gets an error, as [`IncomingBody`](crate::IncomingBody)
///   gives under `Server`. (Without it, the stream's read timer catches a body that stops, but
///   not one trickled a byte now and then.)
///
/// What differs from [`Server`](crate::Server), because the HTTP side is axum's own server, which
/// backstop does not see into:
///
/// - **No header read timeout**: axum sets no timer on hyper, so a request head sent one byte at
///   a time is bounded only by the idle period between bytes.
/// - **Shutdown** is axum's `with_graceful_shutdown`: it waits for every connection without
///   `drain_timeout` (bound it with `tokio::time::timeout`), and `http2_*` settings, TLS and the
///   [`PeerAddr`](crate::PeerAddr) extension do not apply.
/// - [`stats`](Self::stats) counts accepted connections, accept errors and open connections;
///   `connection_errors` stays 0, as the listener does not see how a connection ends.
///
/// For `ConnectInfo<SocketAddr>` use [`listener`] (or [`with_connect_info`](Self::with_connect_info)),
/// which returns this listener wrapped for it. Either works with [`track_requests`](crate::track_requests).
///
/// ```
/// use std::net::SocketAddr;
/// use axum::{Router, routing::get};
/// use backstop_server::{AxumListener, ServeConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let listener = AxumListener::new(tcp, ServeConfig::default());
/// let stats = listener.stats();
/// let app = Router::new().route("/", get(|| async { "hello\n" }));
/// axum::serve(listener, app).with_graceful_shutdown(async {}).await?;
/// assert_eq!(stats.open_connections(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AxumListener {
    acceptor: Acceptor,
    idle: Option<ServerIdleTimeout>,
    stats: ServerStats,
}

impl AxumListener {
    /// A listener on an already bound `tcp`, under `config`'s connection rules.
    pub fn new(tcp: TcpListener, config: ServeConfig) -> AxumListener {
        let stats = ServerStats::default();
        AxumListener {
            acceptor: Acceptor::new(tcp, &config, stats.clone()),
            idle: config.idle,
            stats,
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.acceptor.local_addr()
    }

    /// A live view of the counters (`connection_errors` stays 0: see the type's docs).
    pub fn stats(&self) -> ServerStats {
        self.stats.clone()
    }

    /// This listener, wrapped so that axum's `ConnectInfo<SocketAddr>` works (see
    /// [`ConnectInfoListener`]).
    pub fn with_connect_info(self) -> ConnectInfoListener {
        self.tap_io(untouched as fn(&mut AcceptedStream))
    }
}

/// The tap of [`ConnectInfoListener`]: the stream is ready as it is.
fn untouched(_: &mut AcceptedStream) {}

impl Listener for AxumListener {
    type Io = AcceptedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (AcceptedStream, SocketAddr) {
        let Some(Accepted { stream, peer, open }) = self.acceptor.accept().await else {
            // The cap's semaphore is never closed. Should it be, accepting nothing more is what
            // `Server` does too; axum's trait has no way to say so.
            return std::future::pending().await;
        };
        // Without `track_requests` around the make-service, the activity stays idle and the
        // stream is timed as by `ServerIdleTimeout::wrap`.
        let (io, activity) = match self.idle {
            Some(idle) => {
                let (io, activity) = idle.wrap_tracked(stream);
                (Io::Timed(io), activity)
            }
            None => (Io::Plain(stream), ServerActivity::new()),
        };
        let stream = AcceptedStream {
            io,
            activity,
            idle: self.idle.map(|idle| idle.period()),
            _open: open,
        };
        (stream, peer)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.acceptor.local_addr()
    }
}

/// A connection accepted by [`AxumListener`]: the TCP stream under the idle rule, holding its
/// place under the connection cap until dropped.
#[derive(Debug)]
pub struct AcceptedStream {
    io: Io,
    /// Requests in progress on this connection, told by [`track_requests`](crate::track_requests).
    pub(crate) activity: ServerActivity,
    /// The idle period, for [`track_requests`](crate::track_requests) to put request bodies under.
    pub(crate) idle: Option<Duration>,
    _open: OpenConnection,
}

#[derive(Debug)]
enum Io {
    Timed(IdleIo<TcpStream>),
    // The idle timeout is off.
    Plain(TcpStream),
}

impl AcceptedStream {
    /// The TCP stream.
    pub fn get_ref(&self) -> &TcpStream {
        match &self.io {
            Io::Timed(io) => io.get_ref(),
            Io::Plain(io) => io,
        }
    }
}

impl AsyncRead for AcceptedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Timed(io) => Pin::new(io).poll_read(cx, buf),
            Io::Plain(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for AcceptedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Timed(io) => Pin::new(io).poll_write(cx, buf),
            Io::Plain(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Timed(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Io::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Timed(io) => io.is_write_vectored(),
            Io::Plain(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Timed(io) => Pin::new(io).poll_flush(cx),
            Io::Plain(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Timed(io) => Pin::new(io).poll_shutdown(cx),
            Io::Plain(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}
