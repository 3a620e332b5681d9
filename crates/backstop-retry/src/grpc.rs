//! [`GrpcRetryPolicy`]: which gRPC methods may be retried after the server processed them, on
//! which status codes and how many times — gRPC's service-config `retryPolicy` (gRFC A6).

use std::fmt;
use std::sync::Arc;

use backstop_classify::{GrpcCode, Kind};
use http::header::CONTENT_TYPE;
use http::request::Parts;

use crate::ConfigError;
use crate::backoff::Backoff;
use crate::info::MAX_ATTEMPTS_LIMIT;

/// The retry policy of one gRPC method (or of every method of a service): A6's `retryPolicy`.
///
/// Checked when the layer is built ([`RetryLayerBuilder::build`](crate::RetryLayerBuilder::build)):
/// `max_attempts` from 2 to [`MAX_ATTEMPTS_LIMIT`], at least one retryable code, never `OK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MethodRetry {
    max_attempts: u32,
    /// One bit per code, by its number (`1 << 14` is `UNAVAILABLE`): `Copy`, and a lookup is a
    /// shift.
    codes: u32,
    backoff: Option<Backoff>,
}

impl MethodRetry {
    /// Up to `max_attempts` attempts (the first included, A6's `maxAttempts`), retrying the
    /// statuses in `retryable_status_codes` (A6's `retryableStatusCodes`).
    pub fn new(
        max_attempts: u32,
        retryable_status_codes: impl IntoIterator<Item = GrpcCode>,
    ) -> MethodRetry {
        let codes = retryable_status_codes
            .into_iter()
            .fold(0u32, |bits, code| bits | bit(code));
        MethodRetry {
            max_attempts,
            codes,
            backoff: None,
        }
    }

    /// This method's backoff instead of the layer's (A6's `initialBackoff` and `maxBackoff`).
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> MethodRetry {
        self.backoff = Some(backoff);
        self
    }

    /// The most attempts, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether a status `code` may be retried under this policy.
    pub fn retries(&self, code: GrpcCode) -> bool {
        self.codes & bit(code) != 0
    }

    /// The retryable codes, in numeric order.
    pub fn retryable_status_codes(&self) -> impl Iterator<Item = GrpcCode> + '_ {
        (0..=16)
            .map(GrpcCode::from_i32)
            .filter(|code| self.retries(*code))
    }

    pub(crate) fn backoff_override(&self) -> Option<Backoff> {
        self.backoff
    }

    fn check(&self) -> Result<(), ConfigError> {
        if !(2..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                "grpc_methods",
                "max_attempts must be between 2 and 10 (MAX_ATTEMPTS_LIMIT), as A6 requires more \
                 than 1",
            ));
        }
        if self.codes == 0 {
            return Err(ConfigError::new(
                "grpc_methods",
                "retryable_status_codes must not be empty",
            ));
        }
        if self.retries(GrpcCode::Ok) {
            return Err(ConfigError::new(
                "grpc_methods",
                "retryable_status_codes must not contain OK",
            ));
        }
        Ok(())
    }
}

const fn bit(code: GrpcCode) -> u32 {
    1 << code.as_i32()
}

