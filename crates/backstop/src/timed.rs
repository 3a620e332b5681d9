//! Connection timing: how long establishing a connection took, carried on the connection the
//! hyper-util way (`Connected::extra`) to the first call that gets a response over it, so a
//! [`CallInfo`] can tell a fresh connection from a pooled one.
//!
//! Both ends: [`TimedConnector`] (outermost around the client's connector) reads the connect
//! future's [`ConnectProgress`] stamps when the connection is ready and attaches an
//! [`OpenedConnection`] to it; hyper-util copies it into the extensions of every response over
//! that connection (and keeps it in the connection info of its errors); the client's `send`
//! claims it ([`OpenedConnection::record`], [`OpenedConnection::of_error`]): the first call to
//! do so gets the timings in its `CallInfo`, every later one none (one flag per connection).
//!
//! The extra hyper-util copies is a [`CallInfo`] whose private `connection` field holds the
//! facts: the client then fills in that record rather than inserting its own, so the facts cost
//! no allocation per response beyond the one the call's record always cost.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use backstop_timeout::ConnectProgress;

use crate::CallInfo;
use http::{Extensions, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::Service;

/// How long establishing a new connection took, phase by phase.
///
/// Each phase is timed from the moment the previous one ended, as the connector stamped it
/// ([`backstop_timeout::PhaseStamps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectTimings {
    /// The DNS lookup; `None` when the host was an IP address (nothing to resolve).
    pub resolve: Option<Duration>,
    /// The TCP connection, every racing address included.
    pub tcp: Duration,
    /// The TLS handshake; `None` for a plain `http` connection.
    pub tls: Option<Duration>,
    /// All of it, from the connector's call until the connection was ready.
    pub total: Duration,
}

/// The facts of a new connection, in the extensions of every response over it (inside a
/// [`CallInfo`]) until the client takes them; claimed by the first call that does.
#[derive(Debug, Clone)]
pub(crate) struct OpenedConnection(Arc<Opened>);

impl PartialEq for OpenedConnection {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[derive(Debug)]
struct Opened {
    timings: ConnectTimings,
    claimed: AtomicBool,
}

impl OpenedConnection {
    /// Whether a call has taken the connection's timings already.
    pub(crate) fn is_claimed(&self) -> bool {
        self.0.claimed.load(Ordering::Relaxed)
    }

    /// The connection's timings, if no call claimed them before: the first caller gets them.
    fn claim(&self) -> Option<ConnectTimings> {
        // A pooled connection was claimed long ago: a plain load, no read-modify-write.
        if self.is_claimed() {
            return None;
        }
        (!self.0.claimed.swap(true, Ordering::AcqRel)).then_some(self.0.timings)
    }

    /// The record hyper-util copies into every response over this connection.
    fn carrier(self) -> CallInfo {
        CallInfo {
            connection: Some(self),
            ..OpenedConnection::blank()
        }
    }

    /// Claims the connection whose record is in `extensions`, if any, and leaves there the
    /// call's record: `fill` makes it of the timings it got, in place (the record the
    /// connection brought, or a new one when none did).
    pub(crate) fn record(
        extensions: &mut Extensions,
        fill: impl FnOnce(&mut CallInfo, Option<ConnectTimings>),
    ) {
        match extensions.get_mut::<CallInfo>() {
            Some(carried) => {
                let connect = carried.connection.take().and_then(|opened| opened.claim());
                fill(carried, connect);
            }
            None => {
                let mut info = OpenedConnection::blank();
                fill(&mut info, None);
                extensions.insert(info);
            }
        }
    }

    /// A record with nothing in it yet: the carrier's, or one for [`OpenedConnection::record`]
    /// to fill.
    fn blank() -> CallInfo {
        CallInfo {
            attempts: 0,
            delays: Vec::new(),
            retry_stopped: None,
            breaker: None,
            time_to_headers: Duration::ZERO,
            connect: None,
            connection: None,
        }
    }

    /// Takes the facts out of `extensions` and claims the connection.
    fn take_from(extensions: &mut Extensions) -> Option<ConnectTimings> {
        extensions.remove::<CallInfo>()?.connection?.claim()
    }

