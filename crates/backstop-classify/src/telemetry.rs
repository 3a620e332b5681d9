//! What every backstop layer puts in its spans, events and metric labels, decided in one place so
//! that the labels of one call agree from layer to layer.
//!
//! - [`Kind::label`]: the `error.type` of OpenTelemetry's HTTP conventions, a short `snake_case`
//!   identifier (`"refused"`, `"timed_out_attempt"`, `"http_status"`), never free text.
//! - [`redact_url`]: `url.full` without credentials or query values, as the conventions require.
//! - [`server_port`]: `server.port`, the explicit port or the scheme's default.
//! - [`host_label`]: `server.address` as a metric label, bounded: the first
//!   [`MAX_HOST_LABELS`] distinct hosts keep their name, every later one is
//!   [`OTHER_HOST`], so a client that calls a million hosts cannot grow a million series. Paths
//!   never become labels. [`BoundedLabels`] is the same bound for any other label (the server's routes).
//!
//! ```
//! use backstop_classify::telemetry::{host_label, redact_url};
//!
//! let uri: http::Uri = "https://user:secret@api.example/v1/items?token=abc&page=2".parse().unwrap();
//! assert_eq!(
//!     redact_url(&uri),
//!     "https://REDACTED:REDACTED@api.example/v1/items?token=REDACTED&page=REDACTED"
//! );
//! assert_eq!(&*host_label("api.example"), "api.example");
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock, RwLock};

use crate::kind::{Kind, ProtocolFailure, Timer, TlsFailure};

/// How many distinct hosts [`host_label`] names before it answers [`OTHER_HOST`]: the circuit
/// breaker map's default bound (`max_keys`), so metrics name at most the hosts it tracks.
pub const MAX_HOST_LABELS: usize = 1024;

/// The label of every host past the first [`MAX_HOST_LABELS`].
pub const OTHER_HOST: &str = "_other";

/// The value that replaces credentials and query values in [`redact_url`].
pub const REDACTED: &str = "REDACTED";

impl Kind {
    /// The failure as an `error.type` value (OpenTelemetry): a fixed `snake_case` identifier per
    /// kind, safe as a metric label. `Status` and `Grpc` are `"http_status"` / `"grpc_status"`;
    /// the code itself belongs in its own attribute (`http.response.status_code`).
    pub fn label(&self) -> &'static str {
        match self {
            Kind::Refused => "refused",
            Kind::Reset => "reset",
            Kind::TimedOut(Timer::Connect) => "timed_out_connect",
            Kind::TimedOut(Timer::Idle) => "timed_out_idle",
            Kind::TimedOut(Timer::Attempt) => "timed_out_attempt",
            Kind::TimedOut(Timer::Deadline) => "timed_out_deadline",
            Kind::TimedOut(Timer::Header) => "timed_out_header",
            Kind::TimedOut(Timer::Os) => "timed_out_os",
            Kind::HostUnreachable => "host_unreachable",
            Kind::NetworkUnreachable => "network_unreachable",
            Kind::BrokenPipe => "broken_pipe",
            Kind::AddrInUse => "addr_in_use",
            Kind::AddrNotAvailable => "addr_not_available",
            Kind::DnsNotFound => "dns_not_found",
            Kind::DnsTemporary => "dns_temporary",
            Kind::Tls(TlsFailure::Certificate) => "tls_certificate",
            Kind::Tls(TlsFailure::Handshake) => "tls_handshake",
            Kind::Protocol(ProtocolFailure::Malformed) => "protocol_malformed",
            Kind::Protocol(ProtocolFailure::Incomplete) => "protocol_incomplete",
            Kind::Protocol(ProtocolFailure::RefusedStream) => "protocol_refused_stream",
            Kind::Protocol(ProtocolFailure::GoAway) => "protocol_goaway",
            Kind::Protocol(ProtocolFailure::Http2) => "protocol_http2",
            Kind::Closed => "closed",
            Kind::Status(_) => "http_status",
            Kind::Grpc(_) => "grpc_status",
            Kind::Cancelled => "cancelled",
            Kind::BreakerOpen => "breaker_open",
            Kind::BudgetExhausted => "budget_exhausted",
            Kind::Overloaded => "overloaded",
            Kind::BodyNotReplayable => "body_not_replayable",
            Kind::Other => "_other",
        }
    }
}

/// `uri` as `url.full`: user and password replaced by [`REDACTED`], every query value replaced
/// by [`REDACTED`] (the names stay: they say which endpoint, the values may be tokens). A
/// relative URI (no scheme) is written as it is, redacted the same way.
pub fn redact_url(uri: &http::Uri) -> String {
    let mut out = String::with_capacity(uri.to_string().len());
    if let Some(scheme) = uri.scheme_str() {
        out.push_str(scheme);
        out.push_str("://");
    }
    if let Some(authority) = uri.authority() {
        let authority = authority.as_str();
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                out.push_str(REDACTED);
                if userinfo.contains(':') {
                    out.push(':');
                    out.push_str(REDACTED);
                }
                out.push('@');
                out.push_str(host);
            }
            None => out.push_str(authority),
        }
    }
    out.push_str(uri.path());
    if let Some(query) = uri.query() {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) => {
                    let _ = write!(out, "{name}={REDACTED}");
                }
                None => out.push_str(pair),
            }
        }
    }
    out
}