/// Which gRPC methods may be retried after the server processed them: a [`MethodRetry`] per
/// method, per service, or for every method — A6's `methodConfig` with its `name` entries.
///
/// The most specific entry wins: `service` + `method`, then `service` alone, then the
/// [default](GrpcRetryPolicy::every_method). Give it to the layer with
/// [`RetryLayerBuilder::grpc_methods`](crate::RetryLayerBuilder::grpc_methods).
///
/// Every gRPC call is an HTTP/2 `POST`, so by the layer's usual rules a call that reached the
/// server is never sent again: nothing in the protocol says a method is idempotent. gRPC's own
/// answer (gRFC A6, "Client Retries") is a per-method policy written by the service owner, who
/// knows which methods are safe to repeat and which status codes mean "not processed". This
/// module is that policy, keyed by the request path `/package.Service/Method`.
///
/// What is retried, as in A6:
/// - **Without a policy for the method** only *transparent* retries: an attempt that never left
///   the client (connection refused, a pooled connection closed before the write) or that the
///   server's HTTP/2 layer proves unprocessed (`REFUSED_STREAM`, a `GOAWAY` above the stream).
///   A status after processing — `UNAVAILABLE` included — is returned as it is. (A request marked
///   [`RetryOverride::Idempotent`](crate::RetryOverride) is the one exception: the caller has
///   vouched for it, and it is treated like an idempotent HTTP request.)
/// - **With a policy** ([`MethodRetry`]), also a status listed in its retryable codes, up to its
///   `max_attempts` (the first attempt included). Any other status is final. A `Trailers-Only`
///   response (the status in the response head, as tonic and every gRPC server send an error
///   before any message) is judged from its head; once a response head without a status arrives
///   the call is *committed* (A6) and a status in its trailers is the caller's to handle.
/// - A non-gRPC HTTP status in front of the server (a proxy's `503`) is read as the gRPC code
///   gRPC clients give it (`429`, `502`, `503`, `504` → `UNAVAILABLE`, `401` →
///   `UNAUTHENTICATED`, `403` → `PERMISSION_DENIED`, `404` → `UNIMPLEMENTED`, `400` →
///   `INTERNAL`, any other → `UNKNOWN`). Other failures after the request went out (a reset, an
///   attempt timeout) follow the layer's usual rules: not retried for a `POST`.
/// - `grpc-retry-pushback-ms`: a valid value replaces the backoff for the next retry; a negative
///   or unparsable one ends the retries (A6 "Pushback"), whatever the policy lists. A pushback
///   longer than [`retry_after_max`](crate::RetryLayerBuilder::retry_after_max) ends them too.
///
/// Where backstop differs from A6, on purpose: the retry *throttle* is the layer's
/// [`RetryBudget`](crate::RetryBudget) (a share of the traffic) rather than A6's per-server token
/// bucket; transparent retries count against the attempts like any other (A6 lets a call that
/// never left the client retry until its deadline); `maxAttempts` is capped at
/// [`MAX_ATTEMPTS_LIMIT`] (A6's client-side cap is 5) and a larger value is rejected rather than
/// lowered; the backoff is the layer's (or the method's [`MethodRetry::backoff`]), exponential
/// with a fixed multiplier of 2 — A6's `backoffMultiplier` is not configurable; hedging is not
/// offered. As A6 asks, the backoff starts over from its initial delay after a retry timed by a
/// pushback.
///
/// ```
/// use backstop_classify::{GrpcCode, GrpcPolicy};
/// use backstop_retry::{GrpcRetryPolicy, MethodRetry, RetryLayer};
///
/// // The equivalent of this service config:
/// // { "methodConfig": [
/// //   { "name": [{ "service": "shop.Cart", "method": "Get" }],
/// //     "retryPolicy": { "maxAttempts": 4, "retryableStatusCodes": ["UNAVAILABLE", "ABORTED"] } },
/// //   { "name": [{ "service": "shop.Stock" }],
/// //     "retryPolicy": { "maxAttempts": 2, "retryableStatusCodes": ["UNAVAILABLE"] } } ] }
/// let methods = GrpcRetryPolicy::new()
///     .method("shop.Cart", "Get", MethodRetry::new(4, [GrpcCode::Unavailable, GrpcCode::Aborted]))
///     .service("shop.Stock", MethodRetry::new(2, [GrpcCode::Unavailable]));
/// let layer = RetryLayer::builder().policy(GrpcPolicy::new()).grpc_methods(methods).build()?;
/// # drop(layer);
/// # Ok::<(), backstop_retry::ConfigError>(())
/// ```
#[derive(Clone, Default)]
pub struct GrpcRetryPolicy {
    /// `(service, method)`, the method empty for a whole service. Few entries per client: a
    /// linear scan beats hashing the path.
    entries: Arc<[Entry]>,
    every: Option<MethodRetry>,
}

