//! [`ConnectionIdleTimeoutLayer`]: fails client connections on which an answer never comes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use backstop_classify::{BoxError, Error, Phase};
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::config::{ConfigError, check_period};
use crate::io::{IdleIo, Side};
use crate::keepalive::Http2KeepAlive;
use crate::progress::{ConnectProgress, PhaseStamps};

/// Fails client connections on which no byte comes back for the idle period after a request was
/// written, or on which a write makes no progress for it.
///
/// Over any connector (a `Service<Uri>`), every connection's IO becomes an [`IdleConnection`]
/// (an [`IdleIo`] in [`Side::Client`] mode): it fails with `TimedOut(Idle)` in
/// [`Phase::AwaitHeaders`] or [`Phase::Send`]. A connection resting in hyper's pool is never timed
/// out. Stalled response bodies are [`BodyIdleTimeoutLayer`](crate::BodyIdleTimeoutLayer)'s;
/// silent server connections [`ServerIdleTimeout`](crate::ServerIdleTimeout)'s.
///
/// For long-lived HTTP/2 connections, pair it with [`http2_keep_alive`](Self::http2_keep_alive):
/// PINGs keep bytes moving on a live connection, so the idle timer only fires on a dead peer.
///
/// ```
/// use std::time::Duration;
/// use backstop_timeout::{
///     BodyIdleTimeoutLayer, ConnectTimeoutLayer, ConnectionIdleTimeoutLayer, TcpConnector,
/// };
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use tower::ServiceBuilder;
///
/// let period = Duration::from_secs(30);
/// let idle = ConnectionIdleTimeoutLayer::try_new(period)?;
/// let connector = ServiceBuilder::new()
///     .layer(ConnectTimeoutLayer::new(Duration::from_secs(3)))
///     .layer(idle)
///     .service(TcpConnector::new());
/// let mut builder = Client::builder(TokioExecutor::new());
/// idle.http2_keep_alive().apply_to_client(&mut builder);
/// let client = ServiceBuilder::new()
///     .layer(BodyIdleTimeoutLayer::new(period))
///     .service(builder.build::<_, http_body_util::Empty<bytes::Bytes>>(connector));
/// # drop(client);
/// # Ok::<(), backstop_timeout::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ConnectionIdleTimeoutLayer {
    period: Duration,
}

impl ConnectionIdleTimeoutLayer {
    /// A layer with idle period `period`, as given (see [`try_new`](Self::try_new)).
    pub fn new(period: Duration) -> Self {
        ConnectionIdleTimeoutLayer { period }
    }

    /// A layer with idle period `period`, which must lie between [`MIN_TIMEOUT`](crate::MIN_TIMEOUT) and
    /// [`MAX_IDLE_TIMEOUT`](crate::MAX_IDLE_TIMEOUT); otherwise a [`ConfigError`] naming `idle_timeout`.
    pub fn try_new(period: Duration) -> Result<Self, ConfigError> {
        check_period("idle_timeout", period).map(Self::new)
    }

    /// The idle period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// HTTP/2 keep-alive PING settings that fit this period
    /// ([`Http2KeepAlive::for_idle_period`]).
    pub fn http2_keep_alive(&self) -> Http2KeepAlive {
        Http2KeepAlive::for_idle_period(self.period)
    }
}

impl<C> Layer<C> for ConnectionIdleTimeoutLayer {
    type Service = IdleConnector<C>;

    fn layer(&self, inner: C) -> Self::Service {
        IdleConnector {
            inner,
            period: self.period,
        }
    }
}

/// A connector whose connections are [`IdleConnection`]s; made by
/// [`ConnectionIdleTimeoutLayer`].
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

    /// The wrapped connector, mutably.
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.inner
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
    /// The future of [`IdleConnector`]; its progress is the wrapped connect's.
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

impl<F: ConnectProgress> ConnectProgress for IdleConnectFuture<F> {
    fn phase(&self) -> Phase {
        self.inner.phase()
    }

    fn stamps(&self) -> PhaseStamps {
        self.inner.stamps()
    }
}

