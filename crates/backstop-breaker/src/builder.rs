//! [`Builder`]: every setting of a [`CircuitBreakerLayer`], checked in one place by
//! [`build`](Builder::build) against the bounds exported with it (`bounds.rs`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use backstop_classify::HttpPolicy;

use crate::authority::PerAuthority;
use crate::bounds::{ConfigError, validate};
use crate::key::{BreakerKey, FnKey, RequestHead, Single};
use crate::layer::{CircuitBreakerLayer, Readiness};
use crate::registry::Registry;
use crate::settings::{OnChange, Settings};
use crate::state::{Mode, StateChange};
use crate::verdict::Judge;
use crate::window::Window;

/// Builds a [`CircuitBreakerLayer`]; every setting is checked by [`build`](Builder::build).
///
/// Defaults: trip on 5 consecutive failures, or on a failure rate of 50 % over the last 100
/// calls once 20 are seen; slow-call rule off; open for 5 s, doubling (±20 % jitter) on each
/// repeated trip up to 5 min, back to 5 s after 60 s of stable closed state; 1 half-open probe;
/// 429 counts toward the rate but not the consecutive count; at most 1024 keys, idle ones
/// forgotten after 10 min.
pub struct Builder<K: BreakerKey> {
    key: K,
    settings: Settings,
    readiness: Readiness,
    on_change: Option<OnChange<K::Key>>,
}

impl<K: BreakerKey> fmt::Debug for Builder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("consecutive_failures", &self.settings.consecutive_failures)
            .field("failure_rate", &self.settings.failure_rate)
            .field("slow_call", &self.settings.slow_call)
            .field("window", &self.settings.window)
            .field("minimum_calls", &self.settings.minimum_calls)
            .field("probes", &self.settings.probes)
            .field("readiness", &self.readiness)
            .finish_non_exhaustive()
    }
}

impl<K: BreakerKey> Builder<K> {
    /// A builder with the default settings and breakers keyed by `key`.
    pub fn new(key: K) -> Builder<K> {
        Builder {
            key,
            settings: Settings::default(),
            readiness: Readiness::FailCalls,
            on_change: None,
        }
    }

