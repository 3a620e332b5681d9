//! Deadlines for backstop: one ceiling over the whole call, per-attempt timeouts, and deadlines
//! that travel across hops — to the services that are told about them.
//!
//! ```
//! use std::time::Duration;
//! use backstop_deadline::{AttemptTimeoutLayer, DeadlineLayer, Propagation, ServerDeadlineLayer};
//! use http::{Request, Response};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Server B: reads the caller's deadline; its handler sees the time left and is dropped
//! // when it runs out.
//! let server_b = ServiceBuilder::new()
//!     .layer(ServerDeadlineLayer::new())
//!     .service(service_fn(|req: Request<String>| async move {
//!         // What the caller told us it still waits for, minus the safety margin.
//!         let budget = req.headers().get("request-timeout-ms");
//!         let budget = budget.and_then(|v| v.to_str().ok()).unwrap_or("none").to_owned();
//!         tokio::time::sleep(Duration::from_millis(200)).await;
//!         Ok::<_, std::convert::Infallible>(Response::new(budget))
//!     }));
//!
//! // Client: a 1 s ceiling over everything, 300 ms per attempt, and the time left told to our
//! // own services only.
//! let mut client = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_secs(1)))
//!     .layer(
//!         AttemptTimeoutLayer::builder()
//!             .timeout(Duration::from_millis(300))
//!             .propagation(Propagation::new().only_to(["*.internal"])?)
//!             .build()?,
//!     )
//!     .service(server_b);
//!
//! let to_b = Request::get("http://b.internal/").body(String::new())?;
//! let res = client.ready().await?.call(to_b).await?;
//! // The attempt's 300 ms minus the 10 ms default margin travelled in the header.
//! assert_eq!(res.into_body().into_inner(), "290");
//!
//! // Anywhere else, plain HTTP requests are not told (gRPC ones get `grpc-timeout`).
//! let elsewhere = Request::get("https://api.example.com/").body(String::new())?;
//! let res = client.ready().await?.call(elsewhere).await?;
//! assert_eq!(res.into_body().into_inner(), "none");
//! # Ok(())
//! # }
//! ```
//!
//! # Client side
//! - [`DeadlineLayer`]: the outermost ceiling over the call, retries and backoff included; it
//!   [covers](Covers) the response body too, or only the head. Its expiry is timed out
//!   (deadline), never retried. The effective [`Deadline`] — the earliest of its own timeout, one
//!   already on the request, and the [ambient](mod@crate::ambient) one of the server handler the
//!   call is made from — travels inward as the ambient deadline of the layers inside (optionally
//!   also as a request extension, [`Carry`]), which read it with [`Deadline::current`]: retry
//!   clamps its backoff to it, and [`AttemptTimeout`] bounds each attempt by
//!   `min(attempt timeout, time left)`.
//! - [`AttemptTimeoutLayer`] (placed inside retry): bounds one attempt; its expiry is timed out
//!   (attempt), which retry repeats only for idempotent requests.
//!   [`AttemptTimeoutLayer::bounds`] gives its rule without a service ([`AttemptBounds`],
//!   [`AttemptBound`]), for a client that composes its attempt in one future of its own, as
//!   `backstop::Client` does with classification and the body idle timeout.
//! - [Propagation](propagate): outgoing requests carry the time left minus a safety margin as a
//!   relative duration where it is wanted — `grpc-timeout` on every gRPC request by default;
//!   `request-timeout-ms` (configurable) on plain HTTP requests only when turned on, for every
//!   destination ([`Propagation::header`]), for listed ones ([`Propagation::only_to`]) or for one
//!   request ([`PropagateDeadline`]).
//!
//! # Server side
//! - [`ServerDeadlineLayer`] reads those headers (untrusted: malformed ignored, zero or negative
//!   fail fast, absurd clamped to a maximum; a default when absent), answers `504` (or gRPC
//!   `DEADLINE_EXCEEDED`) and drops the handler at the deadline, and makes the deadline
//!   [ambient](mod@crate::ambient) for the handler: a backstop client called anywhere inside it inherits the
//!   time left, so a chain of services shares one budget.
//!
//! # Modules
//! One per middleware: [`client`] (a module with the layer, the service, the response future
//! and the body wrapper in files of their own), [`attempt`], [`server`]; plus [`propagate`] (the
//! wire formats and the propagation policy), [`Deadline`] itself and [`ambient`] (the task-local
//! deadline the layers and a server handler's clients read).
//!
//! # What travels between the layers
//! - The [`Deadline`] goes inward as the [ambient](mod@ambient) deadline (a task-local: the one
//!   side channel left, documented there) and, with [`Carry::Extensions`], in the request
//!   extensions. backstop-retry reads it (it depends on this crate for [`Deadline`]; the arrow
//!   runs one way, from the readers to here, and this crate to backstop-classify for the error
//!   vocabulary).
//! - Who wakes the call at the deadline is decided when the stack is built: the client
//!   [`DeadlineLayer`] arms a timer of its own unless told, with [`InnerWaits`], that the
//!   [`AttemptTimeout`] inside bounds every wait by the deadline.
//! - Propagation headers go out on the request; [`PropagateDeadline`] comes in on its extensions.
//!
//! # Bounds
//! The builders reject, naming the field, what the infallible `new`s accept or clamp:
//! [`MAX_ATTEMPT_TIMEOUT`] (attempt timeout: more than zero, at most a day),
//! [`MAX_DEADLINE_AHEAD`] (the client deadline: more than zero, clamped to about 30 years),
//! [`MAX_SERVER_TIMEOUT`] (the server's maximum: at most a year), and for every layer that
//! propagates, a [margin](Propagation::margin) plus [`MIN_PROPAGATED`](propagate::MIN_PROPAGATED)
//! no longer than its timeout.
//!
//! # Costs
//! All timers are tokio's, so everything runs under `tokio::time::pause`. The success path
//! touches the timer wheel only when the inner service has to wait, and takes no lock. An
//! attempt under a [`DeadlineLayer`] built with [`InnerWaits::BoundedByAttemptTimeout`] has one
//! timer, not two: the [`AttemptTimeout`]'s, armed for the earlier of its bound and the deadline.
//! That timer is one an earlier attempt handed back when it can be (taken with a try-lock that
//! never waits), still registered with the timer wheel, rather than a new one registered and
//! removed again for every attempt.
//! By default a call that completes at once reads no clock either (see
//! [when the clock starts](DeadlineLayer#when-the-clock-starts)), and allocates nothing — header
//! propagation included, since the value for a deadline that has not started is formatted once
//! when the layer is built. Deciding whether a request gets a header costs one `content-type`
//! lookup (none with gRPC propagation off), a look for [`PropagateDeadline`] in the extensions
//! (a null check when there are none), and, with a destination list, a case-insensitive
//! comparison of the authority against it. A header value is formatted (one allocation) when the
//! budget is shorter than the layer's own, e.g. under a server handler's deadline;
//! [`Carry::Extensions`] costs what `http` charges for a request extension (up to 3
//! allocations).
//!
//! # What the deadline does not cover
//! The client deadline starts when the call is made: waiting in `poll_ready` (e.g. for a
//! concurrency limit) comes before it, as with tower's `Timeout`. The server deadline covers the
//! handler until its response head; the response body then streams on its own. The ambient
//! deadline follows the handler's task; work spawned elsewhere takes it along with
//! [`ambient::scope`].
//!
//! # Telemetry
//!
//! | kind | name | fields / labels |
//! |---|---|---|
//! | event (info, target `backstop_deadline`) | `deadline expired` | `side` (`client` / `server`), `budget_ms` (when the layer set the deadline itself) |
//! | counter (feature `metrics`) | [`metrics::EXPIRED`] | `side` |
//!
//! Client side where [`DeadlineLayer`]'s timer fires, or [`AttemptTimeoutLayer`]'s when it bounds
//! the attempt by the deadline, or either refuses a call whose deadline has passed; server side
//! where [`ServerDeadlineLayer`] answers for the handler.

