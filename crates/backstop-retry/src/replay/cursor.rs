//! [`Cursor`]: one attempt's place in the shared body — the kept chunks it replays, then the
//! caller's body it reads on — and the answers it gives the transport without the state.

use std::mem;
use std::task::{Context, Poll, ready};

use backstop_classify::{BoxError, Error, Kind, Phase};
use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};

use super::{Cursor, State, TOO_LARGE};

impl Cursor {
    pub(super) fn new(generation: u64) -> Cursor {
        Cursor {
            generation,
            position: 0,
            sent: 0,
            trailers_sent: false,
            end: false,
            hint: SizeHint::default(),
        }
    }

    /// Notes what `is_end_stream` and `size_hint` answer until the next poll.
    pub(super) fn note<B: Body>(&mut self, state: &State<B>) {
        let caught_up = self.position >= state.chunks.len() && self.sent == state.read;
        let inner_done = state.ended
            || (!state.broken && state.body.as_ref().is_some_and(|b| b.is_end_stream()));
        self.end = inner_done && caught_up && (self.trailers_sent || state.trailers.is_none());
        // What this reader has still to replay: nothing once the kept chunks were dropped.
        let unreplayed = if state.refusal.is_none() {
            state.read.saturating_sub(self.sent)
        } else {
            0
        };
        if state.ended {
            self.hint = SizeHint::with_exact(unreplayed);
            return;
        }
        let inner = match &state.body {
            Some(body) if !state.broken => body.size_hint(),
            _ => SizeHint::default(),
        };
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(unreplayed));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(unreplayed));
        }
        self.hint = hint;
    }
}

impl Cursor {
    pub(super) fn step<B>(
        &mut self,
        state: &mut State<B>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        if let Some(chunk) = state.chunks.get(self.position) {
            let chunk = chunk.clone();
            self.position += 1;
            self.sent = self.sent.saturating_add(chunk.len() as u64);
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if self.sent != state.read {
            // Bytes this attempt has not sent were dropped from the buffer (an older attempt,
            // polling when this one was made, outgrew the limit): it cannot be completed.
            return Poll::Ready(Some(Err(Error::new(Kind::BodyNotReplayable, Phase::Send)
                .with_source(state.refusal.unwrap_or(TOO_LARGE)))));
        }
        if state.ended {
            return Poll::Ready(self.trailers(state).map(Ok));
        }
        let body = match &mut state.body {
            Some(body) if !state.broken => body,
            // It failed, and the failure was already reported.
            _ => return Poll::Ready(Some(Err(Error::new(Kind::Other, Phase::Send)))),
        };
        match ready!(body.as_mut().poll_frame(cx)) {
            None => {
                state.ended = true;
                state.body = None;
                // A replay can reach the end where the first attempt saw trailers but not yet
                // the end of the stream.
                Poll::Ready(self.trailers(state).map(Ok))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    let bytes = data.copy_to_bytes(data.remaining());
                    state.keep(&bytes);
                    self.position = state.chunks.len();
                    self.sent = state.read;
                    Poll::Ready(Some(Ok(Frame::data(bytes))))
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        state.trailers = Some(Box::new(trailers.clone()));
                        self.trailers_sent = true;
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
                state.body = None;
                state.broken = true;
                state.refuse("the request body failed while it was being sent");
                Poll::Ready(Some(Err(
                    Error::new(Kind::Other, Phase::Send).with_source(err.into())
                )))
            }
        }
    }

    /// The trailers, if this reader has yet to send them.
    fn trailers<B>(&mut self, state: &State<B>) -> Option<Frame<Bytes>> {
        if mem::replace(&mut self.trailers_sent, true) {
            return None;
        }
        state
            .trailers
            .as_deref()
            .map(|trailers| Frame::trailers(trailers.clone()))
    }
}
