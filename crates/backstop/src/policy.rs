//! [`Policy`]: every client layer's settings in one value, deserializable from TOML or JSON and
//! validated with messages that name the field and the rule.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An invalid setting (its field a dotted path such as `retry.max_attempts`, prefixed with the
/// route when it comes from a route table) and the rule it broke.
pub use backstop_classify::ConfigError;

/// How retries are spread out; see `backstop_retry::Jitter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JitterMode {
    /// `random(0, min(cap, base·2ⁿ))`: the fewest calls under contention (the default).
    #[default]
    Full,
    /// Half fixed, half random.
    Equal,
    /// `min(cap, random(base, 3·previous))`.
    Decorrelated,
    /// No jitter (not recommended: synchronised clients retry in waves).
    None,
}

impl From<JitterMode> for backstop_retry::Jitter {
    fn from(mode: JitterMode) -> Self {
        match mode {
            JitterMode::Full => backstop_retry::Jitter::Full,
            JitterMode::Equal => backstop_retry::Jitter::Equal,
            JitterMode::Decorrelated => backstop_retry::Jitter::Decorrelated,
            JitterMode::None => backstop_retry::Jitter::None,
        }
    }
}

/// The retry budget: retries allowed as a fraction of recent requests, plus a floor per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetPolicy {
    /// Whether retries are budgeted at all. Default `true`.
    pub enabled: bool,
    /// Retries as a fraction of requests, 0.0 ..= 1.0. Default `0.2`.
    pub ratio: f64,
    /// Retries always allowed per second, whatever the ratio. Default `10`.
    pub min_per_second: u32,
    /// The window the ratio is measured over. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        BudgetPolicy {
            enabled: true,
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// Retry settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts per request, the first included: 1 means "never retry". 1 ..= 10, default `3`.
    pub max_attempts: u32,
    /// The first backoff. Default `50ms`; at most `max_delay`.
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    /// The longest backoff, jitter included. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// How delays are randomised. Default `full`.
    pub jitter: JitterMode,
    /// The longest server `Retry-After` honoured. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub retry_after_max: Duration,
    /// The largest request body kept for replay, in bytes. Default 65 536.
    pub replay_limit: usize,
    /// Attach a fresh `Idempotency-Key` to non-idempotent requests so they may be retried.
    /// Default `false`.
    pub attach_idempotency_key: bool,
    /// Retry 409 Conflict (for requests that may be retried at all: idempotent or keyed).
    /// Default `false`: a 409 usually means a lost race that a replay would lose again; turn it
    /// on for servers that answer 409 for "this `Idempotency-Key` is still in progress".
    pub retry_conflict: bool,
    /// The retry budget.
    pub budget: BudgetPolicy,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
            jitter: JitterMode::Full,
            retry_after_max: Duration::from_secs(30),
            replay_limit: 64 * 1024,
            attach_idempotency_key: false,
            retry_conflict: false,
            budget: BudgetPolicy::default(),
        }
    }
}

/// Circuit breaker settings (one breaker per host).
///
/// The breaker sits inside the retry, so it counts **attempts**, not calls: a call that tries
/// three times and fails three times is three failures. A policy in which one call's own
/// attempts could open the breaker for every caller (`retry.max_attempts` ≥
/// `consecutive_failures`, or ≥ `minimum_calls` of the failure-rate rule) is rejected unless
/// `single_call_may_trip` says that is intended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerPolicy {
    /// Whether calls go through a breaker. Default `true`.
    pub enabled: bool,
    /// Consecutive failures that open the circuit. Default `5`.
    pub consecutive_failures: u32,
    /// Failure rate over the last `window_calls` that opens it, 0.0 < rate ≤ 1.0. Default `0.5`.
    pub failure_rate: f64,
    /// The sliding window, in calls. Default `100`.
    pub window_calls: u32,
    /// Calls the window must hold before the rate counts. Default `20`.
    pub minimum_calls: u32,
    /// The first cool-down before a probe. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// The longest cool-down after repeated trips. Default `300s`.
    #[serde(with = "humantime_serde")]
    pub max_open_for: Duration,
    /// Probes let through when half-open. Default `1`.
    pub half_open_probes: u32,
    /// Allow a policy in which one call's own retries can open the breaker (see above).
    /// Default `false`.
    pub single_call_may_trip: bool,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            enabled: true,
            consecutive_failures: 5,
            failure_rate: 0.5,
            window_calls: 100,
            minimum_calls: 20,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(300),
            half_open_probes: 1,
            single_call_may_trip: false,
        }
    }
}

