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

use http::Uri;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::Service;

thread_local! {
    // `None`: no call is being polled on this thread. `Some(opened)`: a call is, and `opened` is
    // how long the last connection it opened took.
    static OPENED: Cell<Option<Option<Duration>>> = const { Cell::new(None) };
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
        TimedFuture {
            inner: self.inner.call(uri),
            started: Instant::now(),
        }
    }
}

pin_project! {
    pub(crate) struct TimedFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
    }
}

impl<F, T, E> Future for TimedFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let io = ready!(this.inner.poll(cx))?;
        let took = this.started.elapsed();
        OPENED.with(|slot| {
            if slot.get().is_some() {
                slot.set(Some(Some(took)));
            }
        });
        Poll::Ready(Ok(io))
    }
}

pin_project! {
    /// A call's future, with how long the connection it opened took (`None`: it opened none).
    pub(crate) struct ConnectScope<F> {
        #[pin]
        inner: F,
        opened: Option<Duration>,
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

/// Restores the outer mark, also when the poll unwinds.
struct Restore(Option<Option<Duration>>);

impl Drop for Restore {
    fn drop(&mut self) {
        OPENED.with(|slot| slot.set(self.0));
    }
}

impl<F: Future> Future for ConnectScope<F> {
    type Output = (F::Output, Option<Duration>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let restore = Restore(OPENED.with(|slot| slot.replace(Some(*this.opened))));
        let polled = this.inner.poll(cx);
        *this.opened = OPENED.with(Cell::get).flatten();
        drop(restore);
        polled.map(|output| (output, *this.opened))
    }
}
