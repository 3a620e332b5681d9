//! The call's telemetry: the `http.client.call` span every [`Client`](super::Client) call runs
//! in (the retry layer's `http.client.attempt` spans are its children), and, with the `metrics`
//! feature, the call's duration, the calls in flight and each new connection's phases.
//!
//! The cost rule: with no subscriber the span is disabled and nothing is formatted, redacted or
//! looked up (field values are computed inside the macro, which skips them when disabled; the
//! fields recorded at the end are recorded only into an enabled span). Without the `metrics`
//! feature no metric code is compiled.

use backstop_classify::telemetry::{redact_url, server_port};
use backstop_classify::{Error, Outcome};
use http::{Request, Response};
use tracing::Span;
use tracing::field::Empty;

use super::{CallInfo, RequestBody, ResponseBody};

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
            if let Some(Outcome::Failure(failure)) = Outcome::of(res.extensions()) {
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
    use std::sync::{Arc, OnceLock, PoisonError, RwLock};

    use backstop_classify::telemetry::{OTHER_HOST, host_label};
    use backstop_classify::{Error, Outcome};
    use http::{Request, Response};
    use metrics::{Key, Label};

    use super::super::{CallInfo, ConnectTimings, RequestBody, ResponseBody};
    use crate::metrics::{
        CLIENT_ACTIVE_REQUESTS, CLIENT_CONNECTION_PHASE_DURATION, CLIENT_REQUEST_DURATION,
        ERROR_TYPE, METHOD, PHASE, SERVER_ADDRESS, STATUS_CODE,
    };
    use crate::telemetry::keys::{self, FnvMap, KeyCache, MAX_KEYS};
    use crate::telemetry::{method_label, status_label};

    /// One host's keys, found with one lookup per call: its bounded label, its in-flight gauge,
    /// its connection phases, and its durations by method, status and error type.
    struct HostKeys {
        host: Arc<str>,
        active: Key,
        /// `dns`, `tcp`, `tls`.
        phases: [Key; 3],
        durations: KeyCache<(&'static str, Option<&'static str>, Option<&'static str>)>,
    }

    impl HostKeys {
        fn new(host: &str) -> HostKeys {
            let host = host_label(host);
            let phase = |phase: &'static str| {
                Key::from_parts(
                    CLIENT_CONNECTION_PHASE_DURATION,
                    vec![
                        Label::new(PHASE, phase),
                        Label::new(SERVER_ADDRESS, host.clone()),
                    ],
                )
            };
            HostKeys {
                active: Key::from_parts(
                    CLIENT_ACTIVE_REQUESTS,
                    vec![Label::new(SERVER_ADDRESS, host.clone())],
                ),
                phases: [phase("dns"), phase("tcp"), phase("tls")],
                durations: KeyCache::new(),
                host,
            }
        }
    }

    /// The keys of every host called, by the host as the URI spells it (bounded by
    /// [`MAX_KEYS`]; past it, a host's keys are made for each call).
    fn host_keys(host: &str) -> Arc<HostKeys> {
        static HOSTS: OnceLock<RwLock<FnvMap<Box<str>, Arc<HostKeys>>>> = OnceLock::new();
        let hosts = HOSTS.get_or_init(Default::default);
        if let Some(keys) = hosts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(host)
        {
            return keys.clone();
        }
        let keys = Arc::new(HostKeys::new(host));
        let mut write = hosts.write().unwrap_or_else(PoisonError::into_inner);
        if write.len() < MAX_KEYS {
            write.insert(Box::from(host), keys.clone());
        }
        keys
    }

    /// A call in flight: counted in `http.client.active_requests` from [`Active::start`] until
    /// dropped (a call that ends, and one whose future is dropped halfway).
    pub(in crate::client) struct Active {
        keys: Arc<HostKeys>,
        method: &'static str,
    }

    impl Active {
        pub(in crate::client) fn start(req: &Request<RequestBody>) -> Active {
            let keys = host_keys(req.uri().host().unwrap_or(OTHER_HOST));
            keys::gauge(&keys.active, 1.0);
            Active {
                keys,
                method: method_label(req.method()),
            }
        }

        /// One `http.client.request.duration` sample for the call, and the phases of the
        /// connection it opened, if it was the first call answered over a new one.
        pub(in crate::client) fn finish(&self, result: &Result<Response<ResponseBody>, Error>) {
            let (info, status, error) = match result {
                Ok(res) => {
                    let error = match Outcome::of(res.extensions()) {
                        Some(Outcome::Failure(failure)) => Some(failure.kind().label()),
                        _ => None,
                    };
                    (CallInfo::of(res), Some(status_label(res.status())), error)
                }
                Err(err) => (CallInfo::of_error(err), None, Some(err.kind().label())),
            };
            let Some(info) = info else { return };
            self.keys.durations.with(
                (self.method, status, error),
                |(method, status, error)| {
                    let mut labels = vec![
                        Label::new(METHOD, *method),
                        Label::new(SERVER_ADDRESS, self.keys.host.clone()),
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
            let [dns, tcp, tls] = &self.keys.phases;
            let phases = [
                (dns, connect.resolve),
                (tcp, Some(connect.tcp)),
                (tls, connect.tls),
            ];
            for (key, took) in phases {
                if let Some(took) = took {
                    keys::histogram(key, took.as_secs_f64());
                }
            }
        }
    }

    impl Drop for Active {
        fn drop(&mut self) {
            keys::gauge(&self.keys.active, -1.0);
        }
    }
}
