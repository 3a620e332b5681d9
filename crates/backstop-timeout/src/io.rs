//! [`IdleIo`]: an IO wrapper that fails a connection on which no byte moves while one is awaited.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use backstop_classify::{Error, Kind, Phase, Timer};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::activity::Activity;

/// Which end of the connection an [`IdleIo`] serves; it decides when a pending read counts as
/// waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A client connection: a pending read is timed only while we wait for an answer — after we
    /// wrote bytes and before the peer's first byte back. A connection resting in a pool (hyper
    /// keeps a read pending on it to notice the server closing) is never timed out.
    ///
    /// Once the answer has started, a stall is the response body's to catch
    /// ([`BodyIdleTimeoutLayer`](crate::BodyIdleTimeoutLayer)); a response *head* that stops
    /// half-way is left to an attempt timeout. On HTTP/2 our own control frames (window updates,
    /// PING and SETTINGS acknowledgements) also count as "asked", so a pooled HTTP/2 connection
    /// needs keep-alive PINGs ([`Http2KeepAlive`](crate::Http2KeepAlive)) shorter than the period
    /// to be sure never to be closed while resting.
    Client,
    /// A server connection: a pending read is timed from the first read of a new connection on,
    /// so a client that connects and says nothing is dropped. Bytes we write count as activity
    /// too, so a long download is never cut. With a [`ServerActivity`](crate::ServerActivity)
    /// (see [`ServerIdleTimeout::wrap_tracked`](crate::ServerIdleTimeout::wrap_tracked))
    /// the read is not timed while a request is being handled, so a slow handler is not cut
    /// either.
    Server,
}

/// An IO that fails with [`Kind::TimedOut`]`(`[`Timer::Idle`]`)` when no byte moves for the idle
/// period while one is awaited.
///
/// - A write (or flush, or shutdown) that makes no progress for the period fails, in
///   [`Phase::Send`].
/// - A pending read fails after the period without a byte, in [`Phase::AwaitHeaders`], when it
///   counts as waiting (see [`Side`]).
/// - Progress in either direction restarts the period: an upload in progress keeps the response
///   wait alive, a download in progress keeps a server's read alive.
///
/// The error is an `io::Error` of kind `TimedOut` whose inner error is the
/// [`backstop_classify::Error`]; hyper passes it up as the source of its own error, and
/// `backstop_classify::Error::classify` finds it.
///
/// The timer is created the first time something has to wait and is reused afterwards: reads
/// and writes that complete at once cost a few branches, no allocation, no clock read and no lock;
/// a wait costs one clock read, and the timer itself is moved at most once per period.
///
/// One timer serves both directions; like hyper's connection tasks, drive both directions from one
/// task so the timer wakes the side that waits.
#[derive(Debug)]
pub struct IdleIo<T> {
    inner: T,
    period: Duration,
    side: Side,
    timer: Option<Pin<Box<Sleep>>>,
    /// The waker the timer last registered.
    timer_waker: Option<Waker>,
    /// `since` holds the start of the current wait (its deadline is a period later: computed
    /// only when the timer is set or fires, not on every wait).
    armed: bool,
    since: Instant,
    read_waiting: bool,
    /// The pending read is under the timer (as opposed to parked, e.g. pooled).
    read_timed: bool,
    write_waiting: bool,
    /// Client: we wrote bytes the peer has not answered yet.
    awaiting_answer: bool,
    /// Client: the task of a parked, untimed read, to wake when a write makes it timed.
    parked_reader: Option<Waker>,
    expired: Option<Phase>,
    /// Server: requests being handled, reported by [`ServerActivity`](crate::ServerActivity).
    activity: Option<Arc<Activity>>,
}

impl<T> IdleIo<T> {
    /// Wraps `inner`, failing it after `period` without progress while a byte is awaited.
    ///
    /// `period` is taken as given; [`ConnectionIdleTimeoutLayer::try_new`] and
    /// [`ServerIdleTimeout::try_new`] check one.
    ///
    /// [`ConnectionIdleTimeoutLayer::try_new`]: crate::ConnectionIdleTimeoutLayer::try_new
    /// [`ServerIdleTimeout::try_new`]: crate::ServerIdleTimeout::try_new
    pub fn new(inner: T, period: Duration, side: Side) -> IdleIo<T> {
        IdleIo {
            inner,
            period,
            side,
            timer: None,
            timer_waker: None,
            armed: false,
            since: Instant::now(),
            read_waiting: false,
            read_timed: false,
            write_waiting: false,
            awaiting_answer: false,
            parked_reader: None,
            expired: None,
            activity: None,
        }
    }

    pub(crate) fn with_activity(mut self, activity: Arc<Activity>) -> Self {
        self.activity = Some(activity);
        self
    }