/// Where the time left before the deadline is written into outgoing requests.
///
/// gRPC requests (`content-type: application/grpc…`) carry `grpc-timeout`, which gRPC servers
/// expect. Plain HTTP requests carry nothing unless `http` opts in: the header tells every
/// server how long the caller will wait, so it is for your own services, not third-party APIs.
///
/// ```toml
/// [propagation]
/// http = true                             # write request-timeout-ms on plain HTTP requests…
/// only_to = ["*.internal", "10.0.0.5:8080"] # …to these destinations only (default: all)
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PropagationPolicy {
    /// Write the milliseconds header on plain HTTP requests. Default `false`.
    pub http: bool,
    /// Its name. Default `request-timeout-ms`.
    pub header: String,
    /// The destinations that get it: host names (`api.internal`), `host:port`, or `*.suffix`
    /// wildcards; empty means every destination. Default empty.
    pub only_to: Vec<String>,
    /// Write `grpc-timeout` on gRPC requests. Default `true`.
    pub grpc: bool,
}

impl Default for PropagationPolicy {
    fn default() -> Self {
        PropagationPolicy {
            http: false,
            header: backstop_deadline::DEFAULT_TIMEOUT_HEADER
                .as_str()
                .to_owned(),
            only_to: Vec::new(),
            grpc: true,
        }
    }
}

/// The attempt timeout when none is set: 10 s, or the deadline when that is shorter.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Every client layer's settings. `Default` gives the documented production defaults; every field
/// may be omitted in TOML or JSON, durations are written like `"250ms"` or `"5s"`.
///
/// ```
/// let policy: backstop::Policy = toml::from_str(r#"
///     deadline = "2s"
///     attempt_timeout = "500ms"
///     [retry]
///     max_attempts = 1
/// "#)?;
/// policy.validate()?;
/// assert_eq!(policy.retry.max_attempts, 1);
/// assert_eq!(policy.connect_timeout, std::time::Duration::from_secs(5)); // the default
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// | field | default | rule |
/// |---|---|---|
/// | `deadline` | 30 s | the whole call, retries and backoff included; 1 ms ..= 1 day |
/// | `deadline_covers_body` | true | whether the deadline also bounds reading the response body |
/// | `attempt_timeout` | unset: 10 s, or `deadline` when shorter | one attempt; when set, ≤ `deadline` |
/// | `connect_timeout` | 5 s | DNS + TCP + TLS; 1 ms ..= 1 day (an attempt timeout shorter than it cuts a connect short too) |
/// | `idle_timeout` | 30 s | no byte while one is awaited; 1 ms ..= 1 day |
/// | `retry.*` | see [`RetryPolicy`] | `base_delay` ≤ `max_delay`; 1 ≤ `max_attempts` ≤ 10; `budget.ratio` in 0..=1 |
/// | `breaker.*` | see [`BreakerPolicy`] | `open_for` ≤ `max_open_for`; `failure_rate` in (0, 1]; one call's attempts cannot trip it unless `single_call_may_trip` |
/// | `propagation.*` | see [`PropagationPolicy`] | `header` a valid header name; `only_to` valid host patterns |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// The ceiling over the whole call.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// Whether the deadline also bounds the response body (until its end).
    pub deadline_covers_body: bool,
    /// The bound on one attempt; `None` (the default) follows the deadline: 10 s, or the
    /// deadline when that is shorter.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub attempt_timeout: Option<Duration>,
    /// The bound on establishing a connection (DNS + TCP + TLS).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The idle bound on connections and response bodies.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Retry settings.
    pub retry: RetryPolicy,
    /// Circuit breaker settings.
    pub breaker: BreakerPolicy,
    /// Where the deadline is propagated.
    pub propagation: PropagationPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            deadline: Duration::from_secs(30),
            deadline_covers_body: true,
            attempt_timeout: None,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            breaker: BreakerPolicy::default(),
            propagation: PropagationPolicy::default(),
        }
    }
}

