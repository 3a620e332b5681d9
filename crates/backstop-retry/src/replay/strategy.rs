//! [`ReplayStrategy`]: how the retry layer makes each attempt's body from the caller's, and the
//! default, [`BufferedReplay`].

use std::error::Error as StdError;
use std::fmt;

use http_body::Body;

use super::{Replay, ReplayBody};

/// How a [`RetryLayer`](crate::RetryLayer) sends a request body of type `B` more than once: the
/// body each attempt sends ([`Body`](ReplayStrategy::Body), the inner service's request body),
/// and what the retry future keeps between attempts to make the next one
/// ([`Kept`](ReplayStrategy::Kept)).
///
/// The default, [`BufferedReplay`], sends a [`ReplayBody<B>`] that keeps the bytes as the first
/// attempt streams them. Another strategy fits a body type that can replay itself more cheaply
/// (bytes held in memory replay as a clone of them), so that the layers below the retry see the
/// caller's body type rather than a wrapper one word larger. It must keep the layer's rules: a
/// body is kept up to `limit` bytes, one that declares more (or any body under a zero limit) is
/// sent again only if no attempt read from it, and [`replay`](ReplayStrategy::replay) refuses
/// when it cannot send the same bytes again. Choose one with
/// [`RetryLayer::with_replay`](crate::RetryLayer::with_replay).
pub trait ReplayStrategy<B> {
    /// The body every attempt sends.
    type Body;
    /// What the retry future keeps of a body that may be sent again.
    type Kept;

    /// For a request that may be retried: the first attempt's body, and what is kept to make
    /// the next ones, keeping up to `limit` bytes.
    fn keep(body: B, limit: usize) -> (Self::Body, Self::Kept);

    /// For a request that will not be retried: the only attempt's body.
    fn once(body: B) -> Self::Body;

    /// The next attempt's body, or why the body cannot be sent again. Called only once an
    /// attempt failed and the layer decided to retry; older attempts' bodies may be superseded.
    fn replay(kept: &Self::Kept) -> Result<Self::Body, NotReplayable>;

    /// Whether [`replay`](ReplayStrategy::replay) would succeed now, without making a body.
    fn can_replay(kept: &Self::Kept) -> Result<(), NotReplayable>;
}

/// Why a request body cannot be sent again (it outgrew the replay limit, it was read when
/// nothing of it could be kept, it failed): the retry layer then stops with
/// [`StopReason::BodyNotReplayable`](crate::StopReason::BodyNotReplayable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotReplayable {
    reason: &'static str,
}

impl NotReplayable {
    /// A refusal saying `reason`.
    pub const fn new(reason: &'static str) -> NotReplayable {
        NotReplayable { reason }
    }

    /// What the refusal says.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for NotReplayable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason)
    }
}

impl StdError for NotReplayable {}

/// The default [`ReplayStrategy`]: every attempt sends a [`ReplayBody<B>`], which keeps the
/// bytes of the caller's body (up to the limit) as the first attempt streams them, shared between
/// attempts, and replays them on a retry. A body at its end is replayed for free.
#[derive(Clone, Copy, Debug, Default)]
pub struct BufferedReplay;

/// What [`BufferedReplay`] keeps of a body between attempts.
pub struct ReplayHandle<B> {
    replay: Replay<B>,
}

impl<B> fmt::Debug for ReplayHandle<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.replay {
            Replay::Empty => "empty",
            Replay::Shared(_) => "replayable",
        };
        f.debug_struct("ReplayHandle").field("kind", &kind).finish()
    }
}

impl<B: Body> ReplayStrategy<B> for BufferedReplay {
    type Body = ReplayBody<B>;
    type Kept = ReplayHandle<B>;

    #[inline(always)]
    fn keep(body: B, limit: usize) -> (ReplayBody<B>, ReplayHandle<B>) {
        let (body, replay) = ReplayBody::replayable(body, limit);
        (body, ReplayHandle { replay })
    }

    #[inline]
    fn once(body: B) -> ReplayBody<B> {
        ReplayBody::once(body)
    }

    fn replay(kept: &ReplayHandle<B>) -> Result<ReplayBody<B>, NotReplayable> {
        kept.replay.next().map_err(NotReplayable::new)
    }

    fn can_replay(kept: &ReplayHandle<B>) -> Result<(), NotReplayable> {
        kept.replay.can_replay().map_err(NotReplayable::new)
    }
}