    /// The wrapped IO.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The wrapped IO, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Unwraps the IO.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// The idle period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Whether the connection has timed out (every later read and write fails).
    pub fn is_expired(&self) -> bool {
        self.expired.is_some()
    }

    /// Starts (or restarts) the period of the current wait. Only the deadline moves: the timer
    /// is left registered where it is and catches up when it fires, so a busy connection pays a
    /// clock read per wait and one timer reset per period, not a timer-wheel update per byte.
    fn arm(&mut self) {
        self.since = Instant::now();
        self.armed = true;
    }

    /// Bytes moved: the period starts over for whatever is still waiting.
    fn progressed(&mut self) {
        if (self.read_waiting && self.read_timed) || self.write_waiting {
            self.arm();
        } else {
            self.armed = false;
        }
    }

    /// Waits out the current wait: registers the timer with this task, or fails if the period
    /// has run out. The common case, the timer already registered with this task and not fired,
    /// is a few comparisons; the rest is out of line.
    #[inline]
    fn wait(&mut self, cx: &mut Context<'_>, phase: Phase) -> Poll<io::Error> {
        if !self.armed {
            self.arm();
        }
        // Already registered with this task's waker and not fired: polling it again would only
        // spend the task's cooperative budget.
        if let Some(timer) = &self.timer
            && self
                .timer_waker
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
            && !timer.is_elapsed()
        {
            return Poll::Pending;
        }
        self.poll_timer(cx, phase)
    }

    #[inline(never)]
    fn poll_timer(&mut self, cx: &mut Context<'_>, phase: Phase) -> Poll<io::Error> {
        let timer = match &mut self.timer {
            Some(timer) => timer,
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(self.since + self.period))),
        };
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                match &mut self.timer_waker {
                    Some(waker) => waker.clone_from(cx.waker()),
                    None => self.timer_waker = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            // A server handling a request keeps its read pending only to notice a hang-up: the
            // silence is ours, not the client's.
            if phase == Phase::AwaitHeaders && self.activity.as_ref().is_some_and(|a| a.is_busy()) {
                self.since = Instant::now();
            }
            // The timer may have been registered for an earlier wait, or before progress moved
            // the deadline on: catch up instead of failing. The deadline only ever moves later,
            // so a timer that has not fired is never late.
            let deadline = self.since + self.period;
            if Instant::now() < deadline {
                timer.as_mut().reset(deadline);
                continue;
            }
            self.expired = Some(phase);
            tracing::debug!(side = ?self.side, %phase, period = ?self.period, "idle timeout: connection failed");
            return Poll::Ready(idle_error(phase, self.period));
        }
    }

    fn read_is_timed(&self) -> bool {
        match self.side {
            Side::Client => self.awaiting_answer,
            Side::Server => true,
        }
    }

    #[inline(always)]
    fn after_read(
        &mut self,
        cx: &mut Context<'_>,
        pending: bool,
        got_bytes: bool,
    ) -> Poll<io::Error> {
        if !pending {
            self.read_waiting = false;
            self.read_timed = false;
            if got_bytes {
                self.awaiting_answer = false;
                self.progressed();
            }
            return Poll::Pending;
        }
        self.read_waiting = true;
        if self.read_is_timed() {
            self.read_timed = true;
            return self.wait(cx, Phase::AwaitHeaders);
        }
        self.read_timed = false;
        match &mut self.parked_reader {
            Some(waker) => waker.clone_from(cx.waker()),
            None => self.parked_reader = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    #[inline(always)]
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        pending: bool,
        wrote_bytes: bool,
    ) -> Poll<io::Error> {
        if !pending {
            self.write_waiting = false;
            if wrote_bytes {
                if self.side == Side::Client && !self.awaiting_answer {
                    self.awaiting_answer = true;
                    if self.read_waiting && !self.read_timed {
                        // The answer's wait starts now; nothing else waits (this write is done).
                        self.time_parked_read();
                        return Poll::Pending;
                    }
                }
                self.progressed();
            }
            return Poll::Pending;
        }
        self.write_waiting = true;
        self.wait(cx, Phase::Send)
    }

    /// The parked read now awaits an answer: its wait starts now, with the timer registered to
    /// wake the reading task. Waking that task instead, only for it to start the timer in its
    /// next read, would cost the connection's task a whole extra poll on every request.
    ///
    /// The reader's waker stays stored: the next parked read (in the same task, on a pooled
    /// connection) then finds it in place and clones nothing.
    #[inline(never)]
    fn time_parked_read(&mut self) {
        let Some(reader) = self.parked_reader.take() else {
            return;
        };
        self.read_timed = true;
        self.arm();
        if self
            .wait(&mut Context::from_waker(&reader), Phase::AwaitHeaders)
            .is_ready()
        {
            // Already out of time: the read must come back to fail.
            reader.wake_by_ref();
        }
        self.parked_reader = Some(reader);
    }

    #[inline(always)]
    fn check_expired(&self) -> Option<io::Error> {
        self.expired.map(|phase| idle_error(phase, self.period))
    }

    // What every read and write does around the inner IO's poll, whichever IO traits it speaks:
    // fail at once once expired, then account for the outcome (and fail if the wait ran out).
    //
    // Always inlined, as is the bookkeeping they call, so the wrapper folds into hyper's own read
    // and write loops together with the IO it wraps: hyper reads about five times and writes or
    // flushes about four times per request, and as separate functions the wrapper's frames alone
    // cost ≈ 0.27 k instructions per request (callgrind, `benches/stack.rs`). What only a wait
    // needs (`time_parked_read`, `poll_timer`) stays out of line.

    #[inline(always)]
    fn read_with(
        &mut self,
        cx: &mut Context<'_>,
        read: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> (Poll<io::Result<()>>, bool),
    ) -> Poll<io::Result<()>>
    where
        T: Unpin,
    {
        if let Some(err) = self.check_expired() {
            return Poll::Ready(Err(err));
        }
        let (result, got_bytes) = read(Pin::new(&mut self.inner), cx);
        if let Poll::Ready(err) = self.after_read(cx, result.is_pending(), got_bytes) {
            return Poll::Ready(Err(err));
        }
        result
    }

    #[inline(always)]
    fn write_with<R>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
        progressed: impl FnOnce(&R) -> bool,
    ) -> Poll<io::Result<R>>
    where
        T: Unpin,
    {
        if let Some(err) = self.check_expired() {
            return Poll::Ready(Err(err));
        }
        let result = write(Pin::new(&mut self.inner), cx);
        let wrote = matches!(&result, Poll::Ready(Ok(r)) if progressed(r));
        if let Poll::Ready(err) = self.after_write(cx, result.is_pending(), wrote) {
            return Poll::Ready(Err(err));
        }
        result
    }

    fn shutdown_with(
        &mut self,
        cx: &mut Context<'_>,
        shutdown: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<()>>,
    ) -> Poll<io::Result<()>>
    where
        T: Unpin,
    {
        if self.expired.is_some() {
            // Closing a dead connection must still release it.
            return shutdown(Pin::new(&mut self.inner), cx);
        }
        self.write_with(cx, shutdown, |()| false)
    }
}

