//! The names of the metrics the server layers record with the `metrics` feature.
//!
//! The names are always compiled (they are only strings, for dashboards and tests); the counter
//! is recorded only with the crate's `metrics` feature, through the
//! [`metrics`](https://docs.rs/metrics) facade: into whichever recorder the application installs,
//! and into metrics' no-op recorder otherwise.
//!
//! | name | type | labels | when |
//! |---|---|---|---|
//! | [`SHED`] `backstop.server.shed` | counter | none | a request answered `503` by [`ShedWith503Layer`](crate::ShedWith503Layer) |

/// Counter: requests shed (answered `503` + `Retry-After` without reaching the handler).
pub const SHED: &str = "backstop.server.shed";

/// Registers the description of the metric above with the installed recorder (the help text a
/// Prometheus exporter shows). Optional: the metric is recorded without it.
#[cfg(feature = "metrics")]
pub fn describe() {
    metrics::describe_counter!(SHED, "Requests shed with 503 by the load shedder");
}
