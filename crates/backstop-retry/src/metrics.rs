//! The names of the metrics the retry layer records with the `metrics` feature, and of their
//! labels (OpenTelemetry attribute names where a convention exists).
//!
//! The names are always compiled (they are only strings, for dashboards and tests); the counters
//! are recorded only with the crate's `metrics` feature, through the
//! [`metrics`](https://docs.rs/metrics) facade: into whichever recorder the application installs,
//! and into metrics' no-op recorder otherwise.
//!
//! | name | type | labels | when |
//! |---|---|---|---|
//! | [`ATTEMPTS`] `backstop.retry.attempts` | counter | [`SERVER_ADDRESS`] | every attempt, the first included |
//! | [`RETRIES`] `backstop.retry.retries` | counter | [`SERVER_ADDRESS`], [`REASON`] | every resend |
//! | [`STOPPED`] `backstop.retry.stopped` | counter | [`SERVER_ADDRESS`], [`STOP`] | a failure returned without a further retry |
//! | [`BUDGET_REJECTIONS`] `backstop.retry.budget.rejections` | counter | [`SERVER_ADDRESS`] | a retry refused by a budget |
//!
//! [`SERVER_ADDRESS`] is the request's host, bounded by
//! [`host_label`](backstop_classify::telemetry::host_label) (the first 1024 hosts, then
//! `"_other"`); [`REASON`] is the failure's
//! [`Kind::label`](backstop_classify::Kind::label); [`STOP`] is
//! [`StopReason::label`](crate::StopReason::label).

/// Counter: every attempt sent, the first included. Label: [`SERVER_ADDRESS`].
pub const ATTEMPTS: &str = "backstop.retry.attempts";

/// Counter: every resend (an attempt after the first). Labels: [`SERVER_ADDRESS`], [`REASON`].
pub const RETRIES: &str = "backstop.retry.retries";

/// Counter: a failed attempt the layer did not retry, returned to the caller. Labels:
/// [`SERVER_ADDRESS`], [`STOP`].
pub const STOPPED: &str = "backstop.retry.stopped";

/// Counter: a retry a [`RetryBudget`](crate::RetryBudget) refused (the layer's or the host's).
/// Label: [`SERVER_ADDRESS`].
pub const BUDGET_REJECTIONS: &str = "backstop.retry.budget.rejections";

/// Label: the request's host (OpenTelemetry `server.address`), bounded by
/// [`host_label`](backstop_classify::telemetry::host_label).
pub const SERVER_ADDRESS: &str = "server.address";

/// Label: the failure that caused a retry, as [`Kind::label`](backstop_classify::Kind::label)
/// (e.g. `"http_status"`, `"refused"`).
pub const REASON: &str = "reason";

/// Label: why the layer stopped, as [`StopReason::label`](crate::StopReason::label) (e.g.
/// `"attempts_exhausted"`).
pub const STOP: &str = "stop";

/// Registers the description of every metric above with the installed recorder (the help text a
/// Prometheus exporter shows). Optional: the metrics are recorded without it.
#[cfg(feature = "metrics")]
pub fn describe() {
    metrics::describe_counter!(
        ATTEMPTS,
        "Attempts sent by the retry layer, the first included"
    );
    metrics::describe_counter!(RETRIES, "Resends made by the retry layer, by failure kind");
    metrics::describe_counter!(
        STOPPED,
        "Failures the retry layer returned without retrying further, by reason"
    );
    metrics::describe_counter!(BUDGET_REJECTIONS, "Retries refused by a retry budget");
}
