//! [`ReplayBody`]: a request body that can be sent again.
//!
//! The first attempt streams the caller's body; each chunk is kept (up to a limit) as it passes,
//! so a retry replays the same bytes and then continues from the inner body where the previous
//! attempt stopped. Nothing is read ahead of the transport, and nothing is buffered for requests
//! that may only be retried if their body was never touched.
//!
//! Only the newest attempt may read. An older attempt still streaming (HTTP/2 can answer before
//! the request body is done) gets an error on its next read, so the transport resets that
//! stream: it neither panics nor steals bytes from the replay.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use backstop_classify::{BoxError, Error, Kind, Phase};
use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// The default replay limit: 64 KiB, as linkerd. Larger bodies are sent once and not retried.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

pin_project! {
    /// The request body each attempt sends: the caller's body on the first attempt, the buffered
    /// bytes followed by the rest of it on a retry.
    pub struct ReplayBody<B> {
        #[pin]
        repr: Repr<B>,
    }
}

pin_project! {
    #[project = ReprProj]
    enum Repr<B> {
        // A body with nothing in it: replaying it is free.
        Empty,
        // A body that will not be replayed: streamed through untouched.
        Once { #[pin] body: B },
        // A body shared between attempts.
        Shared { reader: Reader<B> },
    }
}

struct Reader<B> {
    shared: Arc<Mutex<State<B>>>,
    generation: u64,
    /// Index of the next buffered chunk this reader replays.
    position: usize,
    /// Bytes of the buffer this reader has replayed.
    replayed: usize,
    trailers_sent: bool,
}

pub(crate) struct State<B> {
    /// The rest of the caller's body; `None` once it ended or failed.
    body: Option<Pin<Box<B>>>,
    chunks: Vec<Bytes>,
    buffered: usize,
    limit: usize,
    trailers: Option<HeaderMap>,
    ended: bool,
    /// Cleared for good when the body outgrows the limit or fails.
    replayable: bool,
    /// Why `replayable` was cleared.
    refusal: Option<&'static str>,
    /// Only the reader of this generation may read; older attempts are superseded.
    generation: u64,
}

/// The retry future's handle on a request body, from which each retry's body is made.
pub(crate) enum Replay<B> {
    Empty,
    Never,
    Shared(Arc<Mutex<State<B>>>),
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.repr {
            Repr::Empty => "empty",
            Repr::Once { .. } => "once",
            Repr::Shared { .. } => "replayable",
        };
        f.debug_struct("ReplayBody").field("kind", &kind).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the state consistent (every update is one step).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body` for a request that may be retried, keeping up to `limit` bytes for replay.
    /// A limit of zero keeps nothing: the body can then be replayed only if no attempt read any
    /// data from it (a connection refused before the write).
    ///
    /// `limit` is asked only when the body has something in it.
    #[inline]
    pub(crate) fn replayable(body: B, limit: impl FnOnce() -> usize) -> (ReplayBody<B>, Replay<B>) {
        if body.is_end_stream() {
            return (ReplayBody { repr: Repr::Empty }, Replay::Empty);
        }
        Self::shared(body, limit())
    }

    fn shared(body: B, limit: usize) -> (ReplayBody<B>, Replay<B>) {
        let shared = Arc::new(Mutex::new(State {
            body: Some(Box::pin(body)),
            chunks: Vec::new(),
            buffered: 0,
            limit,
            trailers: None,
            ended: false,
            replayable: true,
            refusal: None,
            generation: 0,
        }));
        let reader = Reader::new(shared.clone(), 0);
        (
            ReplayBody {
                repr: Repr::Shared { reader },
            },
            Replay::Shared(shared),
        )
    }

    /// Wraps `body` for a request that will not be retried: no buffering, no sharing.
    #[inline]
    pub(crate) fn once(body: B) -> (ReplayBody<B>, Replay<B>) {
        (
            ReplayBody {
                repr: Repr::Once { body },
            },
            Replay::Never,
        )
    }
}

impl<B> Replay<B> {
    /// The body for the next attempt, or why there is none.
    pub(crate) fn next(&self) -> Result<ReplayBody<B>, &'static str> {
        match self {
            Replay::Empty => Ok(ReplayBody { repr: Repr::Empty }),
            Replay::Never => Err("the request was marked never to be retried"),
            Replay::Shared(shared) => {
                let mut state = lock(shared);
                if !state.replayable {
                    return Err(state
                        .refusal
                        .unwrap_or("the request body cannot be replayed"));
                }
                state.generation += 1;
                let generation = state.generation;
                drop(state);
                Ok(ReplayBody {
                    repr: Repr::Shared {
                        reader: Reader::new(shared.clone(), generation),
                    },
                })
            }
        }
    }

    /// Whether [`next`](Replay::next) would succeed now.
    pub(crate) fn can_replay(&self) -> Result<(), &'static str> {
        match self {
            Replay::Empty => Ok(()),
            Replay::Never => Err("the request was marked never to be retried"),
            Replay::Shared(shared) => {
                let state = lock(shared);
                if state.replayable {
                    Ok(())
                } else {
                    Err(state
                        .refusal
                        .unwrap_or("the request body cannot be replayed"))
                }
            }
        }
    }
}

impl<B> Reader<B> {
    fn new(shared: Arc<Mutex<State<B>>>, generation: u64) -> Reader<B> {
        Reader {
            shared,
            generation,
            position: 0,
            replayed: 0,
            trailers_sent: false,
        }
    }
}

impl<B> Reader<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let mut state = lock(&self.shared);
        if state.generation != self.generation {
            return Poll::Ready(Some(Err(superseded())));
        }
        if let Some(chunk) = state.chunks.get(self.position) {
            let chunk = chunk.clone();
            self.position += 1;
            self.replayed += chunk.len();
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if state.ended {
            if self.trailers_sent {
                return Poll::Ready(None);
            }
            self.trailers_sent = true;
            return Poll::Ready(state.trailers.clone().map(|t| Ok(Frame::trailers(t))));
        }
        let Some(body) = state.body.as_mut() else {
            // Not ended and no body: it failed, and the failure was already reported.
            return Poll::Ready(Some(Err(Error::new(Kind::Other, Phase::Send))));
        };
        match ready!(body.as_mut().poll_frame(cx)) {
            None => {
                state.ended = true;
                state.body = None;
                // A replay can reach the end where the first attempt saw trailers but not yet
                // the end of the stream.
                if !self.trailers_sent {
                    self.trailers_sent = true;
                    if let Some(trailers) = state.trailers.clone() {
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                }
                Poll::Ready(None)
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    let bytes = data.copy_to_bytes(data.remaining());
                    state.keep(&bytes);
                    if state.replayable {
                        self.position += 1;
                        self.replayed += bytes.len();
                    }
                    Poll::Ready(Some(Ok(Frame::data(bytes))))
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        state.trailers = Some(trailers.clone());
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
                state.refuse("the request body failed while it was being sent");
                Poll::Ready(Some(Err(
                    Error::new(Kind::Other, Phase::Send).with_source(err.into())
                )))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let state = lock(&self.shared);
        state.generation == self.generation
            && state.ended
            && self.position >= state.chunks.len()
            && (self.trailers_sent || state.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let state = lock(&self.shared);
        let unreplayed = if state.replayable {
            state.buffered.saturating_sub(self.replayed) as u64
        } else {
            0
        };
        if state.ended {
            return SizeHint::with_exact(unreplayed);
        }
        let inner = state
            .body
            .as_ref()
            .map_or_else(SizeHint::default, |body| body.size_hint());
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(unreplayed));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(unreplayed));
        }
        hint
    }
}

impl<B> State<B> {
    fn keep(&mut self, bytes: &Bytes) {
        if !self.replayable {
            return;
        }
        if self.buffered.saturating_add(bytes.len()) > self.limit {
            self.refuse(if self.limit == 0 {
                "the request may be retried only if it was never sent, and its body was read"
            } else {
                "the request body is larger than the replay limit"
            });
            return;
        }
        self.buffered += bytes.len();
        self.chunks.push(bytes.clone());
    }

    fn refuse(&mut self, why: &'static str) {
        self.replayable = false;
        self.refusal.get_or_insert(why);
        self.chunks = Vec::new();
        self.buffered = 0;
    }
}

fn superseded() -> Error {
    Error::new(Kind::Cancelled, Phase::Send)
        .with_source("a newer attempt of this request is sending the body")
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match self.project().repr.project() {
            ReprProj::Empty => Poll::Ready(None),
            ReprProj::Once { body } => match ready!(body.poll_frame(cx)) {
                None => Poll::Ready(None),
                Some(Ok(frame)) => Poll::Ready(Some(Ok(
                    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
                ))),
                Some(Err(err)) => Poll::Ready(Some(Err(
                    Error::new(Kind::Other, Phase::Send).with_source(err.into())
                ))),
            },
            ReprProj::Shared { reader } => reader.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.repr {
            Repr::Empty => true,
            Repr::Once { body } => body.is_end_stream(),
            Repr::Shared { reader } => reader.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.repr {
            Repr::Empty => SizeHint::with_exact(0),
            Repr::Once { body } => body.size_hint(),
            Repr::Shared { reader } => reader.size_hint(),
        }
    }
}
