//! Every rule for surviving an unreliable network, for hyper and axum.
//!
//! - [`Client`]: a ready HTTP client — deadline, safe retries with budget and backoff, a circuit
//!   breaker per host, classified errors, attempt/connect/idle timeouts — built from a validated
//!   [`Policy`]. It is a `tower::Service<http::Request<B>>` too, for any body, to sit at the
//!   bottom of a `ServiceBuilder` stack of your own; its builder takes the TCP options
//!   hyper-util's `HttpConnector` and reqwest users know (`tcp_keepalive`, `local_address`,
//!   `tcp_user_timeout`, `happy_eyeballs_timeout`…).
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
//! # #[cfg(feature = "client")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use backstop::{Client, Kind, Retryable};
//!
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
//! # #[cfg(not(feature = "client"))]
//! # fn main() {}
//! ```
//!
//! # Features
//!
//! Everything above the layers is behind a cargo feature, so an application compiles only what
//! it uses: with `default-features = false` the crate is the layers, [`ServiceBuilderExt`], the
//! failure vocabulary ([`Error`], [`Kind`]…) and [`Policy`] (its builder-style fields and
//! [`Policy::validate`]).
//!
//! | feature | enables | pulls in |
//! |---|---|---|
//! | `client` (default) | [`Client`], [`ClientBuilder`], [`CallInfo`], [`FnResolver`], [`RequestBody`], [`ResponseBody`]; `http://` only without `tls` | hyper (client, HTTP/1, HTTP/2), hyper-util's pooled client, tokio (`rt`, `time`) |
//! | `server` | [`ServerStack`], the [`server`] module ([`server::Server`]) | backstop-server, tower-http (`catch-panic`) |
//! | `server-tls` | `server::Server::tls`: serving TLS with your `rustls::ServerConfig`; implies `server` | tokio-rustls, rustls (no provider of its own: the configuration brings one) |
//! | `gateway` | [`Gateway`], [`RouteConfig`], [`GatewayRoute`]…; implies `client` and `server` | axum (for its `ConnectInfo`) |
//! | `admin` | [`admin`]: a live status page (HTML and JSON: breakers, retry budgets, in flight, shed) on an admin listener of its own, loopback unless allowed otherwise; implies `server` | httpdate, http-body-util |
//! | `config` | `Policy::from_toml`, `Policy::from_json`, serde on [`Policy`] and its sections (durations as `"250ms"`), `Gateway::from_toml` and `Gateway::from_toml_with`; with `client`, `Client::post_json` / `put_json` and `JsonBodyExt` (`res.json::<T>()`) | serde, humantime-serde, toml, serde_json, serde_path_to_error |
//! | `tls` | the client's `https://` (rustls) and `ClientBuilder::tls`; implies `client`. Enabled by every feature below | rustls, tokio-rustls |
//! | `rustls-ring` (default) | rustls' ring crypto provider | ring |
//! | `rustls-aws-lc` | rustls' aws-lc-rs crypto provider | aws-lc-rs (C, built with cmake) |
//! | `webpki-roots` (default) | the Mozilla root certificates, compiled in | webpki-roots |
//! | `native-roots` | the operating system's root certificates, read when a client is built | rustls-native-certs |
//! | `platform-verifier` | the operating system's certificate verifier (instead of the roots above) | rustls-platform-verifier |
//! | `chaos` | [`chaos`]: the fault-injecting upstream, for tests and demos | backstop-chaos |
//! | `reconnect` | [`reconnect`]: the supervisor for long-lived connections | backstop-reconnect |
//! | `metrics` | the client's, the server stack's and every layer's metrics through the `metrics` facade (names and labels: [`metrics`](mod@metrics)) | metrics |
//!
//! **Tracing** needs no feature: every [`Client`] call runs in an `http.client.call` span (the
//! retry layer's `http.client.attempt` spans are its children) and every request through a
//! [`ServerStack`] in an `http.server.request` span, with OpenTelemetry's HTTP field names; with
//! no subscriber listening, no field is computed.
//!
//! **The crypto provider** of the default TLS configuration is, never by a panic: the process
//! default when the application installed one (`rustls::crypto::CryptoProvider::install_default`);
//! else the one compiled in — aws-lc-rs when `rustls-aws-lc` is enabled, even next to the default
//! `rustls-ring` (enabling it is an explicit choice), ring otherwise. With `tls` but neither
//! provider feature nor a process default, [`ClientBuilder::build`] returns a [`ConfigError`]
//! naming `tls`, unless a configuration was passed with `ClientBuilder::tls`.
//!
//! **The roots** are the platform verifier's when `platform-verifier` is enabled; else the
//! union of the enabled `native-roots` and `webpki-roots` (native certificates that fail to load
//! are skipped with a warning). With none, the default configuration is a [`ConfigError`] naming
//! `tls`: pass your own with `ClientBuilder::tls`.
//!
//! **Without TLS** (`default-features = false, features = ["client"]`) the client speaks
//! `http://` only: an `https://` URL fails the call with a classified [`Error`] (never sent, not
//! retried) whose message names the features to enable, and what is known to need HTTPS when it
//! is built is a [`ConfigError`] then: `ClientBuilder::https_only(true)`, a gateway route
//! whose upstream is `https://`.
#![cfg_attr(docsrs, feature(doc_cfg))]
// Links to what a disabled feature leaves out point at the table above instead (after a blank
// line: a link definition cannot interrupt a paragraph).
#![doc = ""]
#![cfg_attr(not(feature = "client"), doc = "[`Client`]: #features")]
#![cfg_attr(not(feature = "client"), doc = "[`ClientBuilder`]: #features")]
#![cfg_attr(not(feature = "client"), doc = "[`ClientBuilder::build`]: #features")]
#![cfg_attr(not(feature = "client"), doc = "[`CallInfo`]: #features")]
#![cfg_attr(not(feature = "client"), doc = "[`FnResolver`]: #features")]
#![cfg_attr(not(feature = "client"), doc = "[`RequestBody`]: #features")]
#![cfg_attr(not(feature = "client"), doc = "[`ResponseBody`]: #features")]
#![cfg_attr(not(feature = "gateway"), doc = "[`Gateway`]: #features")]
#![cfg_attr(not(feature = "gateway"), doc = "[`GatewayReason`]: #features")]
#![cfg_attr(not(feature = "gateway"), doc = "[`GatewayRoute`]: #features")]
#![cfg_attr(not(feature = "gateway"), doc = "[`RouteConfig`]: #features")]
#![cfg_attr(not(feature = "server"), doc = "[`ServerStack`]: #features")]
#![cfg_attr(not(feature = "server"), doc = "[`server`]: #features")]
#![cfg_attr(not(feature = "server"), doc = "[`server::Server`]: #features")]
#![cfg_attr(not(feature = "admin"), doc = "[`admin`]: #features")]
#![cfg_attr(not(feature = "chaos"), doc = "[`chaos`]: #features")]
#![cfg_attr(not(feature = "reconnect"), doc = "[`reconnect`]: #features")]

