//! [`DeadlineBody`]: a response body failed at the client deadline when the deadline covers it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use backstop_classify::{BoxError, Error, Phase};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::deadline_error;

pin_project! {
    /// A response body bounded by the client deadline when it
    /// [covers the body](super::Covers::Body); a transparent wrapper otherwise.
    ///
    /// Inner body errors are classified into [`Error`] in phase [`ReadBody`](Phase::ReadBody).
    /// The timer is boxed, and only once the body first has to wait, so the wrapper stays `Unpin`
    /// when the body is and a body that never waits never allocates.
    #[derive(Debug)]
    pub struct DeadlineBody<B> {
        #[pin]
        inner: B,
        bound: Bound,
    }
}

// One enum, not an instant beside an optional timer and a flag: the wrapper is moved with every
// response.
#[derive(Debug)]
enum Bound {
    Unbounded,
    Until(Instant),
    Armed(Pin<Box<Sleep>>),
    Expired,
}

impl<B> DeadlineBody<B> {
    /// Wraps `inner`, failing it if it is still streaming at `deadline`.
    pub fn new(inner: B, deadline: Option<Instant>) -> Self {
        DeadlineBody {
            inner,
            bound: deadline.map_or(Bound::Unbounded, Bound::Until),
        }
    }

    /// The deadline this body must end by, if it is bounded.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.bound {
            Bound::Unbounded | Bound::Expired => None,
            Bound::Until(at) => Some(*at),
            Bound::Armed(sleep) => Some(sleep.deadline()),
        }
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = Error;

    // Inlined: a frame that is there passes through at the cost of a branch or two; arming the
    // timer, when the body first has to wait, is out of line (`arm`).
    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.bound {
            Bound::Unbounded => return this.inner.poll_frame(cx).map(classify_frame),
            Bound::Expired => return Poll::Ready(None),
            Bound::Until(_) => {}
            // Once the body has had to wait, the timer is armed and checked first, so a body that
            // keeps trickling in cannot outrun the deadline.
            Bound::Armed(sleep) => {
                if sleep.as_mut().poll(cx).is_ready() {
                    *this.bound = Bound::Expired;
                    return Poll::Ready(Some(Err(deadline_error(Phase::ReadBody))));
                }
            }
        }
        let polled = this.inner.poll_frame(cx);
        if polled.is_pending() && arm(this.bound, cx).is_ready() {
            return Poll::Ready(Some(Err(deadline_error(Phase::ReadBody))));
        }
        polled.map(classify_frame)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        matches!(self.bound, Bound::Expired) || self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        if matches!(self.bound, Bound::Expired) {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

/// The body has to wait: a bound body starts its timer now (the first wait) and registers it.
/// Ready when the deadline has passed already (the bound is then expired).
#[inline(never)]
fn arm(bound: &mut Bound, cx: &mut Context<'_>) -> Poll<()> {
    let Bound::Until(at) = *bound else {
        return Poll::Pending;
    };
    let mut sleep = Box::pin(sleep_until(at));
    if sleep.as_mut().poll(cx).is_ready() {
        *bound = Bound::Expired;
        return Poll::Ready(());
    }
    *bound = Bound::Armed(sleep);
    Poll::Pending
}

fn classify_frame<D, E: Into<BoxError>>(
    polled: Option<Result<Frame<D>, E>>,
) -> Option<Result<Frame<D>, Error>> {
    polled.map(|frame| frame.map_err(|err| Error::classify(err, Phase::ReadBody)))
}
