//! [`Inbound`]: the client's request body as the gateway forwards it — streamed, counted
//! against the route's body limit, and watched, so that a forward that failed because of the
//! client's body is answered as the client's fault (`413`, `400`), not the upstream's (`502`).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};

use backstop_classify::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::budget::Reservation;

/// What became of the client's body, as far as the forward's outcome is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Nothing wrong with it (yet).
    Fine,
    /// It grew past the route's body limit.
    TooLarge,
    /// Reading it failed: malformed framing, a reset or timed-out client.
    Broken,
}

/// Shared between the [`Inbound`] body (moved into the route's client) and the forward.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    fate: AtomicU8,
}

impl Watch {
    pub(crate) fn fate(&self) -> Fate {
        match self.fate.load(Ordering::Acquire) {
            1 => Fate::TooLarge,
            2 => Fate::Broken,
            _ => Fate::Fine,
        }
    }

    fn set(&self, fate: Fate) {
        let value = match fate {
            Fate::Fine => 0,
            Fate::TooLarge => 1,
            Fate::Broken => 2,
        };
        self.fate.store(value, Ordering::Release);
    }
}

/// Why the forwarded body ended in an error: the upstream connection is then abandoned.
#[derive(Debug)]
struct TooLarge {
    limit: u64,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body is larger than the route's body_limit of {} bytes",
            self.limit
        )
    }
}

impl std::error::Error for TooLarge {}

pin_project! {
    /// The client's body, forwarded as it arrives.
    pub(crate) struct Inbound<B> {
        #[pin]
        body: B,
        received: u64,
        limit: u64,
        // The bytes the route's retry layer keeps for replay (what was reserved for them).
        kept: u64,
        watch: Arc<Watch>,
        // The share of the buffer budget this request holds while its body can still be kept
        // for replay; given back when the body ends (or fails, or is dropped).
        reservation: Option<Arc<Reservation>>,
    }
}

impl<B> Inbound<B> {
    /// `body`, failing once more than `limit` bytes arrived; the first `kept` bytes are the
    /// ones the retry layer keeps, covered by `reservation`.
    pub(crate) fn new(
        body: B,
        limit: u64,
        watch: Arc<Watch>,
        kept: u64,
        reservation: Option<Arc<Reservation>>,
    ) -> Inbound<B> {
        Inbound {
            body,
            received: 0,
            limit,
            kept,
            watch,
            reservation,
        }
    }
}

impl<B> Body for Inbound<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if this.watch.fate() != Fate::Fine {
            // Already failed and reported: the client's body is not read again, and the end
            // of the stream is not faked either (the upstream would take a truncated body).
            return Poll::Ready(Some(Err("the request body already failed".into())));
        }
        match ready!(this.body.poll_frame(cx)) {
            Some(Ok(frame)) => {
                let Some(data) = frame.data_ref() else {
                    return Poll::Ready(Some(Ok(frame)));
                };
                *this.received = this.received.saturating_add(data.len() as u64);
                if *this.received > *this.limit {
                    this.watch.set(Fate::TooLarge);
                    this.reservation.take();
                    return Poll::Ready(Some(Err(Box::new(TooLarge { limit: *this.limit }))));
                }
                if *this.received <= *this.kept && !data.is_empty() {
                    // This chunk will be kept for replay. It is a slice of the connection's
                    // read buffer (up to some 400 KiB), which it would pin for as long as it is
                    // kept: copied, it holds only its own bytes, which is what the budget
                    // counted.
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(data)))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(err)) => {
                this.watch.set(Fate::Broken);
                this.reservation.take();
                Poll::Ready(Some(Err(err.into())))
            }
            None => {
                this.reservation.take();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
