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
//! `slot` the hand-off of the shared state between attempts; `cursor` the newest attempt's
//! reading of it (replaying kept chunks, then reading on), kept in the state rather than in each
//! attempt's body, which stays one word larger than the caller's; `strategy` the
//! [`ReplayStrategy`] trait through which the layer makes each attempt's body, and
//! [`BufferedReplay`], the strategy that sends this module's [`ReplayBody`].

mod cursor;
mod slot;
mod strategy;

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
pub use strategy::{BufferedReplay, NotReplayable, ReplayHandle, ReplayStrategy};

/// The default replay limit: 64 KiB, as linkerd. Larger bodies are sent once and not retried.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// Why a body that outgrew (or declared more than) a non-zero limit cannot be replayed.
const TOO_LARGE: &str = "the request body is larger than the replay limit";
/// Why a body kept under a zero limit (a request retried only if never sent) cannot be replayed.
const READ_UNKEPT: &str =
    "the request may be retried only if it was never sent, and its body was read";
/// Why a request that may not be retried gives no further body.
pub(crate) const NEVER: &str = "the request was marked never to be retried";

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

/// One attempt's view of the shared body: the slot, and what it answers the transport without
/// taking the state. Kept small: it is the body of every retryable request, and a request is
/// moved a dozen times on its way into the connection. Where the reader is in the shared body
/// (its [`Cursor`]) is kept in the state, since only the newest attempt ever reads.
struct Reader<B> {
    slot: Arc<Mutex<Slot<B>>>,
    /// `size_hint` as of this reader's last poll (or its creation).
    hint: Hint,
    /// Only the reader of the slot's current generation may read.
    generation: u32,
    /// `is_end_stream` as of this reader's last poll (or its creation).
    end: bool,
}

/// A [`SizeHint`] in 16 bytes rather than 24: an upper bound of `u64::MAX` stands for none.
#[derive(Clone, Copy)]
struct Hint {
    lower: u64,
    upper: u64,
}

/// Where the newest attempt is in the shared body.
struct Cursor {
    /// The attempt this is the place of; a newer attempt starts afresh.
    generation: u32,
    /// Index of the next kept chunk this reader replays.
    position: usize,
    /// Bytes this reader has sent, replayed or read; equal to `State::read` once it caught up.
    sent: u64,
    trailers_sent: bool,
}

/// Where the shared state waits between polls, with what the retry needs to know without it.
pub(crate) struct Slot<B> {
    /// `None` while an attempt body is polling with it.
    state: Option<State<B>>,
    /// Only the reader of this generation may read; older attempts are superseded. At most
    /// `MAX_ATTEMPTS_LIMIT` attempts are made, far below `u32::MAX`.
    generation: u32,
    /// Why the body cannot be replayed, as of the last time the state was put back.
    refusal: Option<&'static str>,
    /// The newest attempt, waiting for an older one's poll to put the state back.
    waiter: Option<Waker>,
}

struct State<B> {
    /// The newest attempt's place, once it polled.
    cursor: Cursor,
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

/// What [`BufferedReplay`] keeps of a request body, from which each retry's body is made.
enum Replay<B> {
    Empty,
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
    #[inline(always)]
    fn replayable(body: B, limit: usize) -> (ReplayBody<B>, Replay<B>) {
        // Most requests that may be retried have no body (GET, HEAD, DELETE): the check is
        // inlined into the call, the sharing is not.
        if body.is_end_stream() {
            return (ReplayBody { repr: Repr::Empty }, Replay::Empty);
        }
        ReplayBody::shared(body, limit)
    }