mod config;
mod deadline;
mod spare;
mod telemetry;
mod timer;

pub mod ambient;
pub mod attempt;
pub mod client;
pub mod metrics;
pub mod propagate;
pub mod server;

pub use attempt::{
    AttemptBound, AttemptBounds, AttemptTimeout, AttemptTimeoutLayer, AttemptTimeoutLayerBuilder,
    MAX_ATTEMPT_TIMEOUT,
};
pub use client::{
    CallDeadline, Carry, Covers, DeadlineBody, DeadlineBounds, DeadlineLayer, DeadlineLayerBuilder,
    DeadlineService, InnerWaits,
};
pub use config::ConfigError;
pub use deadline::{Deadline, MAX_DEADLINE_AHEAD};
pub use propagate::{DEFAULT_TIMEOUT_HEADER, PropagateDeadline, Propagation};
pub use server::{MAX_SERVER_TIMEOUT, ServerDeadlineLayer};

use backstop_classify::{Error, Failure, Kind, Phase, Timer};
use http::Request;

/// Timed out (deadline) in `phase`: never retried.
fn deadline_error(phase: Phase) -> Error {
    Error::from_failure(deadline_failure(phase))
}

fn deadline_failure(phase: Phase) -> Failure {
    Failure::new(Kind::TimedOut(Timer::Deadline), phase)
}

