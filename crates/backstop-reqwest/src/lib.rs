//! backstop's rules for [reqwest](https://docs.rs/reqwest), as a
//! [reqwest-middleware](https://docs.rs/reqwest-middleware) middleware: one deadline over the
//! whole call, retries only when they are safe (idempotency-aware, budgeted, jittered, honouring
//! `Retry-After`), a circuit breaker per host, and every failure classified in backstop's
//! vocabulary.
//!
//! ```
//! # #![allow(clippy::unwrap_used)]
//! use backstop_chaos::{ChaosServer, Fault, Script};
//! use backstop_reqwest::{BackstopMiddleware, Kind, RetryInfo};
//! use reqwest_middleware::ClientBuilder;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An upstream on loopback that resets the connection once, after reading the request.
//! let chaos = ChaosServer::builder().tls(false).start().await?;
//! chaos.script("/flaky", Script::fail_times(1, Fault::ResetAfterRead));
//!
//! let backstop = BackstopMiddleware::builder().seed(7).build()?;
//! let client = ClientBuilder::new(reqwest::Client::new()).with(backstop).build();
//!
//! // A GET may be sent again: the second attempt answers.
//! let res = client.get(chaos.url("/flaky")).send().await?;
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.extensions().get::<RetryInfo>().unwrap().attempts(), 2);
//!
//! // A POST without an `Idempotency-Key` may have been processed: it is not sent twice.
//! chaos.script("/pay", Script::fail_times(1, Fault::ResetAfterRead));
//! let err = client.post(chaos.url("/pay")).body("{}").send().await.unwrap_err();
//! let err = backstop_reqwest::classified(&err).unwrap();
//! assert_eq!(err.kind(), Kind::Reset);
//! assert_eq!(chaos.count("POST", "/pay"), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # What is retried
//! The same rules as backstop's own client, from the same crates (backstop-classify's
//! judgement, backstop-retry's [`Backoff`] and [`RetryBudget`], backstop-breaker's breaker):
//! - a failure before the request left (refused, a connect timeout, reqwest's `is_connect()`,
//!   a pooled connection closed before the write) is retried for any method;
//! - 5xx, 408, 429, a reset or an incomplete response after the request was sent only for GET,
//!   HEAD, OPTIONS, TRACE, PUT and DELETE, or a request carrying an `Idempotency-Key` (or a
//!   [`RetryOverride`] in the request's extensions);
//! - other 4xx, a certificate error, a spent deadline, a redirect loop never;
//! - a request with a streaming body never: reqwest cannot copy it
//!   (`Request::try_clone` is `None`), and the failure comes back with
//!   [`StopReason::BodyNotReplayable`] in its [`RetryInfo`].
//!
//! Delays are capped exponential backoff with full jitter (50 ms base, 5 s cap by default), or
//! exactly the server's `Retry-After` on 429 and 503 up to `retry_after_max` (30 s); a server
//! asking for longer gets its response back at once, `Retry-After` intact. No retry starts that
//! could not start before the deadline; the retry budget (20 % of calls + 10/s) stops retry
//! storms.
//!
//! # The breaker
//! One per host (scheme, host, port), counting attempts; defaults 5 consecutive failures or 50 %
//! of the last 100 attempts (20 at least), open 5 s growing to 300 s. While it is open a call
//! fails at once with [`Kind::BreakerOpen`] in [`Phase::Local`], without reaching the host.
//!
//! # Errors
//! [`classify_reqwest`] and [`classify`] turn reqwest's errors into a [`Failure`]: what
//! ([`Kind`]), where ([`Phase`]) and whether a retry is safe ([`Retryable`]). The middleware's own
//! errors are backstop [`Error`]s inside `reqwest_middleware::Error::Middleware`
//! ([`classified`]), reqwest's error kept as their `source()`.
//!
//! # Settings
//! [`Builder`] has the names and the defaults of backstop's `Policy`, and rejects what the layers
//! would, naming the field. reqwest is used without its default features: pick its TLS backend
//! in your own manifest.
//!
//! # Features
//! - `h2`: classify HTTP/2's `REFUSED_STREAM` and `GOAWAY` as "never processed" (retried for
//!   any method); use it with reqwest's `http2` feature.

mod attempt;
mod builder;
mod classify;
mod middleware;

pub use builder::{Builder, DEFAULT_ATTEMPT_TIMEOUT, MAX_ATTEMPT_TIMEOUT};
pub use classify::{classified, classify, classify_reqwest};
pub use middleware::BackstopMiddleware;

pub use backstop_classify::{ConfigError, Error, Failure, Kind, Phase, Retryable};
pub use backstop_retry::{Backoff, Jitter, RetryBudget, RetryInfo, RetryOverride, StopReason};