/// The `io::Error` an expired [`IdleIo`] fails with.
fn idle_error(phase: Phase, period: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        Error::new(Kind::TimedOut(Timer::Idle), phase).with_source(IdleTimedOut { period }),
    )
}

/// The source of an idle timeout: says how long the period was.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdleTimedOut {
    pub(crate) period: Duration,
}

impl std::fmt::Display for IdleTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no byte moved for {:?}", self.period)
    }
}

impl std::error::Error for IdleTimedOut {}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().read_with(cx, |inner, cx| {
            let before = buf.filled().len();
            let result = inner.poll_read(cx, buf);
            (result, buf.filled().len() > before)
        })
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_with(cx, |inner, cx| inner.poll_write(cx, buf), |n| *n > 0)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_with(
            cx,
            |inner, cx| inner.poll_write_vectored(cx, bufs),
            |n| *n > 0,
        )
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .write_with(cx, |inner, cx| inner.poll_flush(cx), |()| false)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .shutdown_with(cx, |inner, cx| inner.poll_shutdown(cx))
    }
}

// The same rules over hyper's IO traits, so a client connection (whose connector yields hyper
// IO) is wrapped without converting to tokio's traits and back on every read and write. hyper's
// read cursor cannot be inspected after the inner read took it, so any completed read counts as
// progress; the only completed read without bytes is end of stream, after which the connection
// is not used again.
impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for IdleIo<T> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().read_with(cx, |inner, cx| {
            let result = inner.poll_read(cx, buf);
            let got_bytes = matches!(result, Poll::Ready(Ok(())));
            (result, got_bytes)
        })
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for IdleIo<T> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_with(cx, |inner, cx| inner.poll_write(cx, buf), |n| *n > 0)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_with(
            cx,
            |inner, cx| inner.poll_write_vectored(cx, bufs),
            |n| *n > 0,
        )
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .write_with(cx, |inner, cx| inner.poll_flush(cx), |()| false)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .shutdown_with(cx, |inner, cx| inner.poll_shutdown(cx))
    }
}

impl<T: Connection> Connection for IdleIo<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}
