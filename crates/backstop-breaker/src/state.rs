//! The visible state of a breaker: [`State`], [`Snapshot`], [`StateChange`], [`Reason`].

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// The state of one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls flow; outcomes are recorded.
    Closed,
    /// Calls fail at once until the cool-down ends.
    Open,
    /// A limited number of probes are let through; the rest fail at once.
    HalfOpen,
    /// Isolated by hand: every call fails at once until released.
    ForcedOpen,
    /// Held closed by hand: every call flows and is recorded, nothing trips.
    ForcedClosed,
}

impl State {
    /// A short lower-case name, e.g. `"half-open"`.
    pub const fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
            State::ForcedOpen => "forced open",
            State::ForcedClosed => "forced closed",
        }
    }

    /// A fixed `snake_case` identifier, for the `from` / `to` fields of the transition event and
    /// labels of [`metrics::TRANSITIONS`](crate::metrics::TRANSITIONS): `"closed"`, `"open"`,
    /// `"half_open"`, `"forced_open"`, `"forced_closed"`.
    pub const fn label(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::ForcedClosed => "forced_closed",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a breaker is run: automatically, by hand, or watching only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The state machine decides.
    Automatic,
    /// Every call is rejected (isolate the dependency).
    ForcedOpen,
    /// Every call flows; nothing trips.
    ForcedClosed,
    /// The state machine runs and reports, but no call is ever rejected.
    MetricsOnly,
}

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Too many consecutive failures.
    ConsecutiveFailures,
    /// The failure rate over the window reached the threshold.
    FailureRate,
    /// The slow-call rate over the window reached the threshold.
    SlowCallRate,
    /// The open period ended: probes may go.
    CoolDownElapsed,
    /// A half-open probe failed.
    ProbeFailed,
    /// Every half-open probe succeeded.
    ProbesSucceeded,
    /// Changed by hand (force open, force closed, metrics only, automatic).
    Manual,
}

impl Reason {
    /// A short lower-case description.
    pub const fn describe(self) -> &'static str {
        match self {
            Reason::ConsecutiveFailures => "consecutive failures",
            Reason::FailureRate => "failure rate over the window",
            Reason::SlowCallRate => "slow-call rate over the window",
            Reason::CoolDownElapsed => "cool-down elapsed",
            Reason::ProbeFailed => "probe failed",
            Reason::ProbesSucceeded => "probes succeeded",
            Reason::Manual => "changed by hand",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// One state change of one breaker, as given to
/// [`on_state_change`](crate::Builder::on_state_change).
#[derive(Debug, Clone)]
pub struct StateChange<Key> {
    /// The breaker's key (the authority, by default).
    pub key: Key,
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// Why.
    pub reason: Reason,
    /// When, on tokio's clock.
    pub at: Instant,
    /// How long the breaker stays open, when `to` is [`State::Open`].
    pub open_for: Option<Duration>,
    /// Whether the breaker only watches ([`Mode::MetricsOnly`]): nothing is rejected.
    pub metrics_only: bool,
}

/// A point-in-time view of one breaker, for dashboards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// The current state.
    pub state: State,
    /// Whether the breaker only watches: the state is what would be, nothing is rejected.
    pub metrics_only: bool,
    /// Calls in the sliding window (zero when no rate rule is on).
    pub calls: u32,
    /// Failures in the sliding window.
    pub failures: u32,
    /// Slow calls in the sliding window.
    pub slow_calls: u32,
    /// `failures / calls`, when the window holds any call.
    pub failure_rate: Option<f64>,
    /// `slow_calls / calls`, when the window holds any call.
    pub slow_call_rate: Option<f64>,
    /// The current run of consecutive failures.
    pub consecutive_failures: u32,
    /// Trips in the current run of trips (resets after a stable closed period); the open
    /// duration grows with it.
    pub trips: u32,
    /// Time left before the next probe may go, while open.
    pub next_probe_in: Option<Duration>,
    /// Probes in flight, while half-open.
    pub probes_in_flight: u32,
}