const DAY: Duration = Duration::from_secs(86_400);
const MILLI: Duration = Duration::from_millis(1);

impl Policy {
    /// Parses a policy from TOML, naming the field of any error.
    pub fn from_toml(text: &str) -> Result<Policy, ConfigError> {
        let de = toml::Deserializer::new(text);
        let policy: Policy = serde_path_to_error::deserialize(de).map_err(path_error)?;
        policy.validate()?;
        Ok(policy)
    }

    /// Parses a policy from JSON, naming the field of any error.
    pub fn from_json(text: &str) -> Result<Policy, ConfigError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let policy: Policy = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks every rule, the cross-field ones included.
    pub fn validate(&self) -> Result<(), ConfigError> {
        within("deadline", self.deadline, MILLI, DAY)?;
        within("connect_timeout", self.connect_timeout, MILLI, DAY)?;
        within("idle_timeout", self.idle_timeout, MILLI, DAY)?;
        if let Some(attempt) = self.attempt_timeout {
            within("attempt_timeout", attempt, MILLI, DAY)?;
            if attempt > self.deadline {
                return Err(ConfigError::new(
                    "attempt_timeout",
                    format!(
                        "must not exceed deadline ({:?}), got {:?} (leave attempt_timeout unset \
                         to follow the deadline)",
                        self.deadline, attempt
                    ),
                ));
            }
        }
        let retry = &self.retry;
        if !(1..=backstop_retry::MAX_ATTEMPTS_LIMIT).contains(&retry.max_attempts) {
            return Err(ConfigError::new(
                "retry.max_attempts",
                format!(
                    "must be between 1 and {}, got {}",
                    backstop_retry::MAX_ATTEMPTS_LIMIT,
                    retry.max_attempts
                ),
            ));
        }
        within(
            "retry.max_delay",
            retry.max_delay,
            MILLI,
            Duration::from_secs(3600),
        )?;
        within(
            "retry.base_delay",
            retry.base_delay,
            MILLI,
            Duration::from_secs(3600),
        )?;
        if retry.base_delay > retry.max_delay {
            return Err(ConfigError::new(
                "retry.base_delay",
                format!(
                    "must not exceed retry.max_delay ({:?}), got {:?}",
                    retry.max_delay, retry.base_delay
                ),
            ));
        }
        within(
            "retry.retry_after_max",
            retry.retry_after_max,
            Duration::ZERO,
            Duration::from_secs(3600),
        )?;
        if retry.replay_limit > backstop_retry::MAX_REPLAY_LIMIT {
            return Err(ConfigError::new(
                "retry.replay_limit",
                format!(
                    "must be at most {} bytes, got {}",
                    backstop_retry::MAX_REPLAY_LIMIT,
                    retry.replay_limit
                ),
            ));
        }
        let budget = &retry.budget;
        if !(0.0..=1.0).contains(&budget.ratio) {
            return Err(ConfigError::new(
                "retry.budget.ratio",
                format!("must be between 0.0 and 1.0, got {}", budget.ratio),
            ));
        }
        within(
            "retry.budget.window",
            budget.window,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )?;
        let breaker = &self.breaker;
        if !(breaker.failure_rate > 0.0 && breaker.failure_rate <= 1.0) {
            return Err(ConfigError::new(
                "breaker.failure_rate",
                format!(
                    "must be above 0.0 and at most 1.0, got {}",
                    breaker.failure_rate
                ),
            ));
        }
        if breaker.open_for > breaker.max_open_for {
            return Err(ConfigError::new(
                "breaker.open_for",
                format!(
                    "must not exceed breaker.max_open_for ({:?}), got {:?}",
                    breaker.max_open_for, breaker.open_for
                ),
            ));
        }
        if breaker.enabled && !breaker.single_call_may_trip {
            // The breaker counts attempts: a call allowed as many attempts as a rule needs
            // failures could open the breaker for every caller on its own.
            let rules = [
                ("breaker.consecutive_failures", breaker.consecutive_failures),
                ("breaker.minimum_calls", breaker.minimum_calls),
            ];
            for (field, threshold) in rules {
                if threshold > 0 && retry.max_attempts >= threshold {
                    return Err(ConfigError::new(
                        "retry.max_attempts",
                        format!(
                            "must be below {field} ({threshold}), got {}: the breaker counts \
                             attempts, so one call's own retries would open it for every caller; \
                             lower one of them, or set breaker.single_call_may_trip = true",
                            retry.max_attempts
                        ),
                    ));
                }
            }
        }
        self.propagation.to_propagation().map(drop)
    }

