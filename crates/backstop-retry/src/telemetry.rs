//! What the retry layer tells `tracing` and `metrics`: the `http.client.attempt` span around
//! every attempt, the retry events, and (with the `metrics` feature) the counters named in
//! [`crate::metrics`].
//!
//! Nothing here may cost the success path anything measurable when no subscriber listens and
//! no recorder is installed: span fields are computed inside `tracing`'s macros, which evaluate
//! them only when the span is enabled, and every `metrics` call compiles only with the feature.

use backstop_classify::Failure;
use http::Uri;
use http::request::Parts;
use tracing::Span;

use crate::info::StopReason;

/// The target of every span and event of the layer: the crate's name.
pub(crate) const TARGET: &str = "backstop_retry";

/// The name of the span around one attempt.
pub(crate) const ATTEMPT_SPAN: &str = "http.client.attempt";

/// The request's host (`server.address`): the URI's, else the `Host` header's.
fn server_address(parts: &Parts) -> Option<&str> {
    parts.uri.host().or_else(|| {
        let host = parts.headers.get(http::header::HOST)?.to_str().ok()?;
        // `host[:port]`, or `[v6]:port`
        Some(match host.rsplit_once(':') {
            Some((name, port)) if !port.contains(']') => name,
            _ => host,
        })
    })
}

/// The request's port (`server.port`): the URI's, else the scheme's default.
fn server_port(uri: &Uri) -> Option<u16> {
    uri.port_u16().or_else(|| match uri.scheme_str() {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    })
}

/// The span of one physical attempt, a child of the span current when it is made: OpenTelemetry's
/// HTTP client span. `resend_count` is `None` for the first attempt (the attribute is set only on
/// resends), then 1, 2, …
///
/// The field values are computed only when a subscriber enables the span: with none, this is a
/// level check and [`Span::none`].
#[inline]
pub(crate) fn attempt_span(parts: &Parts, resend_count: Option<u32>) -> Span {
    tracing::info_span!(
        target: TARGET,
        ATTEMPT_SPAN,
        "otel.name" = parts.method.as_str(),
        "otel.kind" = "client",
        "http.request.method" = parts.method.as_str(),
        "server.address" = server_address(parts),
        "server.port" = server_port(&parts.uri),
        "url.full" = tracing::field::display(backstop_classify::telemetry::redact_url(&parts.uri)),
        "http.request.resend_count" = resend_count,
        "http.response.status_code" = tracing::field::Empty,
        "error.type" = tracing::field::Empty,
    )
}

/// Records how the attempt of `span` ended: the response's status, and the failure's kind as
/// `error.type` when the answer is a failure.
#[inline]
pub(crate) fn record_answer(
    span: &Span,
    status: Option<http::StatusCode>,
    failure: Option<&Failure>,
) {
    if span.is_disabled() {
        return;
    }
    if let Some(status) = status {
        span.record("http.response.status_code", status.as_u16());
    }
    if let Some(failure) = failure {
        span.record("error.type", failure.kind().label());
    }
}

/// The "retry scheduled" event: attempt `resend_count` + 1 will be sent after `delay_ms`.
#[cold]
pub(crate) fn retry_scheduled(failure: &Failure, delay_ms: u64, resend_count: u32) {
    tracing::info!(
        target: TARGET,
        reason = failure.kind().label(),
        delay_ms,
        resend_count,
        phase = %failure.phase(),
        retry_after_ms = failure.retry_after().map(|d| d.as_millis() as u64),
        "retry scheduled"
    );
}

/// The "retry stopped" event: info when the caller gets an error, debug when it gets the failed
/// response (its status speaks for itself).
#[cold]
pub(crate) fn retry_stopped(stop: StopReason, failure: &Failure, returns_error: bool) {
    if returns_error {
        tracing::info!(
            target: TARGET,
            stop = stop.label(),
            reason = failure.kind().label(),
            "retry stopped"
        );
    } else {
        tracing::debug!(
            target: TARGET,
            stop = stop.label(),
            reason = failure.kind().label(),
            "retry stopped"
        );
    }
}

/// The host label of a call's metrics, taken once when the call starts: the bounded
/// [`host_label`](backstop_classify::telemetry::host_label) of its host with the `metrics`
/// feature, nothing at all without.
#[derive(Clone, Default)]
pub(crate) struct HostMetrics {
    #[cfg(feature = "metrics")]
    host: Option<std::sync::Arc<str>>,
}

#[cfg(not(feature = "metrics"))]
impl HostMetrics {
    #[inline(always)]
    pub(crate) fn of(_parts: &Parts) -> HostMetrics {
        HostMetrics {}
    }
    #[inline(always)]
    pub(crate) fn attempt(&self) {}
    #[inline(always)]
    pub(crate) fn retry(&self, _failure: &Failure) {}
    #[inline(always)]
    pub(crate) fn stopped(&self, _stop: StopReason) {}
    #[inline(always)]
    pub(crate) fn budget_rejection(&self) {}
}

#[cfg(feature = "metrics")]
impl HostMetrics {
    pub(crate) fn of(parts: &Parts) -> HostMetrics {
        HostMetrics {
            host: Some(backstop_classify::telemetry::host_label(
                server_address(parts).unwrap_or(backstop_classify::telemetry::OTHER_HOST),
            )),
        }
    }

    fn host(&self) -> std::sync::Arc<str> {
        match &self.host {
            Some(host) => host.clone(),
            None => std::sync::Arc::from(backstop_classify::telemetry::OTHER_HOST),
        }
    }

    pub(crate) fn attempt(&self) {
        use crate::metrics::{ATTEMPTS, SERVER_ADDRESS};
        metrics::counter!(ATTEMPTS, SERVER_ADDRESS => self.host()).increment(1);
    }

    pub(crate) fn retry(&self, failure: &Failure) {
        use crate::metrics::{REASON, RETRIES, SERVER_ADDRESS};
        metrics::counter!(RETRIES, SERVER_ADDRESS => self.host(), REASON => failure.kind().label())
            .increment(1);
    }

    pub(crate) fn stopped(&self, stop: StopReason) {
        use crate::metrics::{SERVER_ADDRESS, STOP, STOPPED};
        metrics::counter!(STOPPED, SERVER_ADDRESS => self.host(), STOP => stop.label())
            .increment(1);
    }

    pub(crate) fn budget_rejection(&self) {
        use crate::metrics::{BUDGET_REJECTIONS, SERVER_ADDRESS};
        metrics::counter!(BUDGET_REJECTIONS, SERVER_ADDRESS => self.host()).increment(1);
    }
}