/// `(service, method, policy)`; the method is empty for a whole service.
type Entry = (Box<str>, Box<str>, MethodRetry);

impl fmt::Debug for GrpcRetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (service, method, retry) in self.entries.iter() {
            map.entry(&format_args!("/{service}/{method}"), retry);
        }
        if let Some(every) = &self.every {
            map.entry(&"*", every);
        }
        map.finish()
    }
}

impl GrpcRetryPolicy {
    /// No method retried beyond the transparent retries.
    pub fn new() -> GrpcRetryPolicy {
        GrpcRetryPolicy::default()
    }

    /// The policy of one method: `service` is the fully qualified service name
    /// (`package.Service`), `method` the method name (`GetFeature`), as in a service config's
    /// `{"service": …, "method": …}`. The request path is `/service/method`.
    #[must_use]
    pub fn method(self, service: &str, method: &str, retry: MethodRetry) -> GrpcRetryPolicy {
        self.insert(service, method, retry)
    }

    /// The policy of every method of `service` without one of its own (a service config name
    /// without `method`).
    #[must_use]
    pub fn service(self, service: &str, retry: MethodRetry) -> GrpcRetryPolicy {
        self.insert(service, "", retry)
    }

    /// The policy of every method no other entry covers (a service config name with neither
    /// `service` nor `method`).
    #[must_use]
    pub fn every_method(mut self, retry: MethodRetry) -> GrpcRetryPolicy {
        self.every = Some(retry);
        self
    }

    fn insert(self, service: &str, method: &str, retry: MethodRetry) -> GrpcRetryPolicy {
        let mut entries: Vec<_> = self
            .entries
            .iter()
            .filter(|(s, m, _)| !(&**s == service && &**m == method))
            .cloned()
            .collect();
        entries.push((service.into(), method.into(), retry));
        GrpcRetryPolicy {
            entries: entries.into(),
            every: self.every,
        }
    }

    /// The policy for the call to `path` (`/service/method`), if any entry covers it.
    pub fn lookup(&self, path: &str) -> Option<&MethodRetry> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        let mut whole_service = None;
        for (s, m, retry) in self.entries.iter() {
            if &**s != service {
                continue;
            }
            if &**m == method {
                return Some(retry);
            }
            if m.is_empty() {
                whole_service = Some(retry);
            }
        }
        whole_service.or(self.every.as_ref())
    }

    /// The policy for a request: only gRPC requests (`content-type: application/grpc…`) have
    /// one.
    pub(crate) fn for_request(&self, parts: &Parts) -> Option<&MethodRetry> {
        let grpc = parts
            .headers
            .get(CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            self.lookup(parts.uri.path())
        } else {
            None
        }
    }

    /// Rejects entries with an empty service, a method or service name holding a `/`, or a
    /// [`MethodRetry`] out of bounds.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        for (service, method, retry) in self.entries.iter() {
            if service.is_empty() || service.contains('/') || method.contains('/') {
                return Err(ConfigError::new(
                    "grpc_methods",
                    "a service name must be non-empty, and neither it nor a method name may \
                     contain '/'",
                ));
            }
            retry.check()?;
        }
        if let Some(every) = &self.every {
            every.check()?;
        }
        Ok(())
    }
}

