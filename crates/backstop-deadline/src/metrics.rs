//! The names of the metrics the deadline layers record with the `metrics` feature, and of their
//! labels.
//!
//! The names are always compiled (they are only strings, for dashboards and tests); the counter
//! is recorded only with the crate's `metrics` feature, through the
//! [`metrics`](https://docs.rs/metrics) facade: into whichever recorder the application installs,
//! and into metrics' no-op recorder otherwise.
//!
//! | name | type | labels | when |
//! |---|---|---|---|
//! | [`EXPIRED`] `backstop.deadline.expired` | counter | [`SIDE`] | a call failed by its deadline: [`SIDE_CLIENT`] where the client's deadline fires ([`DeadlineLayer`](crate::DeadlineLayer), or [`AttemptTimeoutLayer`](crate::AttemptTimeoutLayer) bounding an attempt by the deadline), [`SIDE_SERVER`] where [`ServerDeadlineLayer`](crate::ServerDeadlineLayer) answers for the handler |

/// Counter: calls failed by their deadline, per [`SIDE`].
pub const EXPIRED: &str = "backstop.deadline.expired";

/// Label: which side's deadline fired, [`SIDE_CLIENT`] or [`SIDE_SERVER`].
pub const SIDE: &str = "side";

/// The [`SIDE`] of a client call's deadline.
pub const SIDE_CLIENT: &str = "client";

/// The [`SIDE`] of a served request's deadline.
pub const SIDE_SERVER: &str = "server";

/// Registers the description of the metric above with the installed recorder (the help text a
/// Prometheus exporter shows). Optional: the metric is recorded without it.
#[cfg(feature = "metrics")]
pub fn describe() {
    metrics::describe_counter!(
        EXPIRED,
        "Calls failed by their deadline, client or server side"
    );
}