#[cfg(feature = "admin")]
pub mod admin;
#[cfg(feature = "client")]
mod client;
mod ext;
#[cfg(feature = "gateway")]
mod gateway;
pub mod metrics;
mod policy;
#[cfg(feature = "server")]
pub mod server;
#[cfg(any(feature = "client", feature = "server"))]
mod telemetry;
#[cfg(feature = "client")]
mod timed;
#[cfg(feature = "tls")]
mod tls;

#[cfg(feature = "client")]
pub use client::{
    CallInfo, CallInfoExt, Client, ClientBuilder, ClientFuture, ConnectTimings, FnResolver,
    RequestBody, ResponseBody,
};
#[cfg(all(feature = "client", feature = "config"))]
pub use client::{JSON_BODY_LIMIT, JsonBodyExt};
pub use ext::ServiceBuilderExt;
#[cfg(feature = "gateway")]
pub use gateway::{
    BreakerCounts, DEFAULT_BODY_LIMIT, DEFAULT_BUFFER_BUDGET, ForwardedHeaders, Gateway,
    GatewayBody, GatewayReason, GatewayRoute, REASON_HEADER, RouteConfig,
};
pub use policy::{
    BreakerPolicy, BudgetPolicy, ConfigError, DEFAULT_ATTEMPT_TIMEOUT, JitterMode, Policy,
    PropagationPolicy, RetryPolicy,
};
#[cfg(feature = "server")]
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
#[cfg(all(fuzzing, feature = "gateway"))]
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
