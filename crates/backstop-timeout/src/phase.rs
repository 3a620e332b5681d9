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
use tower_service::Service;

thread_local! {
    static CURRENT: Cell<Option<Phase>> = const { Cell::new(None) };
}

/// Tells the enclosing [`ConnectTimeout`](crate::ConnectTimeout) which phase the connect is in.
///
/// Call it from a custom connector's future while it is being polled (e.g. `Phase::Tls` when the
/// TCP connection is up and the handshake starts). Outside a `ConnectTimeout` it does nothing.
pub fn report_phase(phase: Phase) {
    CURRENT.with(|current| {
        if current.get().is_some() {
            current.set(Some(phase));
        }
    });
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
