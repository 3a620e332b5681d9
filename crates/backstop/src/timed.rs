//! Connection timing: how long establishing a connection took, carried to the responses sent on
//! it, so a [`CallInfo`](crate::CallInfo) can tell a fresh connection from a pooled one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::Service;

/// How long a connection took to establish (DNS + TCP + TLS), attached to every response sent on
/// it. The first response to claim it is the one whose request opened the connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnectTime {
    took: Duration,
    claimed: Arc<AtomicBool>,
}

impl ConnectTime {
    /// The connect time, for the one response whose request opened the connection; `None` for
    /// every later response on the same (pooled) connection.
    pub(crate) fn claim(&self) -> Option<Duration> {
        (!self.claimed.swap(true, Ordering::Relaxed)).then_some(self.took)
    }
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
    type Response = TimedIo<C::Response>;
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
    type Output = Result<TimedIo<T>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let io = ready!(this.inner.poll(cx))?;
        Poll::Ready(Ok(TimedIo {
            inner: io,
            took: this.started.elapsed(),
        }))
    }
}

pin_project! {
    /// A connection that knows how long it took to establish.
    pub(crate) struct TimedIo<T> {
        #[pin]
        inner: T,
        took: Duration,
    }
}

impl<T: Connection> Connection for TimedIo<T> {
    fn connected(&self) -> Connected {
        self.inner.connected().extra(ConnectTime {
            took: self.took,
            claimed: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl<T: Read> Read for TimedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: Write> Write for TimedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
}