    /// The bound on one attempt: the one set, or 10 s, or the deadline when that is shorter.
    pub fn effective_attempt_timeout(&self) -> Duration {
        self.attempt_timeout
            .unwrap_or(DEFAULT_ATTEMPT_TIMEOUT.min(self.deadline))
    }

    /// Applies `over` on top of this policy: every field `over` sets to something other than its
    /// default replaces this one's; the fields it leaves at their defaults keep what this policy
    /// has. So a builder's setters and `policy()` compose in call order, whichever comes first.
    pub(crate) fn overlay(&mut self, over: Policy) {
        // Destructured field by field, so a field added to `Policy` cannot be forgotten here.
        let Policy {
            deadline,
            deadline_covers_body,
            attempt_timeout,
            connect_timeout,
            idle_timeout,
            retry,
            breaker,
            propagation,
        } = over;
        let d = Policy::default();
        set(&mut self.deadline, deadline, d.deadline);
        set(
            &mut self.deadline_covers_body,
            deadline_covers_body,
            d.deadline_covers_body,
        );
        set(
            &mut self.attempt_timeout,
            attempt_timeout,
            d.attempt_timeout,
        );
        set(
            &mut self.connect_timeout,
            connect_timeout,
            d.connect_timeout,
        );
        set(&mut self.idle_timeout, idle_timeout, d.idle_timeout);

        let RetryPolicy {
            max_attempts,
            base_delay,
            max_delay,
            jitter,
            retry_after_max,
            replay_limit,
            attach_idempotency_key,
            retry_conflict,
            budget,
        } = retry;
        let (r, dr) = (&mut self.retry, d.retry);
        set(&mut r.max_attempts, max_attempts, dr.max_attempts);
        set(&mut r.base_delay, base_delay, dr.base_delay);
        set(&mut r.max_delay, max_delay, dr.max_delay);
        set(&mut r.jitter, jitter, dr.jitter);
        set(&mut r.retry_after_max, retry_after_max, dr.retry_after_max);
        set(&mut r.replay_limit, replay_limit, dr.replay_limit);
        set(
            &mut r.attach_idempotency_key,
            attach_idempotency_key,
            dr.attach_idempotency_key,
        );
        set(&mut r.retry_conflict, retry_conflict, dr.retry_conflict);
        let BudgetPolicy {
            enabled,
            ratio,
            min_per_second,
            window,
        } = budget;
        let (b, db) = (&mut r.budget, dr.budget);
        set(&mut b.enabled, enabled, db.enabled);
        set(&mut b.ratio, ratio, db.ratio);
        set(&mut b.min_per_second, min_per_second, db.min_per_second);
        set(&mut b.window, window, db.window);

        let BreakerPolicy {
            enabled,
            consecutive_failures,
            failure_rate,
            window_calls,
            minimum_calls,
            open_for,
            max_open_for,
            half_open_probes,
            single_call_may_trip,
        } = breaker;
        let (b, db) = (&mut self.breaker, d.breaker);
        set(&mut b.enabled, enabled, db.enabled);
        set(
            &mut b.consecutive_failures,
            consecutive_failures,
            db.consecutive_failures,
        );
        set(&mut b.failure_rate, failure_rate, db.failure_rate);
        set(&mut b.window_calls, window_calls, db.window_calls);
        set(&mut b.minimum_calls, minimum_calls, db.minimum_calls);
        set(&mut b.open_for, open_for, db.open_for);
        set(&mut b.max_open_for, max_open_for, db.max_open_for);
        set(
            &mut b.half_open_probes,
            half_open_probes,
            db.half_open_probes,
        );
        set(
            &mut b.single_call_may_trip,
            single_call_may_trip,
            db.single_call_may_trip,
        );

        let PropagationPolicy {
            http,
            header,
            only_to,
            grpc,
        } = propagation;
        let (p, dp) = (&mut self.propagation, d.propagation);
        set(&mut p.http, http, dp.http);
        set(&mut p.header, header, dp.header);
        set(&mut p.only_to, only_to, dp.only_to);
        set(&mut p.grpc, grpc, dp.grpc);
    }
}