/// `server.port`: the port a request to `uri` reaches, the explicit one, else the scheme's
/// default (`http`/`ws` 80, `https`/`wss` 443); `None` for another scheme or a relative URI.
pub fn server_port(uri: &http::Uri) -> Option<u16> {
    uri.port_u16().or_else(|| match uri.scheme_str() {
        Some("http") | Some("ws") => Some(80),
        Some("https") | Some("wss") => Some(443),
        _ => None,
    })
}

/// `host` as a bounded metric label: the same `Arc` for the same host, [`OTHER_HOST`] once
/// [`MAX_HOST_LABELS`] hosts have been named. Hosts are compared as given (lower-case them
/// first where case may differ; `http::Uri` already does).
pub fn host_label(host: &str) -> Arc<str> {
    static HOSTS: BoundedLabels = BoundedLabels::new(MAX_HOST_LABELS);
    HOSTS.label(host)
}

/// A bounded set of metric label values: the first `max` distinct values keep their text (one
/// shared `Arc` each), every later one is [`OTHER_HOST`]'s `"_other"`. [`host_label`] is one;
/// a `static` of its own serves any other label that must not grow without bound (routes).
pub struct BoundedLabels {
    max: usize,
    labels: OnceLock<RwLock<HashMap<Box<str>, Arc<str>>>>,
    other: OnceLock<Arc<str>>,
}

impl BoundedLabels {
    /// An empty set naming at most `max` values; `const`, for a `static`.
    pub const fn new(max: usize) -> BoundedLabels {
        BoundedLabels {
            max,
            labels: OnceLock::new(),
            other: OnceLock::new(),
        }
    }

    /// The label of `value`: itself while fewer than `max` values were named, else `"_other"`.
    pub fn label(&self, value: &str) -> Arc<str> {
        let labels = self.labels.get_or_init(Default::default);
        // A poisoned lock only means another thread panicked while inserting: the map is still
        // a valid map, so keep using it.
        if let Some(found) = labels.read().unwrap_or_else(|p| p.into_inner()).get(value) {
            return found.clone();
        }
        let mut write = labels.write().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = write.get(value) {
            return found.clone();
        }
        if write.len() >= self.max {
            return self.other.get_or_init(|| Arc::from(OTHER_HOST)).clone();
        }
        let label: Arc<str> = Arc::from(value);
        write.insert(Box::from(value), label.clone());
        label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(s: &str) -> String {
        match s.parse::<http::Uri>() {
            Ok(uri) => redact_url(&uri),
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn credentials_and_query_values_are_redacted() {
        assert_eq!(redacted("http://a.test:8080/x"), "http://a.test:8080/x");
        assert_eq!(redacted("http://u@a.test/"), "http://REDACTED@a.test/");
        assert_eq!(
            redacted("http://u:p@a.test/p?k=v&flag&e="),
            "http://REDACTED:REDACTED@a.test/p?k=REDACTED&flag&e=REDACTED"
        );
        assert_eq!(redacted("/only/path?q=1"), "/only/path?q=REDACTED");
    }

    #[test]
    fn ports_default_by_scheme() {
        let port = |s: &str| server_port(&s.parse::<http::Uri>().unwrap_or_default());
        assert_eq!(port("http://a.test/"), Some(80));
        assert_eq!(port("https://a.test/"), Some(443));
        assert_eq!(port("wss://a.test/"), Some(443));
        assert_eq!(port("http://a.test:8080/"), Some(8080));
        assert_eq!(port("/relative"), None);
    }

    #[test]
    fn labels_are_distinct_identifiers() {
        let kinds = [
            Kind::Refused,
            Kind::Reset,
            Kind::TimedOut(Timer::Connect),
            Kind::TimedOut(Timer::Attempt),
            Kind::Status(http::StatusCode::SERVICE_UNAVAILABLE),
            Kind::Other,
        ];
        let mut seen = std::collections::HashSet::new();
        for kind in kinds {
            let label = kind.label();
            assert!(seen.insert(label), "{label} twice");
            assert!(
                label.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{label} is not snake_case"
            );
        }
    }

    #[test]
    fn a_bounded_set_names_its_first_values_only() {
        let set = BoundedLabels::new(2);
        assert_eq!(&*set.label("a"), "a");
        assert_eq!(&*set.label("b"), "b");
        assert_eq!(&*set.label("c"), OTHER_HOST);
        assert!(Arc::ptr_eq(&set.label("a"), &set.label("a")));
    }

    #[test]
    fn host_labels_are_bounded() {
        let first = host_label("bounded-0.test");
        assert!(Arc::ptr_eq(&first, &host_label("bounded-0.test")));
        for i in 0..MAX_HOST_LABELS + 10 {
            host_label(&format!("bounded-{i}.test"));
        }
        assert_eq!(&*host_label("one-more.test"), OTHER_HOST);
        // Named before the bound was reached: still named.
        assert_eq!(&*host_label("bounded-0.test"), "bounded-0.test");
    }
}
