//! Response body that can pause between chunks (stall / drip faults).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

enum Seg {
    Data(Bytes),
    /// `None` pauses forever.
    Pause(Option<Duration>),
}

/// The response body type of the chaos server.
pub(crate) struct ChaosBody {
    segs: VecDeque<Seg>,
    sleep: Option<Pin<Box<Sleep>>>,
    remaining: u64,
}

impl ChaosBody {
    pub(crate) fn empty() -> ChaosBody {
        ChaosBody {
            segs: VecDeque::new(),
            sleep: None,
            remaining: 0,
        }
    }

    pub(crate) fn full(b: impl Into<Bytes>) -> ChaosBody {
        let mut body = ChaosBody::empty();
        body.push(b.into());
        body
    }

    pub(crate) fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.remaining += b.len() as u64;
            self.segs.push_back(Seg::Data(b));
        }
    }

    pub(crate) fn pause(&mut self, d: Option<Duration>) {
        self.segs.push_back(Seg::Pause(d));
    }
}

impl Body for ChaosBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
            }
            match this.segs.pop_front() {
                None => return Poll::Ready(None),
                Some(Seg::Data(b)) => {
                    this.remaining -= b.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Some(Seg::Pause(None)) => {
                    // Stall until the connection goes away.
                    this.segs.push_front(Seg::Pause(None));
                    return Poll::Pending;
                }
                Some(Seg::Pause(Some(d))) => {
                    this.sleep = Some(Box::pin(tokio::time::sleep(d)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.segs.is_empty() && self.sleep.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
