//! [`ConnectTimeoutLayer`]: one bound over the whole connection establishment — name resolution,
//! TCP and TLS — for any connector.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use backstop_classify::{BoxError, Error, Kind, Phase, Timer};
use http::Uri;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::config::{ConfigError, MAX_CONNECT_TIMEOUT, MIN_TIMEOUT, check_duration};
use crate::progress::{ConnectProgress, PhaseStamps};

/// Bounds the whole connection establishment of the connector it wraps.
///
/// The connector is any `Service<Uri>` yielding an IO whose future tells its progress
/// ([`ConnectProgress`]): [`TcpConnector`](crate::TcpConnector), the idle wrapper over it, the
/// `backstop` facade's HTTPS connector, or any other connector wrapped in an
/// [`OpaqueConnector`](crate::OpaqueConnector) (hyper-util's `HttpConnector`, hyper-rustls'
/// `HttpsConnector`, your own). The wrapped connector yields the same IO, so it plugs into
/// `hyper_util::client::legacy::Client::builder(..).build(connector)` unchanged.
///
/// On expiry the connect fails with a [`backstop_classify::Error`] of kind
/// [`Kind::TimedOut`]`(`[`Timer::Connect`]`)`, in the phase the connect was stuck in
/// ([`Phase::Resolve`], [`Phase::Connect`] or [`Phase::Tls`], as the connect future's
/// [`ConnectProgress::phase`] says when the timer fires), and
/// [`Retryable::Safe`](backstop_classify::Retryable::Safe): nothing was sent.
///
/// To keep one black-holed address from using up the whole bound, the connector must bound each
/// address attempt: [`TcpConnector`](crate::TcpConnector) races them with a per-attempt bound;
/// hyper-util's `HttpConnector::set_connect_timeout` splits its bound evenly among the addresses.
///
/// Errors of the connector itself are classified too (a refused connection is
/// [`Kind::Refused`] in [`Phase::Connect`], a bad certificate [`Kind::Tls`] in [`Phase::Tls`]).
///
/// ```
/// use std::time::Duration;
/// use backstop_timeout::{ConnectTimeoutLayer, TcpConnector};
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use tower_layer::Layer;
///
/// let connector = ConnectTimeoutLayer::new(Duration::from_secs(3)).layer(TcpConnector::new());
/// let client = Client::builder(TokioExecutor::new())
///     .build::<_, http_body_util::Empty<bytes::Bytes>>(connector);
/// # drop(client);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ConnectTimeoutLayer {
    timeout: Duration,
}

impl ConnectTimeoutLayer {
    /// A layer bounding every connect by `timeout`, as given (see [`try_new`](Self::try_new) for
    /// a checked one).
    pub fn new(timeout: Duration) -> Self {
        ConnectTimeoutLayer { timeout }
    }

    /// A layer bounding every connect by `timeout`, which must lie between [`MIN_TIMEOUT`] and
    /// [`MAX_CONNECT_TIMEOUT`]; otherwise a [`ConfigError`] naming `connect_timeout`.
    pub fn try_new(timeout: Duration) -> Result<Self, ConfigError> {
        check_duration("connect_timeout", timeout, MIN_TIMEOUT, MAX_CONNECT_TIMEOUT).map(Self::new)
    }

    /// The bound.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl<C> Layer<C> for ConnectTimeoutLayer {
    type Service = ConnectTimeout<C>;

    fn layer(&self, inner: C) -> Self::Service {
        ConnectTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The connector made by [`ConnectTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct ConnectTimeout<C> {
    inner: C,
    timeout: Duration,
}

impl<C> ConnectTimeout<C> {
    /// The wrapped connector.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }

    /// The wrapped connector, mutably (to configure it after wrapping).
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.inner
    }
}

impl<C> Service<Uri> for ConnectTimeout<C>
where
    C: Service<Uri>,
    C::Future: ConnectProgress,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = Error;
    type Future = ConnectFuture<C::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|err| Error::classify(err, Phase::Connect))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        ConnectFuture {
            inner: self.inner.call(dst),
            // Boxed so the future stays `Unpin`, as hyper-util's `Connect` requires.
            sleep: Box::pin(tokio::time::sleep_until(Instant::now() + self.timeout)),
            timeout: self.timeout,
        }
    }
}

pin_project! {
    /// The future of [`ConnectTimeout`].
    #[derive(Debug)]
    pub struct ConnectFuture<F> {
        #[pin]
        inner: F,
        sleep: Pin<Box<Sleep>>,
        timeout: Duration,
    }
}

impl<F, T, E> Future for ConnectFuture<F>
where
    F: Future<Output = Result<T, E>> + ConnectProgress,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.inner.as_mut().poll(cx) {
            // The phase the connect was in when it failed, as its future tells it now.
            return Poll::Ready(out.map_err(|err| Error::classify(err, this.inner.phase())));
        }
        ready!(this.sleep.as_mut().poll(cx));
        let phase = this.inner.phase();
        tracing::debug!(%phase, timeout = ?this.timeout, "connect timed out");
        Poll::Ready(Err(Error::new(Kind::TimedOut(Timer::Connect), phase)
            .with_source(ConnectTimedOut {
                after: *this.timeout,
            })))
    }
}

/// The connect's progress passes through, so a layer outside (the facade's connection timing)
/// reads it as well.
impl<F: ConnectProgress> ConnectProgress for ConnectFuture<F> {
    fn phase(&self) -> Phase {
        self.inner.phase()
    }

    fn stamps(&self) -> PhaseStamps {
        self.inner.stamps()
    }
}

/// The source of a connect timeout: says how long the bound was.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectTimedOut {
    pub(crate) after: Duration,
}

impl std::fmt::Display for ConnectTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connection not established within {:?}", self.after)
    }
}

impl std::error::Error for ConnectTimedOut {}
