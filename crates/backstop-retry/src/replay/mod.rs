//! [`ReplayBody`]: a request body that can be sent again.
//!
//! The first attempt streams the caller's body; each chunk is kept (up to a limit) as it passes,
//! so a retry replays the same bytes and then continues from the inner body where the previous
//! attempt stopped. Nothing is read ahead of the transport, and nothing is buffered for requests
//! that may only be retried if their body was never touched, nor for bodies that declare (by
//! their size hint) more bytes than the limit.
//!
//! The state shared between attempts (the caller's body and the kept chunks) waits in a slot.
//! The attempt body being polled takes it out, owns it while it polls the caller's body, and puts
//! it back before its poll returns: no lock is held while the caller's code runs, and whichever
//! attempt comes next finds the state where the last one left it. An attempt body answers
//! `is_end_stream` and `size_hint` from what it noted at its last poll, without the state.
//!
//! Only the newest attempt may read. An older attempt still streaming (HTTP/2 can answer before
//! the request body is done) gets an error on its next read, so the transport resets that
//! stream: it neither panics nor steals bytes from the replay. If the older attempt is in the
//! middle of a poll on another thread when the newest one wants the state, the newest waits for
//! it to be put back (its waker is woken then); a poll never blocks.
//!
//! The files of this module: this one holds the types and the body's face to the transport;
//! `slot` the hand-off of the shared state between attempts; `cursor` one attempt's reading of
//! it (replaying kept chunks, then reading on).

mod cursor;
mod slot;

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker, ready};

use backstop_classify::{BoxError, Error, Kind, Phase};
use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use slot::{Held, Take, take};

/// The default replay limit: 64 KiB, as linkerd. Larger bodies are sent once and not retried.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// Why a body that outgrew (or declared more than) a non-zero limit cannot be replayed.
const TOO_LARGE: &str = "the request body is larger than the replay limit";
/// Why a body kept under a zero limit (a request retried only if never sent) cannot be replayed.
const READ_UNKEPT: &str =
    "the request may be retried only if it was never sent, and its body was read";
/// Why a handle of a request that may not be retried gives no further body.
const NEVER: &str = "the request was marked never to be retried";

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

/// One attempt's view of the shared body.
struct Reader<B> {
    slot: Arc<Mutex<Slot<B>>>,
    cursor: Cursor,
}

/// Where one attempt is in the shared body, and what it answers without the state.
struct Cursor {
    generation: u64,
    /// Index of the next kept chunk this reader replays.
    position: usize,
    /// Bytes this reader has sent, replayed or read; equal to `State::read` once it caught up.
    sent: u64,
    trailers_sent: bool,
    /// `is_end_stream` and `size_hint` as of this reader's last poll (or its creation), so that
    /// the transport's frequent queries need neither the lock nor the state.
    end: bool,
    hint: SizeHint,
}

/// Where the shared state waits between polls, with what the retry needs to know without it.
pub(crate) struct Slot<B> {
    /// `None` while an attempt body is polling with it.
    state: Option<State<B>>,
    /// Only the reader of this generation may read; older attempts are superseded.
    generation: u64,
    /// Why the body cannot be replayed, as of the last time the state was put back.
    refusal: Option<&'static str>,
    /// The newest attempt, waiting for an older one's poll to put the state back.
    waiter: Option<Waker>,
}

struct State<B> {
    /// The rest of the caller's body; `None` once it ended or failed.
    body: Option<Pin<Box<B>>>,
    chunks: Vec<Bytes>,
    /// Bytes taken from the caller's body so far (all of them kept while replayable).
    read: u64,
    limit: usize,
    /// What a refusal for outgrowing `limit` says.
    too_large: &'static str,
    // Boxed: trailers are rare, and the state moves in and out of its slot at every poll.
    trailers: Option<Box<HeaderMap>>,
    ended: bool,
    /// The caller's body failed (or panicked): it is not polled again.
    broken: bool,
    /// Set for good when the body outgrows the limit or fails.
    refusal: Option<&'static str>,
}

/// The retry future's handle on a request body, from which each retry's body is made.
pub(crate) enum Replay<B> {
    Empty,
    Never,
    Shared(Arc<Mutex<Slot<B>>>),
}