    /// Opens after `n` consecutive failures (default 5; at least 1).
    #[must_use]
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.settings.consecutive_failures = Some(n);
        self
    }

    /// Turns the consecutive-failures rule off.
    #[must_use]
    pub fn no_consecutive_failures(mut self) -> Self {
        self.settings.consecutive_failures = None;
        self
    }

    /// Opens when failures are at least `rate` (in (0, 1]) of the calls in the window, once
    /// [`minimum_calls`](Builder::minimum_calls) are in it (default 0.5).
    #[must_use]
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.settings.failure_rate = Some(rate);
        self
    }

    /// Turns the failure-rate rule off.
    #[must_use]
    pub fn no_failure_rate(mut self) -> Self {
        self.settings.failure_rate = None;
        self
    }

    /// Opens when calls slower than `threshold` are at least `rate` (in (0, 1]) of the calls in
    /// the window, once [`minimum_calls`](Builder::minimum_calls) are in it. Off by default.
    /// A half-open probe slower than `threshold` counts as a failed probe.
    #[must_use]
    pub fn slow_calls(mut self, threshold: Duration, rate: f64) -> Self {
        self.settings.slow_call = Some((threshold, rate));
        self
    }

    /// The window the rate rules look at (default: the last 100 calls).
    #[must_use]
    pub fn window(mut self, window: Window) -> Self {
        self.settings.window = window;
        self
    }

    /// How many calls the window must hold before a rate rule may open the circuit (default
    /// 20; at least 1, at most the size of a count window).
    #[must_use]
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.settings.minimum_calls = n;
        self
    }

    /// How many probes a half-open breaker admits (default 1, at most 1000); all must succeed
    /// for it to close.
    #[must_use]
    pub fn half_open_probes(mut self, n: u32) -> Self {
        self.settings.probes = n;
        self
    }

    /// The open duration after a first trip (default 5 s).
    #[must_use]
    pub fn open_for(mut self, base: Duration) -> Self {
        self.settings.open_base = base;
        self
    }

    /// The longest open duration, whatever the number of repeated trips (default 5 min).
    #[must_use]
    pub fn max_open_for(mut self, max: Duration) -> Self {
        self.settings.open_max = max;
        self
    }

    /// How much longer each repeated trip stays open (default 2.0; at least 1.0).
    #[must_use]
    pub fn open_multiplier(mut self, multiplier: f64) -> Self {
        self.settings.open_multiplier = multiplier;
        self
    }

    /// The open duration is multiplied by a random factor in `[1 - jitter, 1 + jitter]` (default
    /// 0.2; in [0, 1)), before the cap is applied, so that clients that tripped together do not
    /// probe together.
    #[must_use]
    pub fn open_jitter(mut self, jitter: f64) -> Self {
        self.settings.open_jitter = jitter;
        self
    }

    /// After being closed this long without a trip, the next trip opens for the base duration
    /// again (default 60 s).
    #[must_use]
    pub fn stable_after(mut self, period: Duration) -> Self {
        self.settings.stable_after = period;
        self
    }

    /// Whether a throttling answer (HTTP 429, gRPC `RESOURCE_EXHAUSTED`) also counts toward the
    /// consecutive-failures rule (default `false`: it only counts toward the failure rate).
    #[must_use]
    pub fn throttled_counts_consecutive(mut self, counts: bool) -> Self {
        self.settings.throttled_counts_consecutive = counts;
        self
    }

    /// Replaces the judgement of what is a failure (default [`default_verdict`](crate::default_verdict)).
    ///
    /// The judge must be a pure function of the outcome: its verdict on
    /// [`Outcome::Success`](backstop_classify::Outcome::Success) is asked once, when the layer is
    /// built, and reused for every successful call.
    #[must_use]
    pub fn judge(mut self, judge: Judge) -> Self {
        self.settings.judge = judge;
        self
    }

    /// The policy used to classify responses that carry no
    /// [`Outcome`](backstop_classify::Outcome) (no `ClassifyLayer` inside the breaker).
    #[must_use]
    pub fn policy(mut self, policy: HttpPolicy) -> Self {
        self.settings.policy = policy;
        self
    }

    /// The most breakers kept (default 1024; at least 1). When a new key arrives at the limit,
    /// idle breakers are forgotten first, then the least recently used.
    #[must_use]
    pub fn max_keys(mut self, n: usize) -> Self {
        self.settings.max_keys = n;
        self
    }

    /// A breaker not used for this long may be forgotten (default 10 min). Use is sampled by
    /// sweeps (made when new keys arrive, at most every quarter of this period, or by
    /// [`Breakers::evict_idle`](crate::Breakers::evict_idle)), so a breaker goes between this
    /// long and this long plus one sweep interval after its last call.
    #[must_use]
    pub fn idle_after(mut self, period: Duration) -> Self {
        self.settings.idle_after = period;
        self
    }

    /// Seeds the jitter of the open durations, for reproducible tests.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.settings.seed = Some(seed);
        self
    }

    /// Whether a trip arms a tokio timer that marks the end of the cool-down (on by default).
    ///
    /// With it, a rejection reads no clock: it is one atomic load. The timer is armed once per
    /// trip, only when a tokio runtime is current (otherwise, and once it fires, rejections
    /// compare the clock). It fires a millisecond early and hands over to the exact clock
    /// comparison, so probes are never late while the runtime's timer driver runs. Turn it off
    /// for a runtime built without timers (`enable_time`): creating the timer would panic there.
    /// Under a paused test clock, a pending cool-down timer is a timer like any other: an idle
    /// runtime auto-advances to it.
    #[must_use]
    pub fn cool_down_timer(mut self, on: bool) -> Self {
        self.settings.cool_down_timer = on;
        self
    }

    /// Records outcomes, computes states and reports state changes, but never rejects a call:
    /// for trying out a configuration on live traffic.
    #[must_use]
    pub fn metrics_only(mut self, on: bool) -> Self {
        self.settings.initial_mode = if on {
            Mode::MetricsOnly
        } else {
            Mode::Automatic
        };
        self
    }

    /// Called on every state change of every breaker, after the change (state changes are
    /// also logged with `tracing` at warn level).
    #[must_use]
    pub fn on_state_change(
        mut self,
        callback: impl Fn(&StateChange<K::Key>) + Send + Sync + 'static,
    ) -> Self {
        self.on_change = Some(Arc::new(callback));
        self
    }

    /// Checks every setting and builds the layer.
    pub fn build(self) -> Result<CircuitBreakerLayer<K>, ConfigError> {
        validate(&self.settings)?;
        let registry = Registry::new(self.key, self.settings, self.on_change);
        Ok(CircuitBreakerLayer::from_parts(
            Arc::new(registry),
            self.readiness,
        ))
    }
}

impl Builder<Single> {
    /// What `poll_ready` does while the circuit is open (default [`Readiness::FailCalls`]).
    #[must_use]
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }
}

impl Builder<PerAuthority> {
    /// Keys breakers by `key` instead of by authority.
    pub fn key<K2: BreakerKey>(self, key: K2) -> Builder<K2> {
        Builder {
            key,
            settings: self.settings,
            readiness: self.readiness,
            on_change: None,
        }
    }

    /// Keys breakers by the value `f` computes from each request head.
    pub fn key_fn<F, Key>(self, f: F) -> Builder<FnKey<F>>
    where
        F: Fn(&RequestHead<'_>) -> Key + Send + Sync + 'static,
        Key: Eq + std::hash::Hash + Clone + fmt::Debug + Send + Sync + 'static,
    {
        self.key(FnKey::new(f))
    }
}