/// The IO a client connection wrapped by [`ConnectionIdleTimeoutLayer`] yields:
/// an [`IdleIo`] in [`Side::Client`] mode over the connector's IO, speaking hyper's IO traits
/// directly (no conversion to tokio's and back per read and write).
#[derive(Debug)]
pub struct IdleConnection<T> {
    io: IdleIo<T>,
}

impl<T> IdleConnection<T> {
    pub(crate) fn new(inner: T, period: Duration) -> Self {
        IdleConnection {
            io: IdleIo::new(inner, period, Side::Client),
        }
    }

    /// The idle wrapper.
    pub fn idle(&self) -> &IdleIo<T> {
        &self.io
    }

    /// The connector's IO.
    pub fn get_ref(&self) -> &T {
        self.io.get_ref()
    }
}

impl<T> hyper::rt::Read for IdleConnection<T>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    #[inline]
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        hyper::rt::Read::poll_read(Pin::new(&mut self.io), cx, buf)
    }
}

impl<T> hyper::rt::Write for IdleConnection<T>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    #[inline]
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write(Pin::new(&mut self.io), cx, buf)
    }

    #[inline]
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_flush(Pin::new(&mut self.io), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_shutdown(Pin::new(&mut self.io), cx)
    }

    fn is_write_vectored(&self) -> bool {
        hyper::rt::Write::is_write_vectored(&self.io)
    }

    #[inline]
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write_vectored(Pin::new(&mut self.io), cx, bufs)
    }
}

impl<T: Connection> Connection for IdleConnection<T> {
    fn connected(&self) -> Connected {
        self.get_ref().connected()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::future::poll_fn;
    use std::mem::MaybeUninit;

    use hyper_util::rt::TokioIo;
    use tokio::io::AsyncWriteExt;
    use tokio::time::Instant;

    use super::*;
    use backstop_classify::{Kind, Timer};

    const PERIOD: Duration = Duration::from_secs(1);

    async fn hyper_read<T: hyper::rt::Read + Unpin>(io: &mut T) -> io::Result<usize> {
        let mut storage = [MaybeUninit::<u8>::uninit(); 64];
        let mut buf = hyper::rt::ReadBuf::uninit(&mut storage);
        poll_fn(|cx| hyper::rt::Read::poll_read(Pin::new(&mut *io), cx, buf.unfilled())).await?;
        Ok(buf.filled().len())
    }

    async fn hyper_write<T: hyper::rt::Write + Unpin>(io: &mut T, bytes: &[u8]) -> usize {
        poll_fn(|cx| hyper::rt::Write::poll_write(Pin::new(&mut *io), cx, bytes))
            .await
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn over_hyper_io_a_question_without_an_answer_times_out_and_an_answer_stops_the_timer() {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut conn = IdleConnection::new(TokioIo::new(ours), PERIOD);

        // Nothing asked yet: a pending read is not timed (a resting pooled connection).
        let resting = tokio::time::timeout(PERIOD * 5, hyper_read(&mut conn)).await;
        assert!(resting.is_err(), "an idle connection at rest is left alone");

        // Asked and answered: the answer arrives, the period starts over, nothing fails.
        assert_eq!(hyper_write(&mut conn, b"GET / HTTP/1.1\r\n\r\n").await, 18);
        peer.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        assert_eq!(hyper_read(&mut conn).await.unwrap(), 17);
        let resting = tokio::time::timeout(PERIOD * 5, hyper_read(&mut conn)).await;
        assert!(resting.is_err(), "after the answer the connection may rest");

        // Asked and never answered: fails after the period, waiting for the head.
        assert_eq!(hyper_write(&mut conn, b"GET / HTTP/1.1\r\n\r\n").await, 18);
        let start = Instant::now();
        let err = hyper_read(&mut conn).await.unwrap_err();
        assert_eq!(start.elapsed(), PERIOD);
        let err = Error::find_in(&err).expect("classified");
        assert_eq!(err.kind(), Kind::TimedOut(Timer::Idle));
        assert_eq!(err.phase(), Phase::AwaitHeaders);
        assert!(conn.idle().is_expired());
        drop(peer);
    }
}