// === impl ReplayBody ===

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
    // Nothing but moves of plain data happen under the lock: a poisoned slot is consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body` for a request that may be retried, keeping up to `limit` bytes for replay.
    /// A limit of zero keeps nothing: the body can then be replayed only if no attempt read any
    /// data from it (a connection refused before the write). A body whose size hint says it is
    /// larger than the limit is treated the same way from the start, rather than buffered up to
    /// the limit only to be dropped: it is replayable only while untouched.
    #[inline]
    pub(crate) fn replayable(body: B, limit: usize) -> (ReplayBody<B>, Replay<B>) {
        if body.is_end_stream() {
            return (ReplayBody { repr: Repr::Empty }, Replay::Empty);
        }
        let hint = body.size_hint();
        let (limit, too_large) = if limit == 0 {
            (0, READ_UNKEPT)
        } else if hint.lower() > limit as u64 {
            (0, TOO_LARGE)
        } else {
            (limit, TOO_LARGE)
        };
        let state = State {
            body: Some(Box::pin(body)),
            chunks: Vec::new(),
            read: 0,
            limit,
            too_large,
            trailers: None,
            ended: false,
            broken: false,
            refusal: None,
        };
        let slot = Arc::new(Mutex::new(Slot {
            state: Some(state),
            generation: 0,
            refusal: None,
            waiter: None,
        }));
        let mut cursor = Cursor::new(0);
        // Not at its end: checked above. The hint is the caller's, nothing being kept yet.
        cursor.hint = hint;
        (
            ReplayBody {
                repr: Repr::Shared {
                    reader: Reader {
                        slot: slot.clone(),
                        cursor,
                    },
                },
            },
            Replay::Shared(slot),
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

// === impl Replay ===

impl<B: Body> Replay<B> {
    /// The body for the next attempt, or why there is none. From now on older attempts' bodies
    /// are superseded: their next poll fails.
    pub(crate) fn next(&self) -> Result<ReplayBody<B>, &'static str> {
        match self {
            Replay::Empty => Ok(ReplayBody { repr: Repr::Empty }),
            Replay::Never => Err(NEVER),
            Replay::Shared(slot) => {
                let (generation, state) = {
                    let mut slot = lock(slot);
                    if let Some(why) = slot.refusal {
                        return Err(why);
                    }
                    slot.generation += 1;
                    (slot.generation, slot.state.take())
                };
                let mut cursor = Cursor::new(generation);
                // The new body's first answers to `is_end_stream` and `size_hint`, worked out on
                // the owned state (they ask the caller's body) with the lock released. If an
                // older attempt is polling with the state right now, the defaults (not at the
                // end, size unknown) are true, if vaguer; the first poll refines them.
                if let Some(state) = state {
                    let mut held = Held {
                        slot,
                        state,
                        finished: false,
                    };
                    cursor.note(&held.state);
                    held.finished = true;
                }
                Ok(ReplayBody {
                    repr: Repr::Shared {
                        reader: Reader {
                            slot: slot.clone(),
                            cursor,
                        },
                    },
                })
            }
        }
    }
}

impl<B> Replay<B> {
    /// Whether [`next`](Replay::next) would succeed now.
    pub(crate) fn can_replay(&self) -> Result<(), &'static str> {
        match self {
            Replay::Empty => Ok(()),
            Replay::Never => Err(NEVER),
            Replay::Shared(slot) => match lock(slot).refusal {
                None => Ok(()),
                Some(why) => Err(why),
            },
        }
    }
}

// === impl Reader ===

impl<B> Reader<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let cursor = &mut self.cursor;
        let mut held = match take(&self.slot, cursor.generation, cx.waker()) {
            Take::Owned(held) => held,
            Take::Superseded => return Poll::Ready(Some(Err(superseded()))),
            Take::Busy => return Poll::Pending,
        };
        // The lock is released: the caller's body is polled on the owned state.
        let polled = cursor.step(&mut held.state, cx);
        cursor.note(&held.state);
        held.finished = true;
        // Put back here, before the frame goes to the transport.
        drop(held);
        polled
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
            Repr::Shared { reader } => reader.cursor.end,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.repr {
            Repr::Empty => SizeHint::with_exact(0),
            Repr::Once { body } => body.size_hint(),
            Repr::Shared { reader } => reader.cursor.hint,
        }
    }
}
