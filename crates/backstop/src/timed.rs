//! Connection timing: how long establishing a connection took, reported to the call whose
//! request opened it, so a [`CallInfo`](crate::CallInfo) can tell a fresh connection from a
//! pooled one.
//!
//! hyper-util polls the connector inside the future of the call that needs the connection (a
//! connection it finishes in the background, because the call got a pooled one first, is polled
//! by a task of its own). So the call's future marks the thread while it is polled
//! ([`ConnectScope`]), and a connect that completes under the mark is this call's. This costs a
//! thread-local write per poll, where carrying the time on the connection (hyper-util's
//! `Connected::extra`) would cost an extension insert (an allocation) on every response.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use backstop_classify::Phase;
use backstop_timeout::{PhaseStamps, track_phase_stamped};
use http::Uri;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::Service;

thread_local! {
    // Whether a call's future is being polled on this thread (a connect completing now is its).
    static IN_CALL: Cell<bool> = const { Cell::new(false) };
    // The timings of the connection the call being polled opened, if it opened one. Written
    // only when a connect completes, so a poll that opens nothing touches just the flag above
    // and this slot's discriminant.
    static OPENED: Cell<Option<ConnectTimings>> = const { Cell::new(None) };
}

/// How long establishing a new connection took, phase by phase.
///
/// The phases are those the connector reports ([`backstop_timeout::report_phase`]), each timed
/// from the moment it was reported to the moment the next one was
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

/// Times every connection its inner connector makes.
#[derive(Debug, Clone)]
pub(crate) struct TimedConnector<C> {
    inner: C,
}

impl<C> TimedConnector<C> {
    pub(crate) fn new(inner: C) -> Self {
        TimedConnector { inner }
    }
}

impl<C> Service<Uri> for TimedConnector<C>
where
    C: Service<Uri>,
{
    type Response = C::Response;
    type Error = C::Error;
    type Future = TimedFuture<C::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let mut phases = Phases::start();
        let inner = phases.track(|| self.inner.call(uri));
        TimedFuture { inner, tls, phases }
    }
}

pin_project! {
    pub(crate) struct TimedFuture<F> {
        #[pin]
        inner: F,
        tls: bool,
        phases: Phases,
    }
}

/// When a connect started, the phase it is in, and the moments it left resolving and TCP.
struct Phases {
    started: Instant,
    phase: Phase,
    stamps: PhaseStamps,
}

impl Phases {
    fn start() -> Phases {
        Phases {
            started: Instant::now(),
            phase: Phase::Connect,
            stamps: PhaseStamps::default(),
        }
    }

    /// Runs one poll (or the connector's `call`) in a stamped phase scope.
    fn track<T>(&mut self, poll: impl FnOnce() -> T) -> T {
        track_phase_stamped(&mut self.phase, &mut self.stamps, poll)
    }

    /// The timings of a connection ready now.
    fn timings(&self, tls: bool) -> ConnectTimings {
        let ready_at = Instant::now();
        let tcp_from = self.stamps.resolved.unwrap_or(self.started);
        let tcp_to = self.stamps.connected.unwrap_or(ready_at);
        ConnectTimings {
            resolve: self
                .stamps
                .resolved
                .map(|at| at.saturating_duration_since(self.started)),
            tcp: tcp_to.saturating_duration_since(tcp_from),
            tls: tls.then(|| ready_at.saturating_duration_since(tcp_to)),
            total: ready_at.saturating_duration_since(self.started),
        }
    }
}

impl<F, T, E> Future for TimedFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let polled = this.phases.track(|| inner.poll(cx));
        let io = ready!(polled)?;
        let timings = this.phases.timings(*this.tls);
        if IN_CALL.with(Cell::get) {
            OPENED.with(|slot| slot.set(Some(timings)));
        }
        Poll::Ready(Ok(io))
    }
}

pin_project! {
    /// A call's future, with the timings of the connection it opened (`None`: it opened none).
    pub(crate) struct ConnectScope<F> {
        #[pin]
        inner: F,
        opened: Option<ConnectTimings>,
    }
}

impl<F> ConnectScope<F> {
    pub(crate) fn new(inner: F) -> Self {
        ConnectScope {
            inner,
            opened: None,
        }
    }
}

/// Restores the outer call's mark and connection, also when the poll unwinds.
struct Restore {
    outer_in_call: bool,
    /// What an enclosing call had recorded when this one's poll began (rare: a call polled
    /// from inside another's poll, after the outer one's connect completed in that same poll).
    outer_opened: Option<ConnectTimings>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        IN_CALL.with(|flag| flag.set(self.outer_in_call));
        // Unconditionally: after an unwinding poll, a connection this call opened must not be
        // left for another call to find.
        OPENED.with(|slot| slot.set(self.outer_opened));
    }
}

impl<F: Future> Future for ConnectScope<F> {
    type Output = (F::Output, Option<ConnectTimings>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let restore = Restore {
            outer_in_call: IN_CALL.with(|flag| flag.replace(true)),
            outer_opened: OPENED.with(Cell::take),
        };
        let polled = this.inner.poll(cx);
        if let Some(opened) = OPENED.with(Cell::take) {
            *this.opened = Some(opened);
        }
        drop(restore);
        match polled {
            Poll::Ready(output) => Poll::Ready((output, *this.opened)),
            Poll::Pending => Poll::Pending,
        }
    }
}
