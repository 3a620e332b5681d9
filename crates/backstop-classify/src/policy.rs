//! Classification policies: the [`Classify`] trait, the default [`HttpPolicy`] and [`GrpcPolicy`].

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, StatusCode};

use crate::failure::{Failure, Outcome, Phase, Retryable, judge_status};
use crate::kind::{GrpcCode, Kind};
use crate::map::classify_error;
use crate::retry_after::{
    DEFAULT_RETRY_AFTER_CAP, Pushback, parse_grpc_pushback, parse_retry_after,
};

/// Turns responses and errors into [`Outcome`]s.
///
/// Implement it to teach backstop what your service means by failure: "409 means retry later",
/// "a 200 whose `x-status` header says `error` is a failure", and so on. Start from
/// [`HttpPolicy`] or [`GrpcPolicy`] and delegate to them for the rest.
pub trait Classify: Clone + Send + Sync + 'static {
    /// Classifies a response head.
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Outcome;

    /// Whether the verdict waits for the body's trailers (gRPC puts its status there).
    fn watches_trailers(&self, _status: StatusCode, _headers: &HeaderMap) -> bool {
        false
    }

    /// Classifies the trailers that end a response body, when
    /// [`watches_trailers`](Classify::watches_trailers) said so.
    fn classify_trailers(&self, _trailers: &HeaderMap) -> Outcome {
        Outcome::Success
    }

    /// Classifies an error; `phase_hint` says where the call was when it failed, if the error
    /// itself does not tell.
    fn classify_error(&self, err: &(dyn StdError + 'static), phase_hint: Phase) -> Failure {
        classify_error(err, phase_hint)
    }
}

/// The default HTTP policy.
///
/// - 1xx, 2xx and 3xx are successes.
/// - 5xx, 408 and 429 are failures that may be retried if the request is idempotent (or keyed):
///   nothing in the protocol promises that a 429 was answered before any processing.
/// - Every other 4xx is a failure that is never retried.
/// - `Retry-After` on a failure response (delay-seconds or HTTP-date) is parsed and clamped to
///   [`retry_after_cap`](HttpPolicy::retry_after_cap) (one hour by default); a malformed value is
///   ignored.
///
/// Override the judgement of single statuses with [`HttpPolicy::status`]:
///
/// ```
/// use backstop_classify::{Classify, HttpPolicy, Retryable};
/// use http::{HeaderMap, StatusCode};
///
/// // 409 from our API means "the original request is still in progress": retry later.
/// let policy = HttpPolicy::new().status(StatusCode::CONFLICT, Retryable::IfIdempotent);
/// let outcome = policy.classify_response(StatusCode::CONFLICT, &HeaderMap::new());
/// assert_eq!(outcome.failure().map(|f| f.retryable()), Some(Retryable::IfIdempotent));
/// ```
#[derive(Clone)]
pub struct HttpPolicy {
    // `None` rather than an empty slice: the default policy is cloned into every call's future
    // by the layers that classify, and cloning `None` touches no shared count.
    overrides: Option<Overrides>,
    retry_after_cap: Duration,
    clock: fn() -> SystemTime,
}

/// The statuses an [`HttpPolicy`] judges otherwise than by default, and their verdicts.
type Overrides = Arc<[(StatusCode, Option<Retryable>)]>;

impl std::fmt::Debug for HttpPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPolicy")
            .field("overrides", &self.overrides())
            .field("retry_after_cap", &self.retry_after_cap)
            .finish()
    }
}

impl Default for HttpPolicy {
    fn default() -> Self {
        HttpPolicy::new()
    }
}

impl HttpPolicy {
    /// The default policy.
    pub fn new() -> HttpPolicy {
        HttpPolicy {
            overrides: None,
            retry_after_cap: DEFAULT_RETRY_AFTER_CAP,
            clock: SystemTime::now,
        }
    }

    /// Treats `status` as a failure with the given retry judgement (replacing the default one).
    #[must_use]
    pub fn status(self, status: StatusCode, retryable: Retryable) -> HttpPolicy {
        self.set(status, Some(retryable))
    }

