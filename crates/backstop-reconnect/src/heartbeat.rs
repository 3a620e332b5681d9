//! [`Heartbeat`]: finding a silent dead peer within a bound.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use backstop_classify::ConfigError;

/// The longest heartbeat interval or timeout accepted.
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(3600);

type PingFn<M> = Arc<dyn Fn() -> M + Send + Sync>;
type PongFn<M> = Arc<dyn Fn(&M) -> bool + Send + Sync>;

/// Pings a quiet connection and declares it dead when nothing arrives in time.
///
/// Any incoming message proves the peer alive. After `interval` without one the supervisor
/// sends `ping()` (again every `interval`); when `interval + timeout` pass without any incoming
/// message the connection is dropped as
/// [`Kind::TimedOut`](backstop_classify::Kind::TimedOut)`(`[`Timer::Idle`](backstop_classify::Timer::Idle)`)`.
/// So a peer that goes silent is detected at most `interval + timeout` after the last thing it
/// sent. Replies for which `is_pong` is true are swallowed, not delivered to the application.
/// Writes are bounded by the same deadline, so a peer that stops reading is detected too.
pub struct Heartbeat<M> {
    interval: Duration,
    timeout: Duration,
    ping: PingFn<M>,
    is_pong: PongFn<M>,
}

impl<M> Clone for Heartbeat<M> {
    fn clone(&self) -> Self {
        Heartbeat {
            interval: self.interval,
            timeout: self.timeout,
            ping: Arc::clone(&self.ping),
            is_pong: Arc::clone(&self.is_pong),
        }
    }
}

impl<M> fmt::Debug for Heartbeat<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heartbeat")
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<M> Heartbeat<M> {
    /// An application-defined heartbeat (e.g. a `PING` line answered by `PONG` on TCP).
    ///
    /// `interval` and `timeout` must each be between 1 ms and one hour.
    pub fn new(
        interval: Duration,
        timeout: Duration,
        ping: impl Fn() -> M + Send + Sync + 'static,
        is_pong: impl Fn(&M) -> bool + Send + Sync + 'static,
    ) -> Result<Self, ConfigError> {
        check("heartbeat.interval", interval)?;
        check("heartbeat.timeout", timeout)?;
        Ok(Heartbeat {
            interval,
            timeout,
            ping: Arc::new(ping),
            is_pong: Arc::new(is_pong),
        })
    }

    /// How long a connection may be quiet before it is pinged.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How long after the first ping the peer has to send anything.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The longest a silent peer goes undetected: `interval + timeout`.
    pub fn bound(&self) -> Duration {
        self.interval + self.timeout
    }

    pub(crate) fn ping(&self) -> M {
        (self.ping)()
    }

    pub(crate) fn is_pong(&self, msg: &M) -> bool {
        (self.is_pong)(msg)
    }
}

#[cfg(feature = "websocket")]
impl Heartbeat<tokio_tungstenite::tungstenite::Message> {
    /// WebSocket ping/pong: an empty Ping frame, and Pong frames swallowed (the peer's
    /// WebSocket stack answers pings by itself).
    pub fn websocket(interval: Duration, timeout: Duration) -> Result<Self, ConfigError> {
        use tokio_tungstenite::tungstenite::Message;
        Heartbeat::new(
            interval,
            timeout,
            || Message::Ping(Default::default()),
            |msg| matches!(msg, Message::Pong(_)),
        )
    }
}

pub(crate) fn check(field: &'static str, value: Duration) -> Result<Duration, ConfigError> {
    if value < Duration::from_millis(1) {
        return Err(ConfigError::new(field, "must be at least 1 ms"));
    }
    if value > MAX_HEARTBEAT {
        return Err(ConfigError::new(field, "must be at most one hour"));
    }
    Ok(value)
}
