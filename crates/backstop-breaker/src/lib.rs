//! Circuit breakers for hyper / tower clients: fail fast on a sick dependency, probe it back
//! to health, one breaker per host.
//!
//! ```
//! use std::time::Duration;
//! use backstop_breaker::{CircuitBreakerLayer, State, Authority};
//! use backstop_classify::{Error, Kind, Phase, Retryable};
//! use http::{Request, Response, StatusCode};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = CircuitBreakerLayer::builder()
//!     .consecutive_failures(3)
//!     .open_for(Duration::from_secs(10))
//!     .build()?;
//! let breakers = layer.breakers();
//! // A dependency answering 503 to everything.
//! let mut svc = layer.layer(service_fn(|_req: Request<()>| async {
//!     let mut res = Response::new(());
//!     *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
//!     Ok::<_, std::convert::Infallible>(res)
//! }));
//!
//! for _ in 0..3 {
//!     let req = Request::get("http://api.internal/users").body(())?;
//!     let res = svc.ready().await?.call(req).await?;
//!     assert_eq!(res.status(), 503);
//! }
//! // Three consecutive failures: api.internal:80 is open; calls fail at once, no I/O.
//! let req = Request::get("http://api.internal/users").body(())?;
//! let err: Error = svc.ready().await?.call(req).await.unwrap_err();
//! assert_eq!((err.kind(), err.phase(), err.retryable()),
//!            (Kind::BreakerOpen, Phase::Local, Retryable::Safe));
//!
//! let (key, snapshot) = breakers.snapshots().remove(0);
//! assert_eq!(key.to_string(), "http://api.internal:80");
//! assert_eq!(snapshot.state, State::Open);
//! assert!(snapshot.next_probe_in.is_some());
//! # Ok(())
//! # }
//! ```
//!
//! # Where it sits
//!
//! Outside [`ClassifyLayer`](backstop_classify::ClassifyLayer): the breaker reads the
//! [`Outcome`](backstop_classify::Outcome) it stores in response extensions, and the
//! [`Kind`](backstop_classify::Kind) of [`backstop_classify::Error`]s. On a bare service it
//! classifies responses itself with [`HttpPolicy`](backstop_classify::HttpPolicy). Its own
//! error is always a `backstop_classify::Error`; a rejection is `Kind::BreakerOpen` in
//! `Phase::Local`, [`Retryable::Safe`](backstop_classify::Retryable::Safe) — the request never
//! left, so a retry layer outside may send it elsewhere.
//!
//! # Without a wrapped service
//!
//! Code that makes its calls itself — a client whose own future awaits the call and classifies
//! its result, a middleware of another HTTP client — asks the same breakers through a [`Gate`]
//! ([`CircuitBreakerLayer::gate`]): [`Gate::admit`] gives a [`Permit`] (or [`Rejected`], an
//! [`Error`](backstop_classify::Error) of kind `BreakerOpen`), and the permit records the
//! call's [`Outcome`](backstop_classify::Outcome). `backstop::Client` drives its breakers so,
//! from the future that also classifies and bounds each attempt.
//!
//! # Trip rules
//!
//! Any of these opens the circuit: `n` consecutive failures (default 5); a failure rate over a
//! sliding [`Window`] — the last N calls, or the calls of the last T in buckets — once
//! [`minimum_calls`](Builder::minimum_calls) are in it (default 50 % of the last 100, at
//! least 20 calls); a slow-call rate (off by default). What is a failure is the
//! [`Verdict`] of [`default_verdict`] (or your [`Judge`]): 5xx, timeouts and connection errors
//! are failures, 4xx are answers, 429 counts toward the rate but not the consecutive count, a
//! cancelled call counts as nothing. Results are recorded when the response head arrives (or the
//! call fails); a failure reported only in a body's trailers (streaming gRPC) is not seen.
//!
//! # Open, half-open
//!
//! Open: calls fail at once, without I/O or allocation. The open period grows on repeated trips
//! (× [`open_multiplier`](Builder::open_multiplier), ± [`open_jitter`](Builder::open_jitter),
//! capped by [`max_open_for`](Builder::max_open_for)) and falls back to the base after
//! [`stable_after`](Builder::stable_after) closed. Then half-open: exactly
//! [`half_open_probes`](Builder::half_open_probes) calls go, however many race; a probe whose
//! future is dropped gives its permit back without a result; all succeed → closed, one fails →
//! open again, for longer.
//!
//! # Keys
//!
//! One breaker per authority (scheme, host, port) by default, [`Single`] for one breaker, or
//! any [`BreakerKey`] / [`Builder::key_fn`]. The map is bounded by
//! [`max_keys`](Builder::max_keys), forgetting idle breakers first. One dead host never opens
//! another's circuit.
//!
//! # Readiness
//!
//! [`Readiness::FailCalls`] (default) rejects calls while open; [`Readiness::NotReady`] (single
//! breaker only) makes `poll_ready` pending instead, so a tower balancer routes around the
//! endpoint.
//!
//! # Control and visibility
//!
//! [`Breakers`] (from [`CircuitBreakerLayer::breakers`]) gives [`Snapshot`]s, a
//! `watch` subscription per key, [`force_open`](Breakers::force_open),
//! [`force_closed`](Breakers::force_closed), [`metrics_only`](Breakers::metrics_only) and
//! [`automatic`](Breakers::automatic). Every state change is logged with `tracing` (see
//! [Telemetry](#telemetry)) and
//! given to [`on_state_change`](Builder::on_state_change).
//!
//! # Telemetry
//!
//! Every state change is the event `circuit breaker transition` (target `backstop_breaker`; warn
//! when opening, info otherwise) with `key`, `from`, `to` ([`State::label`]), `reason`,
//! `open_for_ms` and `metrics_only`. With the `metrics` feature:
//!
//! | kind | name | labels |
//! |---|---|---|
//! | gauge | [`metrics::STATE`] | `key`: 0 closed, 1 half-open, 2 open, set at creation and on every transition |
//! | counter | [`metrics::TRANSITIONS`] | `key`, `from`, `to` |
//! | counter | [`metrics::REJECTIONS`] | `key` |
//!
//! The `key` label is [`BreakerKey::label`], bounded by
//! [`host_label`](backstop_classify::telemetry::host_label).
//!
//! # Cost
//!
//! The closed path takes no lock and allocates nothing: a service remembers its last breaker
//! (matched by one byte comparison of the request's authority), admission is one atomic load,
//! recording a success one load (plus one relaxed read-modify-write with a count window). A
//! rejection is one atomic load while the cool-down timer armed at the trip has not fired
//! ([`Builder::cool_down_timer`]), one load and one clock read otherwise, and allocates nothing.
//! See the repository's `BENCHMARKS.md`.

mod authority;
mod bounds;
mod breaker;
mod breakers;
mod builder;
mod clock;
mod future;
mod gate;
mod key;
mod layer;
pub mod metrics;
mod registry;
mod service;
mod settings;
mod state;
mod telemetry;
mod ticket;
mod verdict;
mod window;

pub use authority::{Authority, PerAuthority, SchemeKey};
pub use bounds::{
    COUNT_WINDOW_RANGE, ConfigError, HALF_OPEN_PROBES_RANGE, MAX_DURATION, MIN_BUCKET_WIDTH,
    MIN_OPEN_MULTIPLIER, OPEN_JITTER_RANGE, TIME_WINDOW_BUCKETS_RANGE, is_valid_rate,
};
pub use breakers::Breakers;
pub use builder::Builder;
pub use future::ResponseFuture;
pub use gate::{Gate, Permit, Rejected};
pub use key::{BreakerKey, FnKey, RequestHead, Single};
pub use layer::{CircuitBreakerLayer, Readiness};
pub use service::CircuitBreaker;
pub use state::{Mode, Reason, Snapshot, State, StateChange};
pub use verdict::{Judge, Verdict, default_verdict};
pub use window::Window;