/// The gRPC status a failure stands for, for a per-method policy: a gRPC status itself, or an
/// HTTP status mapped as gRPC clients map it ("HTTP to gRPC Status Code Mapping" in gRPC's
/// documentation); `None` for a failure that is no status at all.
pub(crate) fn status_code(kind: Kind) -> Option<GrpcCode> {
    match kind {
        Kind::Grpc(_) | Kind::Status(_) => Some(kind.grpc_code()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn policy() -> GrpcRetryPolicy {
        GrpcRetryPolicy::new()
            .service("shop.Cart", MethodRetry::new(2, [GrpcCode::Unavailable]))
            .method(
                "shop.Cart",
                "Get",
                MethodRetry::new(4, [GrpcCode::Unavailable, GrpcCode::Aborted]),
            )
    }

    #[test]
    fn the_most_specific_entry_wins() {
        let policy = policy().every_method(MethodRetry::new(3, [GrpcCode::Internal]));
        assert_eq!(
            policy.lookup("/shop.Cart/Get").map(|r| r.max_attempts()),
            Some(4)
        );
        assert_eq!(
            policy.lookup("/shop.Cart/Put").map(|r| r.max_attempts()),
            Some(2)
        );
        assert_eq!(
            policy.lookup("/shop.Stock/Get").map(|r| r.max_attempts()),
            Some(3)
        );
        assert!(policy.lookup("shop.Cart/Get").is_none());
        assert!(policy.lookup("/").is_none());
    }

    #[test]
    fn without_a_default_other_services_have_none() {
        assert!(policy().lookup("/shop.Stock/Get").is_none());
        assert!(policy().lookup("/shop.Cartx/Get").is_none());
    }

    #[test]
    fn codes_are_a_set() {
        let retry = MethodRetry::new(4, [GrpcCode::Aborted, GrpcCode::Unavailable]);
        assert!(retry.retries(GrpcCode::Unavailable));
        assert!(!retry.retries(GrpcCode::InvalidArgument));
        assert!(!retry.retries(GrpcCode::Unknown));
        let listed: Vec<_> = retry.retryable_status_codes().collect();
        assert_eq!(listed, [GrpcCode::Aborted, GrpcCode::Unavailable]);
    }

    #[test]
    fn only_grpc_requests_have_a_policy() {
        let grpc = http::Request::post("http://h/shop.Cart/Get")
            .header("content-type", "application/grpc+proto")
            .body(())
            .unwrap_or_default();
        let plain = http::Request::post("http://h/shop.Cart/Get")
            .body(())
            .unwrap_or_default();
        assert!(policy().for_request(&grpc.into_parts().0).is_some());
        assert!(policy().for_request(&plain.into_parts().0).is_none());
    }

    #[test]
    fn bounds_are_checked() {
        assert!(policy().check().is_ok());
        let one = GrpcRetryPolicy::new().service("a.B", MethodRetry::new(1, [GrpcCode::Aborted]));
        assert!(one.check().is_err());
        let many = GrpcRetryPolicy::new().service("a.B", MethodRetry::new(11, [GrpcCode::Aborted]));
        assert!(many.check().is_err());
        let none = GrpcRetryPolicy::new().service("a.B", MethodRetry::new(3, []));
        assert!(none.check().is_err());
        let ok = GrpcRetryPolicy::new().every_method(MethodRetry::new(3, [GrpcCode::Ok]));
        assert!(ok.check().is_err());
        let slash = GrpcRetryPolicy::new().service("a/B", MethodRetry::new(3, [GrpcCode::Aborted]));
        assert!(slash.check().is_err());
        let empty = GrpcRetryPolicy::new().service("", MethodRetry::new(3, [GrpcCode::Aborted]));
        assert!(empty.check().is_err());
    }

    #[test]
    fn http_statuses_map_as_grpc_clients_map_them() {
        let code = |s: u16| status_code(Kind::Status(StatusCode::from_u16(s).unwrap_or_default()));
        assert_eq!(code(503), Some(GrpcCode::Unavailable));
        assert_eq!(code(429), Some(GrpcCode::Unavailable));
        assert_eq!(code(404), Some(GrpcCode::Unimplemented));
        assert_eq!(code(500), Some(GrpcCode::Unknown));
        assert_eq!(
            status_code(Kind::Grpc(GrpcCode::Aborted)),
            Some(GrpcCode::Aborted)
        );
        assert_eq!(status_code(Kind::Refused), None);
    }
}