    /// [`replayable`](ReplayBody::replayable) for a body not at its end: shared between
    /// attempts through a slot.
    #[inline(never)]
    fn shared(body: B, limit: usize) -> (ReplayBody<B>, Replay<B>) {
        let hint = body.size_hint();
        let (limit, too_large) = if limit == 0 {
            (0, READ_UNKEPT)
        } else if hint.lower() > limit as u64 {
            (0, TOO_LARGE)
        } else {
            (limit, TOO_LARGE)
        };
        let state = State {
            cursor: Cursor::new(0),
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
        // Not at its end: checked above. The hint is the caller's, nothing being kept yet.
        let reader = Reader {
            slot: slot.clone(),
            hint: Hint::from(hint),
            generation: 0,
            end: false,
        };
        (
            ReplayBody {
                repr: Repr::Shared { reader },
            },
            Replay::Shared(slot),
        )
    }

    /// Wraps `body` for a request that will not be retried: no buffering, no sharing.
    #[inline]
    fn once(body: B) -> ReplayBody<B> {
        ReplayBody {
            repr: Repr::Once { body },
        }
    }
}

// === impl Replay ===

impl<B: Body> Replay<B> {
    /// The body for the next attempt, or why there is none. From now on older attempts' bodies
    /// are superseded: their next poll fails.
    fn next(&self) -> Result<ReplayBody<B>, &'static str> {
        match self {
            Replay::Empty => Ok(ReplayBody { repr: Repr::Empty }),
            Replay::Shared(slot) => {
                let (generation, state) = {
                    let mut slot = lock(slot);
                    if let Some(why) = slot.refusal {
                        return Err(why);
                    }
                    slot.generation = slot.generation.wrapping_add(1);
                    (slot.generation, slot.state.take())
                };
                let mut reader = Reader {
                    slot: slot.clone(),
                    hint: Hint::from(SizeHint::default()),
                    generation,
                    end: false,
                };
                // The new body's first answers to `is_end_stream` and `size_hint`, worked out on
                // the owned state (they ask the caller's body) with the lock released. If an
                // older attempt is polling with the state right now, the defaults (not at the
                // end, size unknown) are true, if vaguer; the first poll refines them, and
                // starts the new attempt's cursor.
                if let Some(mut state) = state {
                    state.cursor = Cursor::new(generation);
                    let mut held = Held {
                        slot,
                        state,
                        finished: false,
                    };
                    let (end, hint) = held.state.answers();
                    held.finished = true;
                    (reader.end, reader.hint) = (end, Hint::from(hint));
                }
                Ok(ReplayBody {
                    repr: Repr::Shared { reader },
                })
            }
        }
    }
}

impl<B> Replay<B> {
    /// Whether [`next`](Replay::next) would succeed now.
    fn can_replay(&self) -> Result<(), &'static str> {
        match self {
            Replay::Empty => Ok(()),
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
        let mut held = match take(&self.slot, self.generation, cx.waker()) {
            Take::Owned(held) => held,
            Take::Superseded => return Poll::Ready(Some(Err(superseded()))),
            Take::Busy => return Poll::Pending,
        };
        // The lock is released: the caller's body is polled on the owned state.
        if held.state.cursor.generation != self.generation {
            // The first poll of this attempt: it replays from the start.
            held.state.cursor = Cursor::new(self.generation);
        }
        let polled = held.state.step(cx);
        let (end, hint) = held.state.answers();
        held.finished = true;
        (self.end, self.hint) = (end, Hint::from(hint));
        // Put back here, before the frame goes to the transport.
        drop(held);
        polled
    }
}

// === impl Hint ===

impl From<SizeHint> for Hint {
    fn from(hint: SizeHint) -> Hint {
        Hint {
            lower: hint.lower(),
            upper: hint.upper().unwrap_or(u64::MAX),
        }
    }
}

impl From<Hint> for SizeHint {
    fn from(hint: Hint) -> SizeHint {
        let mut size = SizeHint::new();
        size.set_lower(hint.lower);
        // From a valid hint, so never below the lower bound; an exact `u64::MAX` reads as "at
        // least `u64::MAX`", which no body reaches.
        if hint.upper != u64::MAX {
            size.set_upper(hint.upper);
        }
        size
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
            Repr::Shared { reader } => reader.end,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.repr {
            Repr::Empty => SizeHint::with_exact(0),
            Repr::Once { body } => body.size_hint(),
            Repr::Shared { reader } => SizeHint::from(reader.hint),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request is moved a dozen times on its way into a connection (hyper alone moves it about
    /// fourteen times), so every byte of its body counts: the wrapper costs one word over the
    /// caller's body, `Request<ReplayBody<Full<Bytes>>>` no more than `Request<Full<Bytes>>` + 8.
    #[test]
    fn a_replay_body_is_one_word_larger_than_the_body_it_wraps() {
        use http_body_util::Full;
        assert_eq!(
            size_of::<ReplayBody<Full<Bytes>>>(),
            size_of::<Full<Bytes>>() + 8
        );
        assert_eq!(size_of::<ReplayBody<Bytes>>(), size_of::<Bytes>() + 8);
    }

    #[test]
    fn a_size_hint_survives_its_compact_form() {
        for hint in [
            SizeHint::default(),
            SizeHint::with_exact(0),
            SizeHint::with_exact(17),
            {
                let mut hint = SizeHint::new();
                hint.set_lower(3);
                hint.set_upper(9);
                hint
            },
            {
                let mut hint = SizeHint::new();
                hint.set_lower(5);
                hint
            },
        ] {
            let back = SizeHint::from(Hint::from(hint));
            assert_eq!((back.lower(), back.upper()), (hint.lower(), hint.upper()));
        }
    }
}
