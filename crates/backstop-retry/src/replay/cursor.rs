//! [`Cursor`]: the newest attempt's place in the shared body — the kept chunks it replays, then
//! the caller's body it reads on — and the answers its body gives the transport until its next
//! poll.

use std::mem;
use std::task::{Context, Poll, ready};

use backstop_classify::{BoxError, Error, Kind, Phase};
use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};

use super::{Cursor, State, TOO_LARGE};

impl Cursor {
    /// The start of the body, for the attempt of `generation`.
    pub(super) fn new(generation: u32) -> Cursor {
        Cursor {
            generation,
            position: 0,
            sent: 0,
            trailers_sent: false,
        }
    }
}

impl<B: Body> State<B> {
    /// What the newest attempt's body answers to `is_end_stream` and `size_hint` until its next
    /// poll.
    pub(super) fn answers(&self) -> (bool, SizeHint) {
        let cursor = &self.cursor;
        let caught_up = cursor.position >= self.chunks.len() && cursor.sent == self.read;
        let inner_done =
            self.ended || (!self.broken && self.body.as_ref().is_some_and(|b| b.is_end_stream()));
        let end = inner_done && caught_up && (cursor.trailers_sent || self.trailers.is_none());
        // What this reader has still to replay: nothing once the kept chunks were dropped.
        let unreplayed = if self.refusal.is_none() {
            self.read.saturating_sub(cursor.sent)
        } else {
            0
        };
        if self.ended {
            return (end, SizeHint::with_exact(unreplayed));
        }
        let inner = match &self.body {
            Some(body) if !self.broken => body.size_hint(),
            _ => SizeHint::default(),
        };
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(unreplayed));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(unreplayed));
        }
        (end, hint)
    }
}

impl<B> State<B> {
    /// The newest attempt's next frame: a kept chunk, then what the caller's body gives.
    pub(super) fn step(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        if let Some(chunk) = self.chunks.get(self.cursor.position) {
            let chunk = chunk.clone();
            self.cursor.position += 1;
            self.cursor.sent = self.cursor.sent.saturating_add(chunk.len() as u64);
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if self.cursor.sent != self.read {
            // Bytes this attempt has not sent were dropped from the buffer (an older attempt,
            // polling when this one was made, outgrew the limit): it cannot be completed.
            return Poll::Ready(Some(Err(Error::new(Kind::BodyNotReplayable, Phase::Send)
                .with_source(self.refusal.unwrap_or(TOO_LARGE)))));
        }
        if self.ended {
            return Poll::Ready(self.trailers().map(Ok));
        }
        let body = match &mut self.body {
            Some(body) if !self.broken => body,
            // It failed, and the failure was already reported.
            _ => return Poll::Ready(Some(Err(Error::new(Kind::Other, Phase::Send)))),
        };
        match ready!(body.as_mut().poll_frame(cx)) {
            None => {
                self.ended = true;
                self.body = None;
                // A replay can reach the end where the first attempt saw trailers but not yet
                // the end of the stream.
                Poll::Ready(self.trailers().map(Ok))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    let bytes = data.copy_to_bytes(data.remaining());
                    self.keep(&bytes);
                    self.cursor.position = self.chunks.len();
                    self.cursor.sent = self.read;
                    Poll::Ready(Some(Ok(Frame::data(bytes))))
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        self.trailers = Some(Box::new(trailers.clone()));
                        self.cursor.trailers_sent = true;
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    // A frame that is neither data nor trailers: nothing we can forward.
                    Err(_) => {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                },
            },
            Some(Err(err)) => {
                self.body = None;
                self.broken = true;
                self.refuse("the request body failed while it was being sent");
                Poll::Ready(Some(Err(
                    Error::new(Kind::Other, Phase::Send).with_source(err.into())
                )))
            }
        }
    }

    /// The trailers, if the newest attempt has yet to send them.
    fn trailers(&mut self) -> Option<Frame<Bytes>> {
        if mem::replace(&mut self.cursor.trailers_sent, true) {
            return None;
        }
        self.trailers
            .as_deref()
            .map(|trailers| Frame::trailers(trailers.clone()))
    }
}
