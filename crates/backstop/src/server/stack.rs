//! [`ServerStack`]: the per-request server rules (steps 5 to 8 of the [module docs](super)) in
//! one layer, for axum routers and hyper services.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use backstop_deadline::ServerDeadlineLayer;
use backstop_server::{CatchPanicLayer, OutcomeCounts, OutcomeLayer, ShedWith503Layer};
use tower_layer::Layer;

use crate::policy::{ConfigError, within};

/// The service a [`ServerStack`] makes around a handler `S`.
pub type ServerStackService<S> = super::RequestTelemetry<
    backstop_server::OutcomeService<
        backstop_deadline::server::ServerDeadlineService<
            backstop_server::ShedWith503<
                tower_http::catch_panic::CatchPanic<
                    S,
                    tower_http::catch_panic::DefaultResponseForPanic,
                >,
            >,
        >,
    >,
>;

/// The per-request server rules, outermost first (the [`server`](crate::server) module walks
/// through the whole server path, these included), each request observed around them all
/// ([`RequestTelemetry`](super::RequestTelemetry): its `http.server.request` span with axum's
/// `http.route`, and with the `metrics` feature its duration and the requests in flight):
///
/// 1. classification of every response, counted in [`OutcomeCounts`] (for metrics) and logged;
/// 2. the incoming deadline (`request-timeout-ms` or `grpc-timeout`): the server's own
///    `default_deadline` applies, and a caller may only shorten it, never extend it (a client
///    sending `request-timeout-ms: 120000` cannot hold a handler and its load-shed slot longer
///    than the server would on its own); on expiry the handler is dropped and the caller gets
///    `504` — and any backstop [`Client`] called inside the handler inherits the
///    time left;
/// 3. overload shedding: beyond `max_in_flight` requests, `503` + `Retry-After` at once;
/// 4. a handler panic answered with `500` instead of a dropped connection.
///
/// Pair it with [`backstop::server::Server`](crate::server::Server), whose accept loop adds the
/// idle stream and request body timeouts, the header read timeout, the connection cap and
/// graceful draining (on [`shutdown_signal`](crate::server::shutdown_signal): SIGTERM or
/// Ctrl-C).
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, routing::get};
///
/// # fn main() -> Result<(), backstop::ConfigError> {
/// let stack = backstop::ServerStack::builder()
///     .max_in_flight(256)
///     .default_deadline(Duration::from_secs(10))
///     .build()?;
/// let counts = stack.counts();
/// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(stack);
/// # let _ = (app, counts);
/// # Ok(())
/// # }
/// ```
#[doc = ""]
#[cfg_attr(feature = "client", doc = "[`Client`]: crate::Client")]
#[cfg_attr(not(feature = "client"), doc = "[`Client`]: crate#features")]
#[derive(Clone)]
pub struct ServerStack {
    outcome: OutcomeLayer,
    deadline: ServerDeadlineLayer,
    shed: ShedWith503Layer,
}

impl fmt::Debug for ServerStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStack")
            .field("max_in_flight", &self.shed.max_in_flight())
            .finish_non_exhaustive()
    }
}

impl ServerStack {
    /// A builder with the defaults: 1 024 requests in flight, shed with `Retry-After: 1`, a
    /// deadline of 30 s that callers may shorten (at most 2 min may be configured).
    pub fn builder() -> ServerStackBuilder {
        ServerStackBuilder {
            max_in_flight: 1024,
            shed_retry_after: Duration::from_secs(1),
            default_deadline: Duration::from_secs(30),
            max_deadline: Duration::from_secs(120),
        }
    }

    /// The response counters.
    pub fn counts(&self) -> Arc<OutcomeCounts> {
        self.outcome.counts()
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> usize {
        self.shed.in_flight()
    }

    /// Requests handled at once before shedding starts (`max_in_flight`).
    pub fn max_in_flight(&self) -> usize {
        self.shed.max_in_flight()
    }
}

impl<S> Layer<S> for ServerStack {
    type Service = ServerStackService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let handler = CatchPanicLayer::new().layer(inner);
        super::RequestTelemetry::new(
            self.outcome
                .layer(self.deadline.layer(self.shed.layer(handler))),
        )
    }
}

/// Builds a [`ServerStack`], validating every setting.
#[derive(Debug, Clone)]
pub struct ServerStackBuilder {
    max_in_flight: usize,
    shed_retry_after: Duration,
    default_deadline: Duration,
    max_deadline: Duration,
}

impl ServerStackBuilder {
    /// Requests handled at once before shedding starts.
    #[must_use]
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max;
        self
    }

    /// The `Retry-After` sent with a shed request (whole seconds, 1 s ..= 1 h).
    #[must_use]
    pub fn shed_retry_after(mut self, after: Duration) -> Self {
        self.shed_retry_after = after;
        self
    }

    /// The server's own deadline: applied when the caller sends none, and the longest a caller
    /// gets whatever it asks (callers can only shorten it).
    #[must_use]
    pub fn default_deadline(mut self, deadline: Duration) -> Self {
        self.default_deadline = deadline;
        self
    }

    /// The bound on `default_deadline` (which must not exceed it). Callers never get more than
    /// `default_deadline` anyway: their deadline headers only shorten it.
    #[must_use]
    pub fn max_deadline(mut self, deadline: Duration) -> Self {
        self.max_deadline = deadline;
        self
    }

    /// Checks every setting.
    pub fn build(self) -> Result<ServerStack, ConfigError> {
        within(
            "default_deadline",
            self.default_deadline,
            Duration::from_millis(1),
            Duration::from_secs(86_400),
        )?;
        if self.default_deadline > self.max_deadline {
            return Err(ConfigError::new(
                "default_deadline",
                format!(
                    "must not exceed max_deadline ({:?}), got {:?}",
                    self.max_deadline, self.default_deadline
                ),
            ));
        }
        let shed = ShedWith503Layer::try_new(self.max_in_flight)?
            .try_retry_after(self.shed_retry_after)?;
        let deadline = ServerDeadlineLayer::builder()
            .default_timeout(self.default_deadline)
            .max_timeout(self.max_deadline)
            .build()
            .map_err(|e| e.within("deadline"))?;
        Ok(ServerStack {
            outcome: OutcomeLayer::new(),
            deadline,
            shed,
        })
    }
}