/// Replaces `dst` with `value` unless `value` is the default.
fn set<T: PartialEq>(dst: &mut T, value: T, default: T) {
    if value != default {
        *dst = value;
    }
}

impl PropagationPolicy {
    /// The deadline layer's propagation rule, or the field that is invalid.
    pub(crate) fn to_propagation(&self) -> Result<backstop_deadline::Propagation, ConfigError> {
        let name = http::HeaderName::from_bytes(self.header.as_bytes()).map_err(|_| {
            ConfigError::new(
                "propagation.header",
                format!("must be a valid header name, got {:?}", self.header),
            )
        })?;
        let propagation = backstop_deadline::Propagation::new().grpc(self.grpc);
        if !self.http {
            return Ok(propagation.no_header());
        }
        let propagation = propagation.header(name);
        if self.only_to.is_empty() {
            Ok(propagation)
        } else {
            propagation.only_to(&self.only_to)
        }
    }
}

pub(crate) fn within(
    field: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    ConfigError::check_between(field, value, min, max).map(drop)
}

pub(crate) fn path_error<E: fmt::Display>(err: serde_path_to_error::Error<E>) -> ConfigError {
    let path = err.path().to_string();
    let inner = err.into_inner().to_string();
    // toml's messages carry a multi-line excerpt; keep the first line, which says what is wrong.
    let first = inner
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let rule = inner
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::trim)
        .filter(|last| *last != first)
        .map_or_else(|| first.to_owned(), |last| format!("{first}: {last}"));
    let field = match path.as_str() {
        "." => "(root)".to_owned(),
        // An unknown key spelled `""` (`{"": 1}`, `[""]`): named as written, not as nothing.
        "" => "\"\"".to_owned(),
        _ => path,
    };
    ConfigError::new(field, rule)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Policy::default().validate(), Ok(()));
    }

    #[test]
    fn cross_field_rules_name_the_field() {
        let policy = Policy {
            attempt_timeout: Some(Duration::from_secs(60)),
            ..Policy::default()
        };
        assert_eq!(
            policy.validate().map_err(|e| e.field().to_owned()),
            Err("attempt_timeout".into())
        );

        let mut policy = Policy::default();
        policy.retry.base_delay = Duration::from_secs(10);
        assert_eq!(
            policy.validate().map_err(|e| e.field().to_owned()),
            Err("retry.base_delay".into())
        );

        let mut policy = Policy::default();
        policy.retry.max_attempts = 0;
        assert_eq!(
            policy.validate().map_err(|e| e.field().to_owned()),
            Err("retry.max_attempts".into())
        );

        let mut policy = Policy::default();
        policy.retry.budget.ratio = 1.5;
        assert_eq!(
            policy.validate().map_err(|e| e.field().to_owned()),
            Err("retry.budget.ratio".into())
        );
    }

    #[test]
    fn toml_errors_name_the_field() {
        let err = Policy::from_toml("retries = 3").err();
        let err = err.map(|e| (e.field().to_owned(), e.rule().to_owned()));
        let (field, rule) = err.unwrap_or_default();
        assert_eq!(field, "retries");
        assert!(rule.contains("unknown field `retries`"), "{rule}");

        let err = Policy::from_toml("[retry]\nbase_delay = \"-5s\"").err();
        assert_eq!(
            err.map(|e| e.field().to_owned()),
            Some("retry.base_delay".to_owned())
        );

        let err = Policy::from_toml("deadline = \"1s\"\nattempt_timeout = \"2s\"").err();
        assert_eq!(
            err.map(|e| e.field().to_owned()),
            Some("attempt_timeout".to_owned())
        );

        let ok = Policy::from_json(
            r#"{"deadline": "250ms", "attempt_timeout": "100ms", "connect_timeout": "50ms"}"#,
        );
        assert_eq!(ok.map(|p| p.deadline), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn a_deadline_alone_is_valid_and_the_attempt_timeout_follows_it() {
        let policy = Policy::from_toml("deadline = \"300ms\"").unwrap();
        assert_eq!(policy.attempt_timeout, None);
        assert_eq!(
            policy.effective_attempt_timeout(),
            Duration::from_millis(300)
        );
        assert_eq!(
            Policy::default().effective_attempt_timeout(),
            DEFAULT_ATTEMPT_TIMEOUT
        );

        // One the user set and that contradicts the deadline is still an error naming both.
        let err = Policy::from_toml("deadline = \"300ms\"\nattempt_timeout = \"10s\"").unwrap_err();
        assert_eq!(err.field(), "attempt_timeout");
        assert!(err.rule().contains("deadline"), "{}", err.rule());
    }

    #[test]
    fn one_calls_retries_cannot_trip_the_breaker_unless_allowed() {
        let mut policy = Policy::default();
        policy.retry.max_attempts = 5;
        let err = policy.validate().unwrap_err();
        assert_eq!(err.field(), "retry.max_attempts");
        assert!(
            err.rule().contains("breaker.consecutive_failures (5)"),
            "{}",
            err.rule()
        );

        let mut policy = Policy::default();
        policy.retry.max_attempts = 4;
        policy.breaker.minimum_calls = 4;
        let err = policy.validate().unwrap_err();
        assert!(
            err.rule().contains("breaker.minimum_calls (4)"),
            "{}",
            err.rule()
        );

        policy.breaker.single_call_may_trip = true;
        assert_eq!(policy.validate(), Ok(()));
        policy.breaker.single_call_may_trip = false;
        policy.breaker.enabled = false;
        assert_eq!(policy.validate(), Ok(()));
    }

    #[test]
    fn an_invalid_propagation_header_names_the_field() {
        let err =
            Policy::from_toml("[propagation]\nhttp = true\nheader = \"bad header\"").unwrap_err();
        assert_eq!(err.field(), "propagation.header");
        let err = Policy::from_toml("[propagation]\nhttp = true\nonly_to = [\"a b\"]").unwrap_err();
        assert_eq!(err.field(), "propagation.only_to");
    }

    /// The configuration shown in README.md.
    #[test]
    fn the_readme_example_loads() {
        let policy = Policy::from_toml(
            r#"
deadline = "2s"
attempt_timeout = "500ms"
[retry]
max_attempts = 1
[propagation]
http = true
only_to = ["*.internal"]
"#,
        )
        .unwrap();
        assert_eq!(policy.propagation.only_to, ["*.internal"]);
        assert!(policy.propagation.http);
    }

    #[test]
    fn overlay_keeps_what_the_overlay_leaves_at_its_default() {
        let mut base = Policy::default();
        base.retry.max_attempts = 1;
        base.connect_timeout = Duration::from_millis(200);
        let over = Policy::from_toml("deadline = \"2s\"\n[retry]\njitter = \"equal\"").unwrap();
        base.overlay(over);
        assert_eq!(base.retry.max_attempts, 1);
        assert_eq!(base.connect_timeout, Duration::from_millis(200));
        assert_eq!(base.deadline, Duration::from_secs(2));
        assert_eq!(base.retry.jitter, JitterMode::Equal);
    }
}