/// What a future answers when polled again after it completed, instead of panicking.
fn polled_after_completion() -> Error {
    Error::new(Kind::Other, Phase::Local)
}

/// Puts `deadline` in the request extensions, updating one already there in place (no
/// allocation) and never extending it.
fn carry_in_extensions<B>(req: &mut Request<B>, deadline: Deadline) {
    match req.extensions_mut().get_mut::<Deadline>() {
        Some(existing) => *existing = existing.earliest(deadline),
        None => {
            req.extensions_mut().insert(deadline);
        }
    }
}

#[cfg(test)]
mod sizes {
    //! The futures and bodies are moved on every call: their overhead over what they wrap is
    //! part of the layers' cost on the success path.
    use std::convert::Infallible;
    use std::future::Ready;

    use bytes::Bytes;
    use http::Response;
    use http_body_util::Empty;

    type Inner = Ready<Result<Response<Empty<Bytes>>, Infallible>>;

    #[test]
    fn the_deadline_future_adds_no_timer_until_it_needs_one() {
        // An unarmed deadline keeps a budget, not a `Sleep` (which is over 100 bytes).
        let inner = size_of::<Inner>();
        let outer = size_of::<crate::client::ResponseFuture<Inner>>();
        assert!(outer <= inner + 40, "{outer} bytes around {inner}");
    }

    #[test]
    fn the_attempt_future_is_no_larger_than_towers_timeout() {
        let ours = size_of::<crate::attempt::ResponseFuture<Inner>>();
        let towers = size_of::<tower::timeout::future::ResponseFuture<Inner>>();
        assert!(ours <= towers + 8, "{ours} bytes against tower's {towers}");
    }

    #[test]
    fn the_layers_do_not_grow_with_the_propagation_settings() {
        // A layer is cloned into every service it makes. Before destination lists existed, on
        // 64-bit targets: `Propagation` 64 bytes, `AttemptTimeoutLayer` 208, `DeadlineLayer`
        // 216. Now the milliseconds header's settings sit behind one pointer, however many
        // destinations are listed.
        let propagation = size_of::<crate::Propagation>();
        let attempt = size_of::<crate::AttemptTimeoutLayer>();
        let deadline = size_of::<crate::DeadlineLayer>();
        if size_of::<usize>() == 8 {
            assert!(propagation <= 32, "Propagation: {propagation} bytes");
            assert!(attempt <= 144, "AttemptTimeoutLayer: {attempt} bytes");
            assert!(deadline <= 152, "DeadlineLayer: {deadline} bytes");
        }
    }

    #[test]
    fn the_body_wrapper_adds_one_word_and_an_instant() {
        let inner = size_of::<Empty<Bytes>>();
        let outer = size_of::<crate::client::DeadlineBody<Empty<Bytes>>>();
        assert!(outer <= inner + 24, "{outer} bytes around {inner}");
    }
}
