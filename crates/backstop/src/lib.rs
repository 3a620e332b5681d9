//! Every rule for surviving an unreliable network, for hyper and axum.
//!
//! - [`Client`]: a ready HTTP client — deadline, safe retries with budget and backoff, a circuit
//!   breaker per host, classified errors, attempt/connect/idle timeouts — built from a validated
//!   [`Policy`].
//! - [`Gateway`]: a reverse proxy with per-route policies from configuration (path prefix and
//!   methods → upstream + [`Policy`]), e.g. no retries and a tight deadline for `/payments`,
//!   three retries for `/catalog`; paths normalised before routing, hop-by-hop headers removed,
//!   forwarding headers written, and its own answers marked with a [`GatewayReason`] code.
//! - [`ServerStack`]: the server-side rules for axum and hyper (incoming deadline, load
//!   shedding with `503` + `Retry-After`, panic → `500`, response classification), to serve
//!   with [`server::Server`] (an accept loop that survives accept errors, drops idle streams and
//!   drains on shutdown). The [`server`] module walks through every server rule in order, and
//!   is the place to start reading the server side.
//! - The layers themselves, re-exported, and [`ServiceBuilderExt`] to assemble your own stack
//!   around any `Service<http::Request<B>>`: [`classify`], [`timeout`], [`deadline`], [`retry`],
//!   [`breaker`], [`server`].
//!
//! ```
//! use std::time::Duration;
//! use backstop::{Client, Kind, Retryable};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::builder()
//!     .deadline(Duration::from_secs(2))
//!     .attempt_timeout(Duration::from_millis(500))
//!     .connect_timeout(Duration::from_millis(200))
//!     .build()?;
//!
//! // Nothing listens on this port: refused, never sent, so retried (safe for any method) until
//! // the attempts run out; then the classified error comes back.
//! let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
//! let err = client.post(&format!("http://{closed}/charge"), "{}").await.unwrap_err();
//! assert_eq!(err.kind(), Kind::Refused);
//! assert_eq!(err.retryable(), Retryable::Safe);
//! # Ok(())
//! # }
//! ```

mod client;
mod ext;
mod gateway;
mod policy;
pub mod server;
mod timed;
mod tls;

pub use client::{
    CallInfo, CallInfoExt, Client, ClientBuilder, ConnectTimings, FnResolver, RequestBody,
    ResponseBody,
};
pub use ext::ServiceBuilderExt;
pub use gateway::{
    BreakerCounts, DEFAULT_BODY_LIMIT, DEFAULT_BUFFER_BUDGET, ForwardedHeaders, Gateway,
    GatewayBody, GatewayReason, GatewayRoute, REASON_HEADER, RouteConfig,
};
pub use policy::{
    BreakerPolicy, BudgetPolicy, ConfigError, DEFAULT_ATTEMPT_TIMEOUT, JitterMode, Policy,
    PropagationPolicy, RetryPolicy,
};
pub use server::{ServerStack, ServerStackBuilder, ServerStackService};

pub use backstop_classify::{
    Error, Failure, Kind, Outcome, Phase, ProtocolFailure, Retryable, Timer,
};

/// Circuit breakers (`backstop-breaker`).
pub use backstop_breaker as breaker;
/// The failure vocabulary (`backstop-classify`).
pub use backstop_classify as classify;
/// Deadlines and attempt timeouts (`backstop-deadline`).
pub use backstop_deadline as deadline;
/// Retries (`backstop-retry`).
pub use backstop_retry as retry;
/// Connect and idle timeouts (`backstop-timeout`).
pub use backstop_timeout as timeout;

/// The fault-injecting upstream (`backstop-chaos`), for tests and demos: with the `chaos` feature.
#[cfg(feature = "chaos")]
pub use backstop_chaos as chaos;

/// The supervisor for long-lived connections (`backstop-reconnect`): with the `reconnect`
/// feature.
#[cfg(feature = "reconnect")]
pub use backstop_reconnect as reconnect;

/// The private parsers the fuzz targets in `fuzz/` drive directly. Compiled only under
/// `cfg(fuzzing)`, which `cargo fuzz` sets: not part of the API.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    /// The gateway's path normalisation: the normal form, or why the path is refused.
    pub fn normalise_path(raw: &str) -> Result<String, String> {
        crate::gateway::normalise_path(raw).map_err(|err| err.to_string())
    }

    /// Whether a normalised `path` lies under a normalised `prefix`, as the gateway routes.
    pub fn path_under(path: &str, prefix: &str) -> bool {
        crate::gateway::path_under(path, prefix)
    }
}
