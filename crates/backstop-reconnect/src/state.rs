//! [`State`] and [`Event`]: what the application observes of the supervisor.

use std::sync::Arc;
use std::time::Duration;

use backstop_classify::Error;

/// Where the supervisor stands, published through a `tokio::sync::watch` channel
/// ([`Handle::state`](crate::Handle::state)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum State {
    /// The first connection attempt is under way.
    Connecting,
    /// A connection is established and its on-connect hook succeeded.
    Connected {
        /// Counts established connections, from 1.
        connection: u64,
    },
    /// The last attempt or connection failed; the next attempt starts after `next_delay`.
    Reconnecting {
        /// The number of the coming attempt since the last healthy connection, from 1.
        attempt: u32,
        /// How long the supervisor waits before that attempt.
        next_delay: Duration,
        /// Why the last attempt or connection failed.
        last_error: Arc<Error>,
    },
    /// The supervisor has stopped; it will not connect again.
    Stopped {
        /// Why: `None` after [`Handle::shutdown`](crate::Handle::shutdown) (or every handle
        /// dropped), the give-up error after `max_attempts` or `max_elapsed`.
        error: Option<Arc<Error>>,
    },
}

impl State {
    /// `true` in [`State::Connected`].
    pub fn is_connected(&self) -> bool {
        matches!(self, State::Connected { .. })
    }

    /// `true` in [`State::Stopped`].
    pub fn is_stopped(&self) -> bool {
        matches!(self, State::Stopped { .. })
    }
}

/// One item of the supervisor's incoming stream ([`Events`](crate::Events)): messages in the
/// order they arrived, with the life of the connections between them.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event<M> {
    /// A connection is established and its on-connect hook succeeded.
    Connected {
        /// Counts established connections, from 1.
        connection: u64,
    },
    /// A message arrived (heartbeat replies are not delivered).
    Message(M),
    /// An attempt failed: the connect itself, or the on-connect hook.
    AttemptFailed {
        /// The attempt's number since the last healthy connection, from 1.
        attempt: u32,
        /// Why, classified.
        error: Arc<Error>,
    },
    /// An established connection ended.
    Disconnected {
        /// Why, classified: [`Kind::Closed`](backstop_classify::Kind::Closed) when the peer
        /// closed it, [`Kind::TimedOut`](backstop_classify::Kind::TimedOut)`(Idle)` when the
        /// heartbeat found it dead, the I/O error otherwise.
        error: Arc<Error>,
    },
    /// Messages the supervisor will not send, handed back in the order they were queued: the
    /// in-flight ones of a lost connection under
    /// [`Delivery::AtMostOnce`](crate::Delivery::AtMostOnce), and everything still queued or
    /// unacknowledged when the supervisor stops. Replaying them is the application's call.
    Unconfirmed(Vec<M>),
    /// The supervisor stopped; the stream ends after this item.
    Stopped {
        /// As in [`State::Stopped`].
        error: Option<Arc<Error>>,
    },
}
