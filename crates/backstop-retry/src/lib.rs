//! Retries that are safe to make: idempotency-aware, spaced with jitter, within a budget and the
//! request's deadline, honouring the server's `Retry-After`, replaying request bodies.
//!
//! ```
//! # #![allow(clippy::unwrap_used)]
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//!
//! use backstop_retry::{RetryInfo, RetryLayer, ReplayBody};
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // An upstream that answers 503 twice, then 200.
//! let calls = Arc::new(AtomicU32::new(0));
//! let upstream = {
//!     let calls = calls.clone();
//!     service_fn(move |_req: Request<ReplayBody<Full<Bytes>>>| {
//!         let n = calls.fetch_add(1, Ordering::SeqCst);
//!         async move {
//!             let status = if n < 2 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
//!             Ok::<_, std::io::Error>(Response::builder().status(status).body(()).unwrap())
//!         }
//!     })
//! };
//! let client = ServiceBuilder::new()
//!     .layer(RetryLayer::builder().max_attempts(3).seed(42).build()?)
//!     .service(upstream);
//!
//! let res = client.oneshot(Request::get("http://127.0.0.1/").body(Full::default())?).await?;
//! assert_eq!(res.status(), StatusCode::OK);
//! let info = RetryInfo::of(&res);
//! assert_eq!(info.attempts(), 3);
//! assert!(info.delays().all(|d| d <= Duration::from_secs(5)));
//! # Ok(())
//! # }
//! ```
//!
//! # What is retried
//! The layer reads the [`Outcome`](backstop_classify::Outcome) a
//! [`ClassifyLayer`](backstop_classify::ClassifyLayer) put in the response (or classifies the
//! response itself with its policy, [`HttpPolicy`](backstop_classify::HttpPolicy) by default),
//! and the [`Error`](backstop_classify::Error) of a failed call.
//! - A failure judged [`Safe`](backstop_classify::Retryable::Safe) (never sent: refused, connect
//!   timeout, a pooled connection closed before the write; or 429) is retried for any method.
//! - A failure judged [`IfIdempotent`](backstop_classify::Retryable::IfIdempotent) (5xx, 408, a
//!   reset after the write; 409 "still in progress" when
//!   [`RetryLayerBuilder::retry_conflict`] opts in) is retried only for GET, HEAD, OPTIONS,
//!   TRACE, PUT and DELETE, or a request carrying an `Idempotency-Key`
//!   ([`RetryLayerBuilder::attach_idempotency_key`] adds one).
//! - [`Never`](backstop_classify::Retryable::Never) is never retried (400, 422, a bad
//!   certificate, a spent deadline…). [`RetryOverride`] changes the judgement per request.
//! - gRPC calls are all `POST`s: a status after the server saw the call (`UNAVAILABLE`
//!   included) is retried only for the methods a [`GrpcRetryPolicy`] lists, on the status codes
//!   and up to the attempts it gives them — gRPC's per-method `retryPolicy` (gRFC A6). Without
//!   one, a gRPC call gets only the retries of a call never sent or never processed (A6's
//!   transparent retries). Give the layer [`GrpcPolicy`](backstop_classify::GrpcPolicy) to read
//!   `grpc-status` from a Trailers-Only response head.
//! - Once a successful response head arrives the call is committed: a response body failing
//!   later is never retried (a gRPC status in the trailers included, as A6 says).
//!
//! # When
//! Capped exponential [`Backoff`] with [`Jitter`] (full by default), or exactly the server's
//! `Retry-After` on 429 and 503 (and gRPC's `grpc-retry-pushback-ms`, which replaces the backoff
//! as gRPC A6 says). A server that asks for a longer wait than `retry_after_max` is not retried
//! early: its response comes back as it is, `Retry-After` intact. A delay that would not leave
//! the next attempt time to start before the request's
//! [`Deadline`](backstop_deadline::Deadline) is not slept: the last failure is returned at once.
//!
//! A failure rejected locally, before any I/O (an open circuit breaker, a load shedder), ends the
//! call at once with its own kind: retrying it would only sleep and spend budget to be rejected
//! again.
//!
//! # How often
//! A [`RetryBudget`] (20 % of requests + 10/s over 10 s by default) stops retry storms; an
//! exhausted budget returns the last failure as it is — the error of that attempt, its kind
//! untouched, or the failed response — with [`RetryInfo`] saying why retrying stopped.
//!
//! # Bodies
//! [`ReplayBody`] keeps the bytes of the body as the first attempt streams them (up to 64 KiB by
//! default) and replays them. A larger body is sent once and not retried (the failure comes back
//! with [`StopReason::BodyNotReplayable`] in its [`RetryInfo`]). A body that declares a size above
//! the limit is not buffered at all: it is sent again only if no byte of it was read (a refused
//! connection). Non-idempotent requests keep their bytes too, within the same limit: an HTTP/2
//! REFUSED_STREAM or GOAWAY proves a POST unprocessed after part of its body went out. No lock is
//! held while the caller's body is polled: the attempt that reads owns the buffer and hands it
//! on.
//!
//! That is the default [`ReplayStrategy`], [`BufferedReplay`]: the inner service gets
//! `Request<ReplayBody<B>>`. A body type that can replay itself more cheaply (bytes in memory,
//! as a clone of them) brings its own strategy with [`RetryLayer::with_replay`], under the same
//! rules, and the inner service then gets that strategy's body type — for `backstop::Client`, its
//! own `RequestBody`, so the request hyper moves about stays within 256 bytes.
//!
//! # What the caller sees
//! [`RetryInfo`] in the response extensions, or in the error's
//! ([`Error::extensions`](backstop_classify::Error::extensions)): attempts, delays, why it
//! stopped. The error's kind is always the last real failure (reset, refused, a timeout…), never
//! the reason retrying stopped. Optionally an
//! attempt-number header for the server; `tracing` events for each retry and for an exhausted
//! budget (a warning at most once a second per budget, counting the exhaustions in between; debug
//! level otherwise).
//!
//! # Telemetry
//! Target `backstop_retry`; OpenTelemetry's HTTP names. No field is computed unless a subscriber
//! enables the span or event; the counters ([`metrics`], names as constants) compile only with
//! the `metrics` feature.
//!
//! | kind | name | fields / labels |
//! |---|---|---|
//! | span (info) | `http.client.attempt` | `otel.name`, `otel.kind` = `client`, `http.request.method`, `server.address`, `server.port`, `url.full` (redacted), `http.request.resend_count` (absent on the first attempt), `http.response.status_code`, `error.type` |
//! | event (info) | `retry scheduled` | `reason`, `delay_ms`, `resend_count`, `phase`, `retry_after_ms` |
//! | event (info if the caller gets an error, else debug) | `retry stopped` | `stop` ([`StopReason::label`]), `reason` |
//! | event (warn, at most 1/s per budget; else debug) | `retry budget exhausted` | `reason`, `attempts`, `suppressed` |
//! | counter | [`metrics::ATTEMPTS`] | `server.address` |
//! | counter | [`metrics::RETRIES`] | `server.address`, `reason` |
//! | counter | [`metrics::STOPPED`] | `server.address`, `stop` |
//! | counter | [`metrics::BUDGET_REJECTIONS`] | `server.address` |
//!
//! The attempt span is a child of the span current when the call's future is polled, entered
//! around each poll of its attempt and closed when the attempt's answer arrives; `reason` and
//! `error.type` are [`Kind::label`](backstop_classify::Kind::label)s.
//!
//! # Using backstop's budget and backoff in tower's `Retry`
//! With the feature `tower-retry`, a policy for tower's own
//! [`Retry`](https://docs.rs/tower/0.5/tower/retry/struct.Retry.html) can use backstop's pieces:
//! [`RetryBudget`] implements tower's `retry::budget::Budget` (its ratio honoured exactly, see
//! its `Budget` implementation for how it differs from tower's `TpsBudget`), and `BackoffMaker` implements
//! tower's `retry::backoff::MakeBackoff`, making per-request sessions whose `next_backoff` sleeps
//! on tokio's clock the delays a [`RetryLayer`] with the same [`Backoff`] and seed computes.
//! Everything else — which failures, how many attempts, `Retry-After`, deadlines, body replay —
//! is the policy's to decide.
//!
#![cfg_attr(feature = "tower-retry", doc = "```")]
#![cfg_attr(not(feature = "tower-retry"), doc = "```ignore")]
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//!
//! use backstop_retry::{Backoff, BackoffMaker, BackoffSession, Jitter, RetryBudget};
//! use tower::retry::backoff::{Backoff as _, MakeBackoff};
//! use tower::retry::budget::Budget;
//! use tower::retry::{Policy, RetryLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! /// Retries every error while the budget allows, spaced by backstop's backoff.
//! #[derive(Clone)]
//! struct Retries {
//!     budget: RetryBudget,
//!     // tower's `Retry` clones the policy for each request; a session's clone starts afresh.
//!     backoff: BackoffSession,
//!     first_result: bool,
//! }
//!
//! impl<Req: Clone, Res, E> Policy<Req, Res, E> for Retries {
//!     type Future = tokio::time::Sleep;
//!
//!     fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
//!         // One deposit per request, not per attempt.
//!         if std::mem::take(&mut self.first_result) {
//!             self.budget.deposit();
//!         }
//!         match result {
//!             Err(_) if self.budget.withdraw() => Some(self.backoff.next_backoff()),
//!             _ => None,
//!         }
//!     }
//!
//!     fn clone_request(&mut self, req: &Req) -> Option<Req> {
//!         Some(req.clone())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), backstop_retry::ConfigError> {
//! let budget = RetryBudget::builder().ratio(0.5).min_per_second(0).build()?;
//! let backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1), Jitter::Full)?;
//! let policy = Retries {
//!     budget,
//!     backoff: BackoffMaker::with_seed(backoff, 7).make_backoff(),
//!     first_result: true,
//! };
//!
//! let calls = Arc::new(AtomicU32::new(0));
//! let upstream = {
//!     let calls = calls.clone();
//!     service_fn(move |_req: &'static str| {
//!         calls.fetch_add(1, Ordering::Relaxed);
//!         async { Err::<(), _>("down") }
//!     })
//! };
//! let client = ServiceBuilder::new().layer(RetryLayer::new(policy)).service(upstream);
//! for _ in 0..4 {
//!     assert!(client.clone().oneshot("ping").await.is_err());
//! }
//! // 4 requests, 50 % of them retried once: 2 retries.
//! assert_eq!(calls.load(Ordering::Relaxed), 6);
//! # Ok(())
//! # }
//! ```
//!

