//! What the retry layer tells `tracing` and `metrics`: the `http.client.attempt` span around
//! every attempt, the retry events, and (with the `metrics` feature) the counters named in
//! [`crate::metrics`].
//!
//! Nothing here may cost the success path anything measurable when no subscriber listens and
//! no recorder is installed: span fields are computed inside `tracing`'s macros, which evaluate
//! them only when the span is enabled, and every `metrics` call compiles only with the feature.

use backstop_classify::Failure;
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

/// The span of one physical attempt, a child of the span current when it is made: OpenTelemetry's
/// HTTP client span. `resend_count` is `None` for the first attempt (the attribute is set only on
/// resends), then 1, 2, …
///
/// `None` at once, inline, unless some subscriber listens at info level (the check `tracing`'s
/// macros make first); the field values are computed only when a subscriber enables the span.
#[inline(always)]
pub(crate) fn attempt_span(parts: &Parts, resend_count: Option<u32>) -> Option<Span> {
    use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
    if tracing::Level::INFO <= STATIC_MAX_LEVEL && tracing::Level::INFO <= LevelFilter::current() {
        Some(new_attempt_span(parts, resend_count))
    } else {
        None
    }
}

#[inline(never)]
fn new_attempt_span(parts: &Parts, resend_count: Option<u32>) -> Span {
    tracing::info_span!(
        target: TARGET,
        ATTEMPT_SPAN,
        "otel.name" = parts.method.as_str(),
        "otel.kind" = "client",
        "http.request.method" = parts.method.as_str(),
        "server.address" = server_address(parts),
        "server.port" = backstop_classify::telemetry::server_port(&parts.uri),
        "url.full" = tracing::field::display(backstop_classify::telemetry::redact_url(&parts.uri)),
        "http.request.resend_count" = resend_count,
        "http.response.status_code" = tracing::field::Empty,
        "error.type" = tracing::field::Empty,
    )
}

/// Records how the attempt of `span` ended: the response's status, and the failure's kind as
/// `error.type` when the answer is a failure.
#[inline(always)]
pub(crate) fn record_answer(
    span: Option<Span>,
    status: Option<http::StatusCode>,
    failure: Option<&Failure>,
) {
    if let Some(span) = span {
        record_in(span, status, failure);
    }
}

#[inline(never)]
fn record_in(span: Span, status: Option<http::StatusCode>, failure: Option<&Failure>) {
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

/// The call's per-host metrics, looked up once when the call starts: nothing at all without the
/// `metrics` feature; with it, the host's bounded
/// [`host_label`](backstop_classify::telemetry::host_label) and its counter keys, built once per
/// host so that counting an attempt allocates nothing.
#[derive(Clone, Default)]
pub(crate) struct HostMetrics {
    #[cfg(feature = "metrics")]
    keys: Option<std::sync::Arc<keys::HostKeys>>,
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
            keys: Some(keys::for_request(parts)),
        }
    }

    fn count(&self, key: impl Fn(&keys::HostKeys) -> &metrics::Key) {
        if let Some(keys) = &self.keys {
            metrics::with_recorder(|recorder| {
                recorder.register_counter(key(keys), &keys::METADATA)
            })
            .increment(1);
        }
    }

    pub(crate) fn attempt(&self) {
        self.count(|keys| &keys.attempts);
    }

    pub(crate) fn budget_rejection(&self) {
        self.count(|keys| &keys.budget_rejections);
    }

    pub(crate) fn retry(&self, failure: &Failure) {
        use crate::metrics::{REASON, RETRIES, SERVER_ADDRESS};
        if let Some(keys) = &self.keys {
            metrics::counter!(
                target: TARGET,
                RETRIES,
                SERVER_ADDRESS => keys.host.clone(),
                REASON => failure.kind().label()
            )
            .increment(1);
        }
    }

    pub(crate) fn stopped(&self, stop: StopReason) {
        use crate::metrics::{SERVER_ADDRESS, STOP, STOPPED};
        if let Some(keys) = &self.keys {
            metrics::counter!(
                target: TARGET,
                STOPPED,
                SERVER_ADDRESS => keys.host.clone(),
                STOP => stop.label()
            )
            .increment(1);
        }
    }
}

#[cfg(feature = "metrics")]
mod keys {
    use std::collections::HashMap;
    use std::hash::{BuildHasherDefault, Hasher};
    use std::sync::{Arc, OnceLock, PoisonError, RwLock};

    use backstop_classify::telemetry::{OTHER_HOST, host_label};
    use http::request::Parts;
    use metrics::{Key, Label};

    use crate::metrics::{ATTEMPTS, BUDGET_REJECTIONS, SERVER_ADDRESS};

    pub(super) static METADATA: metrics::Metadata<'static> =
        metrics::Metadata::new(super::TARGET, metrics::Level::INFO, Some(module_path!()));

    /// One host's label and the keys of its single-label counters.
    pub(super) struct HostKeys {
        pub(super) host: Arc<str>,
        pub(super) attempts: Key,
        pub(super) budget_rejections: Key,
    }

    /// The most authorities remembered by spelling; past it, requests look their host up by
    /// name (a little slower, still bounded by [`host_label`]).
    const MAX_AUTHORITIES: usize = 4096;

    type Fast<V> = HashMap<Box<str>, V, BuildHasherDefault<Fnv>>;

    /// FNV-1a: the keys are short host names, hashed on every call.
    #[derive(Default)]
    pub(super) struct Fnv(u64);

    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }

        fn write(&mut self, bytes: &[u8]) {
            let mut hash = if self.0 == 0 {
                0xcbf2_9ce4_8422_2325
            } else {
                self.0
            };
            for b in bytes {
                hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
            self.0 = hash;
        }
    }

    /// The keys of the request's host, found by its authority as spelled (no parsing on the
    /// common path), made at the host's first call. Hosts past [`host_label`]'s bound share the
    /// `"_other"` keys.
    pub(super) fn for_request(parts: &Parts) -> Arc<HostKeys> {
        static AUTHORITIES: OnceLock<RwLock<Fast<Arc<HostKeys>>>> = OnceLock::new();
        let authorities = AUTHORITIES.get_or_init(Default::default);
        // Never an authority carrying credentials: it would be kept in memory as a map key.
        let authority = parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .filter(|a| !a.contains('@'));
        if let Some(authority) = authority
            && let Some(found) = authorities
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(authority)
        {
            return found.clone();
        }
        let keys = for_host(super::server_address(parts).unwrap_or(OTHER_HOST));
        if let Some(authority) = authority {
            let mut map = authorities.write().unwrap_or_else(PoisonError::into_inner);
            if map.len() < MAX_AUTHORITIES {
                map.insert(Box::from(authority), keys.clone());
            }
        }
        keys
    }

    /// The keys of `host`, made once per label.
    fn for_host(host: &str) -> Arc<HostKeys> {
        static LABELS: OnceLock<RwLock<Fast<Arc<HostKeys>>>> = OnceLock::new();
        let labels = LABELS.get_or_init(Default::default);
        let label = host_label(host);
        if let Some(found) = labels
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&*label)
        {
            return found.clone();
        }
        let keys = Arc::new(HostKeys {
            attempts: Key::from_parts(ATTEMPTS, vec![Label::new(SERVER_ADDRESS, label.clone())]),
            budget_rejections: Key::from_parts(
                BUDGET_REJECTIONS,
                vec![Label::new(SERVER_ADDRESS, label.clone())],
            ),
            host: label.clone(),
        });
        labels
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(Box::from(&*label))
            .or_insert(keys)
            .clone()
    }
}
