//! The name of every metric backstop emits, as constants, and the label keys they carry.
//!
//! With the `metrics` feature, backstop records through the [`metrics`](https://docs.rs/metrics)
//! facade: install any recorder (Prometheus, StatsD, OpenTelemetry's bridge…) and the series
//! appear; with no recorder installed each record is a call into metrics' no-op recorder. Without
//! the feature no metric code is compiled at all. The names follow OpenTelemetry's HTTP semantic
//! conventions where one exists (`http.client.request.duration`…); label keys are
//! OpenTelemetry's attribute names. Durations are in seconds.
//!
//! | name | type | labels | when |
//! |---|---|---|---|
//! | [`CLIENT_REQUEST_DURATION`] | histogram (s) | `http.request.method`, `server.address`, `http.response.status_code` (a response), `error.type` (a failure) | once per `Client` call, until the response head or the error |
//! | [`CLIENT_ACTIVE_REQUESTS`] | gauge | `server.address` | up when a call starts, down when it ends or is dropped |
//! | [`CLIENT_CONNECTION_PHASE_DURATION`] | histogram (s) | `phase` (`dns`, `tcp`, `tls`), `server.address` | once per new connection, by the first call answered over it |
//! | [`SERVER_REQUEST_DURATION`] | histogram (s) | `http.request.method`, `http.route` (when axum matched one), `http.response.status_code`, `error.type` | once per request through a `ServerStack`, until the response head |
//! | [`SERVER_ACTIVE_REQUESTS`] | gauge | `http.request.method` | up when a request enters a `ServerStack`, down when its response head leaves or it is dropped |
//!
//! The layers' own metrics, named in their crates and re-exported here: [`retry`]
//! (`backstop.retry.attempts`, `.retries`, `.stopped`, `.budget.rejections`), [`breaker`]
//! (`backstop.breaker.state`, `.transitions`, `.rejections`), [`deadline`]
//! (`backstop.deadline.expired`) and, with the `server` feature, `server`
//! (`backstop.server.shed`). The facade's `metrics` feature turns on every one of them.
//!
//! Hosts (`server.address`) are bounded by
//! [`host_label`](backstop_classify::telemetry::host_label) (the breaker map's 1 024, then
//! `_other`); routes are axum's route patterns, never the request's path; methods outside the
//! standard set are `_OTHER`.
//!
//! ```
//! assert_eq!(backstop::metrics::CLIENT_REQUEST_DURATION, "http.client.request.duration");
//! assert_eq!(backstop::metrics::retry::RETRIES, "backstop.retry.retries");
//! ```

/// The circuit breaker's metric names (`backstop-breaker`).
pub use backstop_breaker::metrics as breaker;
/// The deadline's metric names (`backstop-deadline`).
pub use backstop_deadline::metrics as deadline;
/// The retry layer's metric names (`backstop-retry`).
pub use backstop_retry::metrics as retry;
/// The server's metric names (`backstop-server`): with the `server` feature.
#[cfg(feature = "server")]
pub use backstop_server::metrics as server;

/// Histogram, seconds: one sample per [`Client`](crate#features) call.
pub const CLIENT_REQUEST_DURATION: &str = "http.client.request.duration";
/// Gauge: client calls in flight, per host.
pub const CLIENT_ACTIVE_REQUESTS: &str = "http.client.active_requests";
/// Histogram, seconds: the DNS, TCP and TLS phases of each new client connection.
pub const CLIENT_CONNECTION_PHASE_DURATION: &str = "http.client.connection.phase.duration";
/// Histogram, seconds: one sample per request served through a `ServerStack`.
pub const SERVER_REQUEST_DURATION: &str = "http.server.request.duration";
/// Gauge: requests being handled by a `ServerStack`, per method.
pub const SERVER_ACTIVE_REQUESTS: &str = "http.server.active_requests";

/// Label key: the request's method (`GET`, …, `_OTHER`).
pub const METHOD: &str = "http.request.method";
/// Label key: the host called, bounded.
pub const SERVER_ADDRESS: &str = "server.address";
/// Label key: the response's status code (`"200"`).
pub const STATUS_CODE: &str = "http.response.status_code";
/// Label key: the failure's kind ([`Kind::label`](backstop_classify::Kind::label)).
pub const ERROR_TYPE: &str = "error.type";
/// Label key: axum's matched route pattern (`/users/{id}`).
pub const ROUTE: &str = "http.route";
/// Label key: the connection phase (`dns`, `tcp`, `tls`).
pub const PHASE: &str = "phase";

/// Registers the description and unit of every metric backstop records — the facade's and every
/// layer's — with the installed recorder: the `# HELP` lines of a Prometheus scrape. Optional
/// (the metrics are recorded without it); call it once, after installing the recorder.
#[cfg(feature = "metrics")]
pub fn describe() {
    use ::metrics::{Unit, describe_gauge, describe_histogram};

    describe_histogram!(
        CLIENT_REQUEST_DURATION,
        Unit::Seconds,
        "Duration of backstop Client calls, retries included, until the response head or the error"
    );
    describe_gauge!(CLIENT_ACTIVE_REQUESTS, "backstop Client calls in flight");
    describe_histogram!(
        CLIENT_CONNECTION_PHASE_DURATION,
        Unit::Seconds,
        "DNS, TCP and TLS phases of each new client connection"
    );
    describe_histogram!(
        SERVER_REQUEST_DURATION,
        Unit::Seconds,
        "Duration of requests served through a ServerStack, until the response head"
    );
    describe_gauge!(
        SERVER_ACTIVE_REQUESTS,
        "Requests being handled by a ServerStack"
    );
    retry::describe();
    breaker::describe();
    deadline::describe();
    #[cfg(feature = "server")]
    server::describe();
}
