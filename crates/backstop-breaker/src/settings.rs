//! [`Settings`]: the checked configuration every breaker of one layer shares, and its defaults.

use std::sync::Arc;
use std::time::Duration;

use backstop_classify::HttpPolicy;

use crate::state::{Mode, StateChange};
use crate::verdict::{Judge, default_verdict};
use crate::window::Window;

/// The validated settings shared by every breaker of one layer.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_call: Option<(Duration, f64)>,
    pub(crate) window: Window,
    pub(crate) minimum_calls: u32,
    pub(crate) probes: u32,
    pub(crate) open_base: Duration,
    pub(crate) open_max: Duration,
    pub(crate) open_multiplier: f64,
    pub(crate) open_jitter: f64,
    pub(crate) stable_after: Duration,
    pub(crate) throttled_counts_consecutive: bool,
    pub(crate) judge: Judge,
    pub(crate) policy: HttpPolicy,
    pub(crate) max_keys: usize,
    pub(crate) idle_after: Duration,
    pub(crate) seed: Option<u64>,
    pub(crate) initial_mode: Mode,
    pub(crate) cool_down_timer: bool,
}

impl Settings {
    pub(crate) fn slow_threshold(&self) -> Option<Duration> {
        self.slow_call.map(|(threshold, _)| threshold)
    }

    pub(crate) fn uses_window(&self) -> bool {
        self.failure_rate.is_some() || self.slow_call.is_some()
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            consecutive_failures: Some(5),
            failure_rate: Some(0.5),
            slow_call: None,
            window: Window::Count(100),
            minimum_calls: 20,
            probes: 1,
            open_base: Duration::from_secs(5),
            open_max: Duration::from_secs(300),
            open_multiplier: 2.0,
            open_jitter: 0.2,
            cool_down_timer: true,
            stable_after: Duration::from_secs(60),
            throttled_counts_consecutive: false,
            judge: default_verdict,
            policy: HttpPolicy::new(),
            max_keys: 1024,
            idle_after: Duration::from_secs(600),
            seed: None,
            initial_mode: Mode::Automatic,
        }
    }
}

/// The callback told of every state change.
pub(crate) type OnChange<Key> = Arc<dyn Fn(&StateChange<Key>) + Send + Sync>;