    /// Treats `status` as a success (e.g. a 404 that is an expected answer).
    #[must_use]
    pub fn success(self, status: StatusCode) -> HttpPolicy {
        self.set(status, None)
    }

    fn set(self, status: StatusCode, verdict: Option<Retryable>) -> HttpPolicy {
        let mut overrides: Vec<_> = self
            .overrides()
            .iter()
            .copied()
            .filter(|(s, _)| *s != status)
            .collect();
        overrides.push((status, verdict));
        HttpPolicy {
            overrides: Some(Arc::from(overrides)),
            ..self
        }
    }

    /// The longest `Retry-After` this policy reports; longer ones are clamped to it.
    #[must_use]
    pub fn retry_after_cap(mut self, cap: Duration) -> HttpPolicy {
        self.retry_after_cap = cap;
        self
    }

    /// The wall clock used to turn an HTTP-date `Retry-After` into a wait (injectable for tests).
    #[must_use]
    pub fn clock(mut self, clock: fn() -> SystemTime) -> HttpPolicy {
        self.clock = clock;
        self
    }

    fn overrides(&self) -> &[(StatusCode, Option<Retryable>)] {
        self.overrides.as_deref().unwrap_or_default()
    }

    /// The failure `status` stands for, or `None` when it is a success.
    fn verdict(&self, status: StatusCode) -> Option<Retryable> {
        if let Some((_, verdict)) = self.overrides().iter().find(|(s, _)| *s == status) {
            return *verdict;
        }
        if status.is_client_error() || status.is_server_error() {
            Some(judge_status(status))
        } else {
            None
        }
    }

    fn retry_after(&self, headers: &HeaderMap) -> Option<Duration> {
        let value = headers.get(http::header::RETRY_AFTER)?;
        parse_retry_after(value, (self.clock)(), self.retry_after_cap)
    }
}

impl Classify for HttpPolicy {
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
        match self.verdict(status) {
            None => Outcome::Success,
            Some(retryable) => Outcome::Failure(
                Failure::new(Kind::Status(status), Phase::AwaitHeaders)
                    .with_retryable(retryable)
                    .with_retry_after(self.retry_after(headers)),
            ),
        }
    }
}

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// The gRPC policy: reads `grpc-status` from the response headers (a trailers-only response) or
/// from the trailers, and `grpc-retry-pushback-ms`.
///
/// `OK` is a success; `UNAVAILABLE` and `RESOURCE_EXHAUSTED` are failures that may be retried if
/// the call is idempotent; every other code is a failure never retried. A negative or malformed
/// pushback means "do not retry". A response that is not HTTP 200 is judged by [`HttpPolicy`].
///
/// ```
/// use backstop_classify::{Classify, GrpcPolicy, Kind, GrpcCode};
/// use http::{HeaderMap, HeaderValue, StatusCode};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("grpc-status", HeaderValue::from_static("14"));
/// let outcome = GrpcPolicy::new().classify_response(StatusCode::OK, &headers);
/// assert_eq!(outcome.failure().map(|f| f.kind()), Some(Kind::Grpc(GrpcCode::Unavailable)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct GrpcPolicy {
    http: HttpPolicy,
}

impl GrpcPolicy {
    /// The default gRPC policy.
    pub fn new() -> GrpcPolicy {
        GrpcPolicy::default()
    }

    /// The HTTP policy applied to responses that are not HTTP 200.
    #[must_use]
    pub fn http(mut self, http: HttpPolicy) -> GrpcPolicy {
        self.http = http;
        self
    }

    fn classify_status(&self, headers: &HeaderMap) -> Option<Outcome> {
        let value = headers.get(&GRPC_STATUS)?;
        let code = value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
            .map_or(GrpcCode::Unknown, GrpcCode::from_i32);
        if code == GrpcCode::Ok {
            return Some(Outcome::Success);
        }
        let mut failure = Failure::new(Kind::Grpc(code), Phase::AwaitHeaders);
        if let Some(value) = headers.get(&GRPC_PUSHBACK) {
            failure = match parse_grpc_pushback(value, self.http.retry_after_cap) {
                Pushback::After(wait) => failure.with_retry_after(Some(wait)),
                Pushback::DoNotRetry => failure.with_retryable(Retryable::Never),
            };
        }
        Some(Outcome::Failure(failure))
    }
}

