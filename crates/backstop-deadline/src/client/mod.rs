//! The client [`DeadlineLayer`]: one ceiling over the whole call, retries and backoff included.
//!
//! One file per piece, as in tower-http: the layer and its builder ([`DeadlineLayer`],
//! `layer.rs`), the service that decides the deadline of each call ([`DeadlineService`],
//! `service.rs`), its response future ([`ResponseFuture`], `future.rs`) and the response body it
//! bounds ([`DeadlineBody`], `body.rs`). The settings below say what the deadline covers, how it
//! reaches the layers inside, and who wakes the call at the deadline while they wait.

mod body;
mod bounds;
mod future;
mod layer;
mod service;

pub use body::DeadlineBody;
pub use bounds::{CallDeadline, DeadlineBounds};
pub use future::ResponseFuture;
pub use layer::{DeadlineLayer, DeadlineLayerBuilder};
pub use service::DeadlineService;

/// What the client deadline covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Covers {
    /// Until the response body has ended: a body still streaming at the deadline fails with timed
    /// out (deadline) in phase [`ReadBody`](backstop_classify::Phase::ReadBody). The default.
    #[default]
    Body,
    /// Until the response head arrives; the body then streams for as long as it takes.
    Head,
}

/// How the deadline travels to the layers inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Carry {
    /// As the [ambient](mod@crate::ambient) deadline, set around the inner `call` and every poll
    /// of the inner future: backstop's retry and [`AttemptTimeout`](crate::AttemptTimeout) read it
    /// with [`Deadline::current`](crate::Deadline::current). The default: it never touches the
    /// request, so it allocates nothing, and a call that completes at once never reads the clock.
    #[default]
    TaskLocal,
    /// Ambiently as above *and* as a [`Deadline`](crate::Deadline) in the request extensions, for
    /// layers that read only [`Deadline::of`](crate::Deadline::of) or that move the request to
    /// another task (e.g. tower's `Buffer`). Costs the extension map's allocations (3 when the
    /// request has no extensions yet) and a clock read per call.
    Extensions,
}

/// What the layers inside a client [`DeadlineLayer`] may wait on before the response head, and
/// so who wakes the call when the deadline passes: the layer's own timer, or the
/// [`AttemptTimeout`](crate::AttemptTimeout) inside.
///
/// This is the one fact the deadline layer needs about the stack it wraps, given when the stack
/// is built ([`DeadlineLayerBuilder::inner_waits`]) rather than discovered at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InnerWaits {
    /// Anything: the layer arms a timer of its own (boxed, one allocation) the first time the
    /// inner future leaves the call waiting. The default, correct whatever sits inside.
    #[default]
    Unbounded,
    /// Only attempts under an [`AttemptTimeoutLayer`](crate::AttemptTimeoutLayer) and delays that
    /// never cross the deadline (backstop-retry's backoff and `Retry-After` waits, which stop the
    /// call instead). The attempt timeout reads this deadline and bounds every attempt by
    /// `min(attempt timeout, time left)`, failing it with timed out (deadline) when the deadline
    /// is the earlier bound, so its timer wakes the call in time and this layer registers none:
    /// one timer per attempt instead of two. `backstop::Client` builds its stack so.
    ///
    /// A wait of anything else inside (a concurrency limit, a retry loop that sleeps past the
    /// deadline) then outlives the deadline until it ends. The response body is not affected:
    /// when the deadline [covers](Covers::Body) it, [`DeadlineBody`] keeps its own timer.
    BoundedByAttemptTimeout,
}
