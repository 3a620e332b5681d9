//! Which phase of connection establishment is running, reported by the connector to the
//! [`ConnectTimeout`](crate::ConnectTimeout) around it.
//!
//! A connector is opaque: a `Service<Uri>` whose future resolves, connects and handshakes without
//! telling anyone. To say *where* a connect got stuck, the pieces inside report their phase to the
//! nearest enclosing `ConnectTimeout` future while it polls them. The report travels through a
//! thread-local that is only set for the duration of that poll, so it costs no allocation, no lock
//! and no change to the connector's types: a connector that reports nothing is simply attributed
//! to [`Phase::Connect`].

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use backstop_classify::Phase;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

thread_local! {
    static CURRENT: Cell<Option<Phase>> = const { Cell::new(None) };
    // The moments a stamped scope's connect left resolving and TCP; `None` outside one.
    static STAMPS: Cell<Option<PhaseStamps>> = const { Cell::new(None) };
}

/// When a connect was seen to finish resolving and to finish its TCP connection, stamped at the
/// moment the connector reported the next phase — not at the end of the poll in which it did:
/// a loopback connect and the start of a TLS handshake often happen in one poll, and stamping
/// at its end would count the handshake's first flight as TCP time.
///
/// Filled by [`track_phase_stamped`]; `resolved` stays `None` when nothing was resolved (an IP
/// address), `connected` when the connection needed no TLS (no phase after TCP was reported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseStamps {
    /// When resolution ended (the connector moved on from [`Phase::Resolve`]).
    pub resolved: Option<Instant>,
    /// When the TCP connection was up (the connector reported [`Phase::Tls`]).
    pub connected: Option<Instant>,
}

/// Tells the enclosing [`ConnectTimeout`](crate::ConnectTimeout) which phase the connect is in.
///
/// Call it from a custom connector's future while it is being polled (e.g. `Phase::Tls` when the
/// TCP connection is up and the handshake starts). Outside a `ConnectTimeout` it does nothing.
pub fn report_phase(phase: Phase) {
    CURRENT.with(|current| {
        if let Some(previous) = current.get() {
            if previous != phase {
                stamp(previous, phase);
            }
            current.set(Some(phase));
        }
    });
}

/// Records the moment of a transition in the enclosing stamped scope, if there is one.
fn stamp(from: Phase, to: Phase) {
    STAMPS.with(|stamps| {
        if let Some(mut stamped) = stamps.get() {
            if from == Phase::Resolve {
                stamped.resolved.get_or_insert_with(Instant::now);
            }
            if to == Phase::Tls {
                stamped.connected.get_or_insert_with(Instant::now);
            }
            stamps.set(Some(stamped));
        }
    });
}

/// [`track_phase`], also stamping in `stamps` the moments the connect left resolving and TCP
/// ([`PhaseStamps`]), for a wrapper that times each phase of a new connection. Phases pass
/// through nested scopes as with [`track_phase`]; stamps go to the innermost stamped scope.
pub fn track_phase_stamped<T>(
    phase: &mut Phase,
    stamps: &mut PhaseStamps,
    poll: impl FnOnce() -> T,
) -> T {
    struct Restore<'a> {
        outer: Option<PhaseStamps>,
        stamps: &'a mut PhaseStamps,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let mine = STAMPS.with(|cell| cell.replace(self.outer));
            if let Some(mine) = mine {
                *self.stamps = mine;
            }
        }
    }
    let restore = Restore {
        outer: STAMPS.with(|cell| cell.replace(Some(*stamps))),
        stamps,
    };
    let out = track_phase(phase, poll);
    drop(restore);
    out
}

/// Runs `poll` (a connector's `call`, or a poll of its future) with `phase` as the current phase,
/// and leaves in `phase` the last phase reported meanwhile.
///
/// This is how a [`ConnectTimeout`](crate::ConnectTimeout) learns where a connect is; a wrapper
/// outside it may track too (scopes nest: what an inner scope learns reaches the outer one), for
/// instance to time each phase of a new connection.
///
/// ```
/// use backstop_classify::Phase;
/// use backstop_timeout::{report_phase, track_phase};
///
/// let mut phase = Phase::Connect;
/// track_phase(&mut phase, || report_phase(Phase::Tls));
/// assert_eq!(phase, Phase::Tls);
/// ```
pub fn track_phase<T>(phase: &mut Phase, poll: impl FnOnce() -> T) -> T {
    struct Restore(Option<Phase>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let reported = CURRENT.with(|current| current.replace(self.0));
            // A nested scope passes what it learned on to the enclosing one.
            if self.0.is_some() {
                CURRENT.with(|current| current.set(reported));
            }
        }
    }
    let restore = Restore(CURRENT.with(|current| current.replace(Some(*phase))));
    let out = poll();
    if let Some(reported) = CURRENT.with(Cell::get) {
        *phase = reported;
    }
    drop(restore);
    out
}

