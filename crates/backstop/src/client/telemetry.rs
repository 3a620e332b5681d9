//! The call's telemetry: the `http.client.call` span every [`Client`](super::Client) call runs
//! in (the retry layer's `http.client.attempt` spans are its children), and, with the `metrics`
//! feature, the call's duration, the calls in flight and each new connection's phases.
//!
//! The cost rule: with no subscriber the span is disabled and nothing is formatted, redacted or
//! looked up (field values are computed inside the macro, which skips them when disabled; the
//! fields recorded at the end are recorded only into an enabled span). Without the `metrics`
//! feature no metric code is compiled.

use backstop_classify::telemetry::redact_url;
use backstop_classify::{Error, Outcome};
use http::{Request, Response};
use tracing::Span;
use tracing::field::Empty;

use super::{CallInfo, RequestBody, ResponseBody};
use crate::telemetry::server_port;

/// The span of one call, its outcome fields left empty until [`finish`].
pub(super) fn call_span(req: &Request<RequestBody>) -> Span {
    let uri = req.uri();
    tracing::info_span!(
        target: "backstop",
        "http.client.call",
        otel.name = req.method().as_str(),
        otel.kind = "client",
        http.request.method = req.method().as_str(),
        server.address = uri.host(),
        server.port = server_port(uri),
        url.scheme = uri.scheme_str(),
        url.full = tracing::field::display(redact_url(uri)),
        http.response.status_code = Empty,
        error.type = Empty,
        backstop.attempts = Empty,
    )
}

/// Records how the call ended in its span: the status, the failure's kind (an error's, or a
/// response classified as a failure: `http_status`), the attempts made.
pub(super) fn finish(span: &Span, result: &Result<Response<ResponseBody>, Error>) {
    if span.is_disabled() {
        return;
    }
    match result {
        Ok(res) => {
            span.record("http.response.status_code", res.status().as_u16());
            if let Some(Outcome::Failure(failure)) = res.extensions().get::<Outcome>() {
                span.record("error.type", failure.kind().label());
            }
            if let Some(info) = CallInfo::of(res) {
                span.record("backstop.attempts", info.attempts);
            }
        }
        Err(err) => {
            span.record("error.type", err.kind().label());
            if let Some(info) = CallInfo::of_error(err) {
                span.record("backstop.attempts", info.attempts);
            }
        }
    }
}

#[cfg(feature = "metrics")]
pub(super) use self::recorded::Active;

#[cfg(feature = "metrics")]
mod recorded {
    use std::sync::Arc;

    use backstop_classify::telemetry::{OTHER_HOST, host_label};
    use backstop_classify::{Error, Outcome};
    use http::{Request, Response};
    use metrics::{Key, Label};

    use super::super::{CallInfo, ConnectTimings, RequestBody, ResponseBody};
    use crate::metrics::{
        CLIENT_ACTIVE_REQUESTS, CLIENT_CONNECTION_PHASE_DURATION, CLIENT_REQUEST_DURATION,
        ERROR_TYPE, METHOD, PHASE, SERVER_ADDRESS, STATUS_CODE,
    };
    use crate::telemetry::keys::{self, KeyCache};
    use crate::telemetry::{method_label, status_label};

    /// `http.client.active_requests`, by host.
    static ACTIVE: KeyCache<Arc<str>> = KeyCache::new();
    /// `http.client.request.duration`, by method, host, status and error type.
    type DurationLabels = (
        &'static str,
        Arc<str>,
        Option<&'static str>,
        Option<&'static str>,
    );
    static DURATIONS: KeyCache<DurationLabels> = KeyCache::new();
    /// `http.client.connection.phase.duration`, by phase and host.
    static PHASES: KeyCache<(&'static str, Arc<str>)> = KeyCache::new();

    /// A call in flight: counted in `http.client.active_requests` from [`Active::start`] until
    /// dropped (a call that ends, and one whose future is dropped halfway).
    pub(in crate::client) struct Active {
        host: Arc<str>,
        method: &'static str,
    }

    impl Active {
        pub(in crate::client) fn start(req: &Request<RequestBody>) -> Active {
            let host = host_label(req.uri().host().unwrap_or(OTHER_HOST));
            active(&host, 1.0);
            Active {
                host,
                method: method_label(req.method()),
            }
        }

        /// One `http.client.request.duration` sample for the call, and the phases of the
        /// connection it opened, if it was the first call answered over a new one.
        pub(in crate::client) fn finish(&self, result: &Result<Response<ResponseBody>, Error>) {
            let (info, status, error) = match result {
                Ok(res) => {
                    let error = match res.extensions().get::<Outcome>() {
                        Some(Outcome::Failure(failure)) => Some(failure.kind().label()),
                        _ => None,
                    };
                    (CallInfo::of(res), Some(status_label(res.status())), error)
                }
                Err(err) => (CallInfo::of_error(err), None, Some(err.kind().label())),
            };
            let Some(info) = info else { return };
            DURATIONS.with(
                (self.method, self.host.clone(), status, error),
                |(method, host, status, error)| {
                    let mut labels = vec![
                        Label::new(METHOD, *method),
                        Label::new(SERVER_ADDRESS, host.clone()),
                    ];
                    if let Some(status) = status {
                        labels.push(Label::new(STATUS_CODE, *status));
                    }
                    if let Some(error) = error {
                        labels.push(Label::new(ERROR_TYPE, *error));
                    }
                    Key::from_parts(CLIENT_REQUEST_DURATION, labels)
                },
                |key| keys::histogram(key, info.time_to_headers.as_secs_f64()),
            );
            if let Some(connect) = info.connect {
                self.phases(&connect);
            }
        }

        fn phases(&self, connect: &ConnectTimings) {
            let phases = [
                ("dns", connect.resolve),
                ("tcp", Some(connect.tcp)),
                ("tls", connect.tls),
            ];
            for (phase, took) in phases {
                if let Some(took) = took {
                    PHASES.with(
                        (phase, self.host.clone()),
                        |(phase, host)| {
                            Key::from_parts(
                                CLIENT_CONNECTION_PHASE_DURATION,
                                vec![
                                    Label::new(PHASE, *phase),
                                    Label::new(SERVER_ADDRESS, host.clone()),
                                ],
                            )
                        },
                        |key| keys::histogram(key, took.as_secs_f64()),
                    );
                }
            }
        }
    }

    impl Drop for Active {
        fn drop(&mut self) {
            active(&self.host, -1.0);
        }
    }

    fn active(host: &Arc<str>, delta: f64) {
        ACTIVE.with(
            host.clone(),
            |host| {
                Key::from_parts(
                    CLIENT_ACTIVE_REQUESTS,
                    vec![Label::new(SERVER_ADDRESS, host.clone())],
                )
            },
            |key| keys::gauge(key, delta),
        );
    }
}