    /// Claims the connection a failed call's error came over, when hyper-util says which
    /// (an error on a connection carries its `Connected`).
    #[cold]
    pub(crate) fn of_error(err: &(dyn std::error::Error + 'static)) -> Option<ConnectTimings> {
        let mut link = Some(err);
        while let Some(err) = link {
            if let Some(client) = err.downcast_ref::<hyper_util::client::legacy::Error>() {
                let mut extensions = Extensions::new();
                client.connect_info()?.get_extras(&mut extensions);
                return OpenedConnection::take_from(&mut extensions);
            }
            link = err.source();
        }
        None
    }
}

/// Times every connection its inner connector makes, and attaches the timings to it.
///
/// The inner connector (every layer of it) sits behind one `Arc`: hyper-util clones its
/// connector for every request, also the many served by a pooled connection, and a clone of
/// the whole chain is a dozen fields and reference counts, made and dropped for nothing. Here
/// it is one count; the chain itself is cloned only when a connection is made.
#[derive(Debug)]
pub(crate) struct TimedConnector<C> {
    inner: Arc<C>,
}

impl<C> Clone for TimedConnector<C> {
    fn clone(&self) -> Self {
        TimedConnector {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C> TimedConnector<C> {
    pub(crate) fn new(inner: C) -> Self {
        TimedConnector {
            inner: Arc::new(inner),
        }
    }
}

impl<C> Service<Uri> for TimedConnector<C>
where
    C: Service<Uri> + Clone,
    C::Future: ConnectProgress,
{
    type Response = Timed<C::Response>;
    type Error = C::Error;
    /// Boxed: hyper-util keeps a slot for a connect in every request's future (3 224 bytes
    /// with a boxed one, as hyper-util's own `HttpConnector` has), also when the request takes
    /// a pooled connection, so the chain's future unboxed (224 bytes) would be allocated and
    /// copied with every request rather than once per connection.
    type Future = Pin<Box<TimedFuture<C::Future>>>;

    /// Always ready: every connector of the client is (the TCP connector awaits its resolver
    /// inside the connect, where the connect bound covers it), and hyper-util calls its
    /// connector without asking (`Connect::connect` is `call`).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut connector = C::clone(&self.inner);
        Box::pin(TimedFuture {
            tls: uri.scheme() == Some(&http::uri::Scheme::HTTPS),
            started: Instant::now(),
            inner: connector.call(uri),
        })
    }
}

pin_project! {
    /// The future of [`TimedConnector`].
    pub(crate) struct TimedFuture<F> {
        #[pin]
        inner: F,
        tls: bool,
        started: Instant,
    }
}

impl<F, T, E> Future for TimedFuture<F>
where
    F: Future<Output = Result<T, E>> + ConnectProgress,
{
    type Output = Result<Timed<T>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let io = ready!(this.inner.as_mut().poll(cx))?;
        let ready_at = Instant::now();
        // Read after completion: the connect future keeps its stamps until dropped.
        let stamps = this.inner.stamps();
        let started = *this.started;
        let tcp_from = stamps.resolved.unwrap_or(started);
        let tcp_to = stamps.connected.unwrap_or(ready_at);
        let timings = ConnectTimings {
            resolve: stamps
                .resolved
                .map(|at| at.saturating_duration_since(started)),
            tcp: tcp_to.saturating_duration_since(tcp_from),
            tls: this.tls.then(|| ready_at.saturating_duration_since(tcp_to)),
            total: ready_at.saturating_duration_since(started),
        };
        Poll::Ready(Ok(Timed {
            io,
            opened: OpenedConnection(Arc::new(Opened {
                timings,
                claimed: AtomicBool::new(false),
            })),
        }))
    }
}

/// A connection's IO with its [`OpenedConnection`] facts, which it adds to hyper-util's
/// `Connected` (reads and writes pass straight through).
#[derive(Debug)]
pub(crate) struct Timed<T> {
    io: T,
    opened: OpenedConnection,
}

impl<T: Connection> Connection for Timed<T> {
    /// The connection as hyper-util needs it (HTTP/2 negotiated, proxied), with our facts as its
    /// one extra. The TCP stream's own extra (hyper-util's `HttpInfo`, which nothing in backstop
    /// reads) is left out: hyper-util copies every extra into every response, and a second one
    /// chained behind ours would cost each request an allocation and a map insert.
    fn connected(&self) -> Connected {
        let inner = self.io.connected();
        let mut connected = Connected::new()
            .proxy(inner.is_proxied())
            .extra(self.opened.clone().carrier());
        if inner.is_negotiated_h2() {
            connected = connected.negotiated_h2();
        }
        connected
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Timed<T> {
    #[inline]
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Timed<T> {
    #[inline]
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    #[inline]
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    #[inline]
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn opened() -> OpenedConnection {
        OpenedConnection(Arc::new(Opened {
            timings: ConnectTimings {
                resolve: None,
                tcp: Duration::from_millis(1),
                tls: None,
                total: Duration::from_millis(2),
            },
            claimed: AtomicBool::new(false),
        }))
    }

    fn fill(info: &mut CallInfo, connect: Option<ConnectTimings>) {
        *info = call_info(connect);
    }

    #[test]
    fn a_carrier_cloned_after_its_connection_was_claimed_carries_nothing_more() {
        let opened = opened();
        let carrier = opened.clone().carrier();
        // Before any call claimed it, every clone carries the connection: the first response
        // to reach a call gets the timings, whichever clone it holds.
        let first = carrier.clone();
        assert_eq!(first.connection.as_ref(), Some(&opened));
        assert_eq!(Arc::strong_count(&opened.0), 3);
        let mut extensions = Extensions::new();
        extensions.insert(first);
        let mut got = None;
        OpenedConnection::record(&mut extensions, |_, connect| got = connect);
        assert!(got.is_some(), "the first call gets the timings");
        // Claimed: later clones hold no count on the connection, and a call gets nothing.
        let later = carrier.clone();
        assert_eq!(later.connection, None);
        assert_eq!(Arc::strong_count(&opened.0), 2);
        let mut extensions = Extensions::new();
        extensions.insert(later);
        let mut got = Some(opened.0.timings);
        OpenedConnection::record(&mut extensions, |_, connect| got = connect);
        assert_eq!(
            got, None,
            "a pooled connection's later calls get no timings"
        );
    }

    fn call_info(connect: Option<ConnectTimings>) -> CallInfo {
        CallInfo {
            attempts: 1,
            delays: Vec::new(),
            retry_stopped: None,
            breaker: None,
            time_to_headers: Duration::from_millis(3),
            connect,
            connection: None,
        }
    }

    /// A connect whose state is large, as the client's chain of connectors is.
    struct LargeConnect {
        _state: [u8; 512],
    }

    impl Future for LargeConnect {
        type Output = Result<(), io::Error>;

        fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
            Poll::Ready(Ok(()))
        }
    }

    impl ConnectProgress for LargeConnect {
        fn phase(&self) -> backstop_classify::Phase {
            backstop_classify::Phase::Connect
        }
    }

    #[derive(Clone)]
    struct LargeConnector;

    impl Service<Uri> for LargeConnector {
        type Response = ();
        type Error = io::Error;
        type Future = LargeConnect;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _uri: Uri) -> LargeConnect {
            LargeConnect { _state: [0; 512] }
        }
    }

    fn future_size<S: Service<Uri>>(_: &S) -> usize {
        std::mem::size_of::<S::Future>()
    }

    /// hyper-util keeps room for a connect in every request's future, pooled connection or
    /// not: the timed connector's future is one pointer, whatever the chain inside holds.
    #[test]
    fn the_timed_connectors_future_is_one_pointer_whatever_the_chain_holds() {
        let connector = TimedConnector::new(LargeConnector);
        assert_eq!(future_size(&connector), std::mem::size_of::<usize>());
    }

    #[test]
    fn only_the_first_response_over_a_connection_claims_it_and_the_facts_are_replaced() {
        let opened = opened();
        let timings = opened.0.timings;
        let connected = Connected::new().extra(opened.clone().carrier());
        let mut first = Extensions::new();
        connected.get_extras(&mut first);
        let mut second = Extensions::new();
        connected.get_extras(&mut second);
        OpenedConnection::record(&mut first, fill);
        assert_eq!(first.get::<CallInfo>(), Some(&call_info(Some(timings))));
        OpenedConnection::record(&mut second, fill);
        assert_eq!(
            second.get::<CallInfo>(),
            Some(&call_info(None)),
            "claimed already"
        );
        let mut none = Extensions::new();
        OpenedConnection::record(&mut none, fill);
        assert_eq!(none.get::<CallInfo>(), Some(&call_info(None)));
        // An error's connection info, as hyper-util keeps it.
        let mut third = Extensions::new();
        Connected::new()
            .extra(opened.carrier())
            .get_extras(&mut third);
        assert_eq!(
            OpenedConnection::take_from(&mut third),
            None,
            "claimed already"
        );
    }
}
