//! [`IdleTimeoutLayer`]: fails client connections, server connections and response bodies on
//! which nothing moves while something is awaited.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use backstop_classify::{BoxError, Error, Phase};
use http::Uri;
use hyper_util::client::legacy::connect::Connection;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::BodyIdleTimeoutLayer;
use crate::config::{ConfigError, check_duration};
use crate::io::{IdleConnection, IdleIo, Side};
use crate::keepalive::Http2KeepAlive;
use crate::server::{Activity, ServerActivity};

/// The longest idle period accepted; anything longer is a configuration mistake.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Fails connections on which no byte moves for the idle period while one is awaited.
///
/// One validated period, three places to apply it:
///
/// - **Client connections**: as a [`Layer`] over any connector (a `Service<Uri>`), every
///   connection's IO becomes an [`IdleConnection`]: it fails with `TimedOut(Idle)` when, after we
///   wrote a request, no byte comes back for the period, or when a write makes no progress for
///   it. A connection resting in hyper's pool is never timed out (see [`Side::Client`]).
/// - **Response bodies**: [`body_layer`](IdleTimeoutLayer::body_layer) fails a body that yields
///   no frame for the period mid-stream ([`Phase::ReadBody`]); a slow but steady drip never
///   trips it.
/// - **Server connections**: [`wrap_server`](IdleTimeoutLayer::wrap_server) wraps an accepted
///   stream (TCP, TLS, anything `AsyncRead + AsyncWrite`), so a client that connects and stays
///   silent — slowloris, a dead peer, a half-open connection — is dropped after the period, from
///   the very first read on, which hyper's `header_read_timeout` does not cover.
///
/// For long-lived HTTP/2 connections, pair it with [`http2_keep_alive`](Self::http2_keep_alive):
/// PINGs keep bytes moving on a live connection, so the idle timer only fires on a dead peer.
///
/// ```
/// use std::time::Duration;
/// use backstop_timeout::{ConnectTimeoutLayer, IdleTimeoutLayer, TcpConnector};
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use tower::ServiceBuilder;
///
/// let idle = IdleTimeoutLayer::new(Duration::from_secs(30))?;
/// let connector = ServiceBuilder::new()
///     .layer(ConnectTimeoutLayer::new(Duration::from_secs(3))?)
///     .layer(idle)
///     .service(TcpConnector::new());
/// let mut builder = Client::builder(TokioExecutor::new());
/// idle.http2_keep_alive().apply_to_client(&mut builder);
/// let client = ServiceBuilder::new()
///     .layer(idle.body_layer())
///     .service(builder.build::<_, http_body_util::Empty<bytes::Bytes>>(connector));
/// # drop(client);
/// # Ok::<(), backstop_timeout::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct IdleTimeoutLayer {
    period: Duration,
}

impl IdleTimeoutLayer {
    /// A layer with idle period `period` (1 ms to 24 hours).
    pub fn new(period: Duration) -> Result<Self, ConfigError> {
        Ok(IdleTimeoutLayer {
            period: check_duration("idle_timeout", period, MAX_IDLE_TIMEOUT)?,
        })
    }

    /// The idle period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The layer failing stalled response bodies, with the same period.
    pub fn body_layer(&self) -> BodyIdleTimeoutLayer {
        BodyIdleTimeoutLayer::from_checked(self.period)
    }

    /// Wraps a stream accepted by a server (plain TCP, TLS, …): see [`Side::Server`].
    ///
    /// Give hyper `TokioIo::new(layer.wrap_server(stream))`.
    pub fn wrap_server<S>(&self, stream: S) -> IdleIo<S> {
        IdleIo::new(stream, self.period, Side::Server)
    }

    /// Wraps a stream accepted by a server like [`wrap_server`](Self::wrap_server), and returns
    /// the connection's [`ServerActivity`]: layer it around the connection's service so that a
    /// handler thinking longer than the period does not get its connection cut.
    ///
    /// ```
    /// use std::time::Duration;
    /// use backstop_timeout::IdleTimeoutLayer;
    /// use hyper_util::rt::{TokioExecutor, TokioIo};
    /// use hyper_util::server::conn::auto;
    /// use tower::Layer;
    ///
    /// # async fn accept_loop(listener: tokio::net::TcpListener) -> Result<(), Box<dyn std::error::Error>> {
    /// let idle = IdleTimeoutLayer::new(Duration::from_secs(30))?;
    /// loop {
    ///     let (tcp, _) = listener.accept().await?;
    ///     let (io, activity) = idle.wrap_server_tracked(tcp);
    ///     let service = activity.layer(hyper::service::service_fn(|_req| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("ok")))
    ///     }));
    ///     tokio::spawn(async move {
    ///         let _ = auto::Builder::new(TokioExecutor::new())
    ///             .serve_connection(TokioIo::new(io), service)
    ///             .await;
    ///     });
    /// }
    /// # }
    /// ```
    pub fn wrap_server_tracked<S>(&self, stream: S) -> (IdleIo<S>, ServerActivity) {
        let activity = Arc::new(Activity::default());
        let io = IdleIo::new(stream, self.period, Side::Server).with_activity(activity.clone());
        (io, ServerActivity::shared(activity))
    }

    /// HTTP/2 keep-alive PING settings that fit this period: a PING every third of the period,
    /// each allowed a third of the period for its answer, also while no stream is open.
    pub fn http2_keep_alive(&self) -> Http2KeepAlive {
        let third = (self.period / 3).max(crate::config::MIN_BOUND);
        Http2KeepAlive::from_checked(third, third, true)
    }
}

impl<C> Layer<C> for IdleTimeoutLayer {
    type Service = IdleConnector<C>;

    fn layer(&self, inner: C) -> Self::Service {
        IdleConnector {
            inner,
            period: self.period,
        }
    }
}

/// A connector whose connections are [`IdleConnection`]s; made by [`IdleTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct IdleConnector<C> {
    inner: C,
    period: Duration,
}

impl<C> IdleConnector<C> {
    /// The wrapped connector.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }
}

impl<C> Service<Uri> for IdleConnector<C>
where
    C: Service<Uri>,
    C::Response: hyper::rt::Read + hyper::rt::Write + Connection + Unpin,
    C::Error: Into<BoxError>,
{
    type Response = IdleConnection<C::Response>;
    type Error = Error;
    type Future = IdleConnectFuture<C::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|err| Error::classify(err, Phase::Connect))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        IdleConnectFuture {
            inner: self.inner.call(dst),
            period: self.period,
        }
    }
}

pin_project! {
    /// The future of [`IdleConnector`].
    #[derive(Debug)]
    pub struct IdleConnectFuture<F> {
        #[pin]
        inner: F,
        period: Duration,
    }
}

impl<F, T, E> Future for IdleConnectFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<IdleConnection<T>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        Poll::Ready(match out {
            Ok(io) => Ok(IdleConnection::new(io, *this.period)),
            Err(err) => Err(Error::classify(err, Phase::Connect)),
        })
    }
}