impl Classify for GrpcPolicy {
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
        if status != StatusCode::OK {
            return self.http.classify_response(status, headers);
        }
        self.classify_status(headers).unwrap_or(Outcome::Success)
    }

    fn watches_trailers(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        status == StatusCode::OK && !headers.contains_key(&GRPC_STATUS)
    }

    fn classify_trailers(&self, trailers: &HeaderMap) -> Outcome {
        let outcome = self
            .classify_status(trailers)
            .unwrap_or(Outcome::Failure(Failure::new(
                // A gRPC response that ends without a status is a broken stream.
                Kind::Grpc(GrpcCode::Unknown),
                Phase::ReadBody,
            )));
        match outcome {
            Outcome::Failure(failure) => Outcome::Failure(
                Failure::new(failure.kind(), Phase::ReadBody)
                    .with_retryable(failure.retryable())
                    .with_retry_after(failure.retry_after()),
            ),
            success => success,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn http_default_policy() {
        let policy = HttpPolicy::new();
        let none = HeaderMap::new();
        assert!(policy.classify_response(StatusCode::OK, &none).is_success());
        assert!(
            policy
                .classify_response(StatusCode::FOUND, &none)
                .is_success()
        );
        let not_found = policy.classify_response(StatusCode::NOT_FOUND, &none);
        assert_eq!(
            not_found.failure().map(|f| f.retryable()),
            Some(Retryable::Never)
        );
        let unavailable = policy.classify_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &headers(&[("retry-after", "2")]),
        );
        let failure = unavailable.failure().copied();
        assert_eq!(
            failure.map(|f| f.retry_after()),
            Some(Some(Duration::from_secs(2)))
        );
        assert_eq!(
            failure.map(|f| f.retryable()),
            Some(Retryable::IfIdempotent)
        );
    }

    #[test]
    fn overrides_replace_the_default() {
        let policy = HttpPolicy::new()
            .success(StatusCode::NOT_FOUND)
            .status(StatusCode::CONFLICT, Retryable::IfIdempotent)
            .status(StatusCode::CONFLICT, Retryable::Safe);
        let none = HeaderMap::new();
        assert!(
            policy
                .classify_response(StatusCode::NOT_FOUND, &none)
                .is_success()
        );
        assert_eq!(
            policy
                .classify_response(StatusCode::CONFLICT, &none)
                .failure()
                .map(|f| f.retryable()),
            Some(Retryable::Safe)
        );
    }

    #[test]
    fn grpc_status_in_headers_and_trailers() {
        let policy = GrpcPolicy::new();
        let ok = headers(&[("grpc-status", "0")]);
        assert!(policy.classify_response(StatusCode::OK, &ok).is_success());
        assert!(!policy.watches_trailers(StatusCode::OK, &ok));
        let streaming = HeaderMap::new();
        assert!(policy.watches_trailers(StatusCode::OK, &streaming));
        let trailers = headers(&[("grpc-status", "14"), ("grpc-retry-pushback-ms", "300")]);
        let failure = policy.classify_trailers(&trailers).failure().copied();
        assert_eq!(
            failure.map(|f| f.kind()),
            Some(Kind::Grpc(GrpcCode::Unavailable))
        );
        assert_eq!(
            failure.and_then(|f| f.retry_after()),
            Some(Duration::from_millis(300))
        );
        assert_eq!(failure.map(|f| f.phase()), Some(Phase::ReadBody));
        let refuse = headers(&[("grpc-status", "14"), ("grpc-retry-pushback-ms", "-1")]);
        assert_eq!(
            policy
                .classify_response(StatusCode::OK, &refuse)
                .failure()
                .map(|f| f.retryable()),
            Some(Retryable::Never)
        );
        let garbage = headers(&[("grpc-status", "banana")]);
        assert_eq!(
            policy
                .classify_response(StatusCode::OK, &garbage)
                .failure()
                .map(|f| f.kind()),
            Some(Kind::Grpc(GrpcCode::Unknown))
        );
        assert!(
            policy
                .classify_trailers(&HeaderMap::new())
                .failure()
                .is_some()
        );
    }
}
