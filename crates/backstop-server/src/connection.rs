//! One accepted connection, from the TLS handshake to its end: the idle rule on its stream, the
//! request preparation, HTTP/1 or HTTP/2, and its part in a graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backstop_timeout::{ServerActivity, ServerIdleTimeout};
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
#[cfg(feature = "tls")]
use tokio::time::timeout;
use tower_layer::Layer;
use tower_service::Service;

use crate::request::{IncomingBody, Prepare};
use crate::serve::{BoxError, OpenConnection, ServerStats};

/// What terminates TLS on accepted streams: tokio-rustls' acceptor with the `tls` feature; without
/// it, a type with no values, so a server cannot be told to serve TLS.
#[cfg(feature = "tls")]
pub(crate) type TlsAcceptor = tokio_rustls::TlsAcceptor;
/// What terminates TLS on accepted streams: without the `tls` feature, nothing can.
#[cfg(not(feature = "tls"))]
pub(crate) type TlsAcceptor = std::convert::Infallible;

/// What the accept loop hands the task serving one connection.
pub(crate) struct Connection<S> {
    pub(crate) http: Arc<auto::Builder<TokioExecutor>>,
    pub(crate) service: S,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) idle: Option<ServerIdleTimeout>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) stats: ServerStats,
    pub(crate) peer: SocketAddr,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) open: OpenConnection,
}

impl<S, B> Connection<S>
where
    S: Service<Request<IncomingBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    pub(crate) async fn run(self, stream: TcpStream) {
        let stats = self.stats.clone();
        let peer = self.peer;
        // With an idle timeout, the stream is tracked: a request being handled pauses the read
        // timer, so a handler that thinks longer than the period is not cut off. Without one, the
        // activity still tells shutdown whether the connection has a request in progress.
        let result = match self.idle {
            Some(idle) => {
                let (io, activity) = idle.wrap_tracked(stream);
                self.serve(io, activity).await
            }
            None => self.serve(stream, ServerActivity::new()).await,
        };
        if let Err(err) = result {
            stats.connection_failed();
            let err = backstop_classify::Error::classify(err, backstop_classify::Phase::Send);
            tracing::debug!(%peer, kind = %err.kind(), error = %err, "connection ended with an error");
        }
    }

    async fn serve<I>(self, io: I, activity: ServerActivity) -> Result<(), BoxError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // Only the TLS handshake reads the handshake bound and borrows the shutdown signal.
        #[cfg_attr(not(feature = "tls"), allow(unused_mut, unused_variables))]
        let Connection {
            http,
            service,
            tls,
            idle,
            handshake_timeout,
            stats: _,
            peer,
            mut shutdown,
            open,
        } = self;
        let service = TowerToHyperService::new(activity.clone().layer(Prepare {
            inner: service,
            peer,
            body_idle: idle.map(|idle| idle.period()),
        }));
        let result = match tls {
            #[cfg(not(feature = "tls"))]
            Some(never) => match never {},
            #[cfg(feature = "tls")]
            Some(tls) => {
                // No request can be in progress during the handshake: shutdown ends it at once.
                let stream = tokio::select! {
                    stream = handshake(&tls, io, handshake_timeout) => stream?,
                    () = shutting_down(&mut shutdown) => return Ok(()),
                };
                serve_http(&http, stream, service, &activity, shutdown).await
            }
            None => serve_http(&http, io, service, &activity, shutdown).await,
        };
        drop(open);
        result
    }
}

/// Completes when the server shuts down (or is dropped).
async fn shutting_down(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The TLS handshake, bounded: a client that opens TCP and never finishes TLS is dropped.
#[cfg(feature = "tls")]
async fn handshake<I>(
    tls: &TlsAcceptor,
    stream: I,
    bound: Duration,
) -> Result<tokio_rustls::server::TlsStream<I>, BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin,
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

/// Serves one connection until it ends; on shutdown, closes it at once if no request is in
/// progress, or lets its in-flight requests finish.
async fn serve_http<I, S, B>(
    http: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    activity: &ServerActivity,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<hyper::body::Incoming>, Response = Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let conn = http.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        // The connection first: bytes that arrived with the shutdown are still read, so a
        // request head already complete reaches the service and counts as in progress.
        biased;
        result = conn.as_mut() => return result,
        () = shutting_down(&mut shutdown) => {}
    }
    if !activity.is_busy() {
        // Idle keep-alive, a half-sent head, a silent client: nothing to drain. Waiting for
        // them (up to the header read or idle timeout) would hold the whole shutdown.
        return Ok(());
    }
    conn.as_mut().graceful_shutdown();
    conn.await
}