/// Wraps a resolver (a `Service<Name>`, as hyper-util's `HttpConnector` takes) so the enclosing
/// [`ConnectTimeout`](crate::ConnectTimeout) knows when resolution is running.
///
/// ```
/// use backstop_timeout::MarkResolving;
/// use hyper_util::client::legacy::connect::HttpConnector;
/// use hyper_util::client::legacy::connect::dns::GaiResolver;
///
/// let http = HttpConnector::new_with_resolver(MarkResolving::new(GaiResolver::new()));
/// # drop(http);
/// ```
#[derive(Debug, Clone, Default)]
pub struct MarkResolving<R> {
    inner: R,
}

impl<R> MarkResolving<R> {
    /// Wraps `resolver`.
    pub fn new(resolver: R) -> Self {
        MarkResolving { inner: resolver }
    }
}

impl<R, N> Service<N> for MarkResolving<R>
where
    R: Service<N>,
{
    type Response = R::Response;
    type Error = R::Error;
    type Future = MarkFuture<R::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, name: N) -> Self::Future {
        MarkFuture {
            inner: self.inner.call(name),
            running: Phase::Resolve,
            done: Phase::Connect,
        }
    }
}

/// Wraps the TCP connector *under* a TLS connector (e.g. the `HttpConnector` given to
/// hyper-rustls), so the enclosing [`ConnectTimeout`](crate::ConnectTimeout) knows that once TCP
/// is up, the time goes to the TLS handshake.
#[derive(Debug, Clone, Default)]
pub struct MarkConnecting<C> {
    inner: C,
}

impl<C> MarkConnecting<C> {
    /// Wraps the TCP-level `connector`.
    pub fn new(connector: C) -> Self {
        MarkConnecting { inner: connector }
    }
}

impl<C, D> Service<D> for MarkConnecting<C>
where
    C: Service<D>,
{
    type Response = C::Response;
    type Error = C::Error;
    type Future = MarkFuture<C::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: D) -> Self::Future {
        report_phase(Phase::Connect);
        MarkFuture {
            inner: self.inner.call(dst),
            running: Phase::Connect,
            done: Phase::Tls,
        }
    }
}

pin_project! {
    /// The future of [`MarkResolving`] and [`MarkConnecting`].
    #[derive(Debug)]
    pub struct MarkFuture<F> {
        #[pin]
        inner: F,
        running: Phase,
        done: Phase,
    }
}

impl<F, T, E> Future for MarkFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if *this.running == Phase::Resolve {
            report_phase(Phase::Resolve);
        }
        let out = ready!(this.inner.poll(cx));
        if out.is_ok() {
            report_phase(*this.done);
        }
        Poll::Ready(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn reports_reach_the_tracking_scope_only() {
        report_phase(Phase::Tls);
        assert_eq!(CURRENT.with(Cell::get), None);
        let mut phase = Phase::Connect;
        track_phase(&mut phase, || report_phase(Phase::Resolve));
        assert_eq!(phase, Phase::Resolve);
        assert_eq!(CURRENT.with(Cell::get), None);
    }

    #[test]
    fn a_stamped_scope_stamps_each_transition_when_it_is_reported() {
        let mut phase = Phase::Connect;
        let mut stamps = PhaseStamps::default();
        let before = Instant::now();
        track_phase_stamped(&mut phase, &mut stamps, || {
            // As a connector reports them within one poll, inside a connect timer's own scope.
            let mut inner = Phase::Connect;
            track_phase(&mut inner, || {
                report_phase(Phase::Resolve);
                report_phase(Phase::Connect);
                report_phase(Phase::Tls);
            });
        });
        assert_eq!(phase, Phase::Tls);
        let (Some(resolved), Some(connected)) = (stamps.resolved, stamps.connected) else {
            panic!("both transitions stamped: {stamps:?}");
        };
        assert!(before <= resolved && resolved <= connected);
        assert_eq!(STAMPS.with(Cell::get), None, "the scope is gone");

        // No resolution (an IP address) and no TLS: nothing stamped.
        let mut stamps = PhaseStamps::default();
        track_phase_stamped(&mut Phase::Connect, &mut stamps, || {
            report_phase(Phase::Connect);
        });
        assert_eq!(stamps, PhaseStamps::default());
    }

    #[test]
    fn nested_scopes_pass_reports_outwards() {
        let mut outer = Phase::Connect;
        track_phase(&mut outer, || {
            let mut inner = Phase::Connect;
            track_phase(&mut inner, || report_phase(Phase::Tls));
            assert_eq!(inner, Phase::Tls);
        });
        assert_eq!(outer, Phase::Tls);
    }
}