mod backoff;
mod budget;
mod builder;
mod config_error;
mod decide;
mod future;
mod grpc;
mod idempotency;
mod info;
mod layer;
pub mod metrics;
mod per_host;
mod random;
mod replay;
mod service;
mod telemetry;
#[cfg(feature = "tower-retry")]
mod tower_interop;

pub use backoff::{Backoff, Jitter, MAX_BACKOFF_CAP};
pub use budget::{
    BUDGET_RATIO_RANGE, BUDGET_WINDOW_RANGE, MAX_BUDGET_MIN_PER_SECOND, RetryBudget,
    RetryBudgetBuilder,
};
pub use builder::{MAX_ATTEMPTS_RANGE, MAX_REPLAY_LIMIT, RetryLayerBuilder};
pub use config_error::ConfigError;
pub use future::ResponseFuture;
pub use grpc::{GrpcRetryPolicy, MethodRetry};
pub use idempotency::is_idempotent_method;
pub use info::{MAX_ATTEMPTS_LIMIT, RetryInfo, RetryOverride, StopReason};
pub use layer::RetryLayer;
pub use replay::{
    BufferedReplay, DEFAULT_REPLAY_LIMIT, NotReplayable, ReplayBody, ReplayHandle, ReplayStrategy,
};
pub use service::RetryService;
#[cfg(feature = "tower-retry")]
pub use tower_interop::{BackoffMaker, BackoffSession};
