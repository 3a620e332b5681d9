//! [`ConnectProgress`]: how a connect future tells the layers around it which phase it is in.
//!
//! A connector is a `Service<Uri>`; its future resolves, connects and handshakes. To say *where*
//! a connect got stuck, the [`ConnectTimeout`](crate::ConnectTimeout) around it asks its inner
//! future when the timer fires, through this trait: the phase is part of the future's type, not
//! a side channel. Our connectors' futures implement it ([`TcpConnector`](crate::TcpConnector)'s,
//! the idle wrapper's by delegation, the HTTPS connector of the `backstop` facade); a connector
//! whose future says nothing is wrapped in an [`OpaqueConnector`], which attributes every stall to
//! [`Phase::Connect`].
//!
//! Both ends: implemented by connect futures, read by [`ConnectFuture`](crate::ConnectFuture)
//! (the phase of a timeout or an error) and by the facade's connection timing (the stamps).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use backstop_classify::Phase;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

/// What a connect future knows about its own progress.
///
/// The hand-off between the two ends of a connector stack, in the future's type: implemented by
/// the futures that know the phase ([`TcpConnecting`](crate::TcpConnecting): resolving, then
/// connecting; the client's HTTPS connector in the `backstop` facade: then TLS; wrappers such as
/// [`IdleConnectFuture`](crate::IdleConnectFuture) pass it through), read by those that act on
/// it ([`ConnectTimeout`](crate::ConnectTimeout), to name the phase it cut; the facade's
/// connection timing, for the stamps). A connector that reports nothing goes through
/// [`OpaqueConnector`] and is attributed to [`Phase::Connect`].
///
/// Read through a shared reference at any time — between polls, and after the future completed
/// (the stamps of a finished connect stay readable until it is dropped).
///
/// ```
/// use backstop_classify::Phase;
/// use backstop_timeout::{ConnectProgress, PhaseStamps};
///
/// /// A connect that only ever does TCP.
/// struct Dial;
/// impl ConnectProgress for Dial {
///     fn phase(&self) -> Phase {
///         Phase::Connect
///     }
/// }
/// assert_eq!(Dial.stamps(), PhaseStamps::default());
/// ```
pub trait ConnectProgress {
    /// The phase the connect is in now: [`Phase::Resolve`], [`Phase::Connect`] or
    /// [`Phase::Tls`].
    fn phase(&self) -> Phase;

    /// When the connect left resolution and when its TCP connection was up, as far as known.
    fn stamps(&self) -> PhaseStamps {
        PhaseStamps::default()
    }
}

impl<P: ConnectProgress + ?Sized> ConnectProgress for Box<P> {
    fn phase(&self) -> Phase {
        (**self).phase()
    }

    fn stamps(&self) -> PhaseStamps {
        (**self).stamps()
    }
}

impl<P: ConnectProgress + ?Sized> ConnectProgress for Pin<Box<P>> {
    fn phase(&self) -> Phase {
        self.as_ref().get_ref().phase()
    }

    fn stamps(&self) -> PhaseStamps {
        self.as_ref().get_ref().stamps()
    }
}

/// When a connect finished resolving and finished its TCP connection, stamped by the connector
/// at the moment each phase ended (not at the end of the poll in which it did: a loopback
/// connect and the start of a TLS handshake often happen in one poll).
///
/// `resolved` stays `None` when nothing was resolved (an IP address) or resolution has not ended;
/// `connected` until the TCP connection is up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseStamps {
    /// When resolution ended.
    pub resolved: Option<Instant>,
    /// When the TCP connection was up.
    pub connected: Option<Instant>,
}

/// Wraps a connector whose future reports no progress (hyper-util's `HttpConnector`,
/// hyper-rustls' `HttpsConnector`, your own), so it can go under a
/// [`ConnectTimeoutLayer`](crate::ConnectTimeoutLayer): every stall and error is attributed to
/// [`Phase::Connect`] unless the error itself says otherwise (a certificate error is still
/// [`Phase::Tls`]).
///
/// ```
/// use std::time::Duration;
/// use backstop_timeout::{ConnectTimeoutLayer, OpaqueConnector};
/// use hyper_util::client::legacy::connect::HttpConnector;
/// use tower_layer::Layer;
///
/// let connector = ConnectTimeoutLayer::new(Duration::from_secs(3))
///     .layer(OpaqueConnector::new(HttpConnector::new()));
/// # drop(connector);
/// ```
#[derive(Debug, Clone, Default)]
pub struct OpaqueConnector<C> {
    inner: C,
}

impl<C> OpaqueConnector<C> {
    /// Wraps `connector`.
    pub fn new(connector: C) -> Self {
        OpaqueConnector { inner: connector }
    }

    /// The wrapped connector.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }

    /// The wrapped connector, mutably (to configure it after wrapping).
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.inner
    }

    /// Unwraps the connector.
    pub fn into_inner(self) -> C {
        self.inner
    }
}

impl<C, D> Service<D> for OpaqueConnector<C>
where
    C: Service<D>,
{
    type Response = C::Response;
    type Error = C::Error;
    type Future = OpaqueConnecting<C::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: D) -> Self::Future {
        OpaqueConnecting {
            inner: self.inner.call(dst),
        }
    }
}

pin_project! {
    /// The future of [`OpaqueConnector`]: always in [`Phase::Connect`], with no stamps.
    #[derive(Debug)]
    pub struct OpaqueConnecting<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for OpaqueConnecting<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl<F> ConnectProgress for OpaqueConnecting<F> {
    fn phase(&self) -> Phase {
        Phase::Connect
    }
}
