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

use crate::config::{ConfigError, check_duration};
use crate::phase::track_phase;

/// The longest connect bound accepted; anything longer is a configuration mistake.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(600);

/// Bounds the whole connection establishment of the connector it wraps.
///
/// The connector is any `Service<Uri>` yielding an IO (hyper-util's `HttpConnector`,
/// hyper-rustls' `HttpsConnector`, [`TcpConnector`](crate::TcpConnector), your own); the wrapped
/// connector yields the same IO, so it plugs into
/// `hyper_util::client::legacy::Client::builder(..).build(connector)` unchanged.
///
/// On expiry the connect fails with a [`backstop_classify::Error`] of kind
/// [`Kind::TimedOut`]`(`[`Timer::Connect`]`)`, in the phase the connect was stuck in
/// ([`Phase::Resolve`], [`Phase::Connect`] or [`Phase::Tls`]), and
/// [`Retryable::Safe`](backstop_classify::Retryable::Safe): nothing was sent. The phase is known
/// when the connector reports it: [`TcpConnector`](crate::TcpConnector) does, and
/// [`MarkResolving`](crate::MarkResolving) / [`MarkConnecting`](crate::MarkConnecting) add it to
/// hyper-util's and hyper-rustls' connectors; otherwise it is [`Phase::Connect`].
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
/// let connector = ConnectTimeoutLayer::new(Duration::from_secs(3))?.layer(TcpConnector::new());
/// let client = Client::builder(TokioExecutor::new())
///     .build::<_, http_body_util::Empty<bytes::Bytes>>(connector);
/// # drop(client);
/// # Ok::<(), backstop_timeout::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ConnectTimeoutLayer {
    timeout: Duration,
}

impl ConnectTimeoutLayer {
    /// A layer bounding every connect by `timeout` (1 ms to 10 minutes).
    pub fn new(timeout: Duration) -> Result<Self, ConfigError> {
        Ok(ConnectTimeoutLayer {
            timeout: check_duration("connect_timeout", timeout, MAX_CONNECT_TIMEOUT)?,
        })
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
        let mut phase = Phase::Connect;
        // Connectors often start work (and report it) in `call` itself.
        let inner = track_phase(&mut phase, || self.inner.call(dst));
        ConnectFuture {
            inner,
            // Boxed so the future stays `Unpin`, as hyper-util's `Connect` requires.
            sleep: Box::pin(tokio::time::sleep_until(Instant::now() + self.timeout)),
            timeout: self.timeout,
            phase,
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
        phase: Phase,
    }
}

impl<F, T, E> Future for ConnectFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        if let Poll::Ready(out) = track_phase(this.phase, || inner.poll(cx)) {
            return Poll::Ready(out.map_err(|err| Error::classify(err, *this.phase)));
        }
        ready!(this.sleep.as_mut().poll(cx));
        tracing::debug!(phase = %this.phase, timeout = ?this.timeout, "connect timed out");
        Poll::Ready(Err(Error::new(Kind::TimedOut(Timer::Connect), *this.phase)
            .with_source(ConnectTimedOut {
                after: *this.timeout,
            })))
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
