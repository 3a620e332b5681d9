//! backstop's server side: an accept loop that stays up under hostile clients and drains on
//! shutdown ([`Server`]), and overload shedding that answers `503` + `Retry-After` at once
//! instead of queueing ([`ShedWith503Layer`]).
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use backstop_server::{ShedWith503Layer, IncomingBody, Server, ServeConfig};
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ServeConfig::builder()
//!     .idle_timeout(Some(Duration::from_secs(30)))
//!     .drain_timeout(Duration::from_secs(10))
//!     .max_connections(5_000)
//!     .build()?;
//! let app = ServiceBuilder::new()
//!     .layer(ShedWith503Layer::new(512).retry_after(Duration::from_secs(2)))
//!     .service_fn(|_req: Request<IncomingBody>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
//!     });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = Server::new(listener, config);
//! // Serve until the shutdown future completes (here: at once), then drain. A real server
//! // passes `backstop_server::shutdown_signal()`: SIGTERM or Ctrl-C.
//! let summary = server.serve_with_shutdown(app, async {}).await?;
//! assert!(summary.drained);
//! # Ok(())
//! # }
//! ```
//!
//! Handlers receive a `Request<`[`IncomingBody`]`>`: hyper's body under the idle timeout, so a
//! client trickling its body is dropped at the idle bound. axum routers take it as they are.
//! The client's address is in every request's extensions as [`PeerAddr`], and — with the `axum`
//! feature, on by default — as axum's `ConnectInfo<SocketAddr>`, so the `ConnectInfo` extractor
//! works:
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use std::net::SocketAddr;
//! use axum::{Router, extract::ConnectInfo, routing::get};
//!
//! let app: Router = Router::new().route(
//!     "/",
//!     get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { format!("hello {peer}\n") }),
//! );
//! // `Server::new(listener, config).serve(app)` fills in `peer` for every request.
//! # drop(app);
//! # }
//! ```
//!
//! An application that keeps `axum::serve` gets the connection rules from [`listener`] instead
//! (with the `axum` feature): accept errors survived with the same backoff, the connection cap,
//! the idle rule on every stream, and axum's `ConnectInfo<SocketAddr>`; with [`track_requests`]
//! around the make-service, the idle timer pauses while a handler runs and request bodies are
//! under the idle rule, as here. The rules that live in `Server`'s HTTP side (the header read
//! timeout, the bounded drain, HTTP/2 settings, TLS) do not apply there: [`AxumListener`] lists
//! them.
//!
//! ```
//! # #[cfg(feature = "axum")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::net::SocketAddr;
//! use axum::{Router, routing::get};
//! use backstop_server::{ServeConfig, listener, track_requests};
//!
//! let app = Router::new().route("/", get(|| async { "hello\n" }));
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! axum::serve(
//!     listener(tcp, ServeConfig::default()),
//!     track_requests(app.into_make_service_with_connect_info::<SocketAddr>()),
//! )
//! .with_graceful_shutdown(async {}) // a real server: `backstop_server::shutdown_signal()`
//! .await?;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "axum"))]
//! # fn main() {}
//! ```
//!
//! A handler panic should be answered with `500` instead of a dropped connection: put
//! [`CatchPanicLayer`] innermost, around the handler.
//!
//! # Features
//!
//! | feature | default | enables | pulls in |
//! |---|---|---|---|
//! | `axum` | on | axum's `ConnectInfo<SocketAddr>` in every request; [`listener`], [`AxumListener`], [`track_requests`] for `axum::serve` | axum (no default features) |
//! | `tls` | off | `Server::tls`: serve TLS with your `rustls::ServerConfig` | tokio-rustls, rustls (no crypto provider: your configuration brings one) |
//! | `metrics` | off | the counter [`metrics::SHED`] | metrics (the facade only) |
//!
//! # Telemetry
//!
//! A shed request is the event `request shed` (target `backstop_server`; warn at most once a
//! second per [`ShedWith503Layer`], debug in between) with `in_flight`, `limit` and, on the
//! warning, `suppressed`; with the `metrics` feature it is counted in [`metrics::SHED`].

mod accept;
mod config;
mod connection;
#[cfg(feature = "axum")]
mod listener;
pub mod metrics;
mod outcome;
mod request;
mod serve;
mod shed;
mod signal;
#[cfg(feature = "axum")]
mod track;

pub use config::{ConfigError, DEFAULT_MAX_CONNECTIONS, ServeConfig, ServeConfigBuilder};
#[cfg(feature = "axum")]
pub use listener::{AcceptedStream, AxumListener, ConnectInfoListener, listener};
pub use outcome::{OutcomeCounts, OutcomeFuture, OutcomeLayer, OutcomeService};
pub use request::{IncomingBody, PeerAddr};
pub use serve::{BoxError, ServeSummary, Server, ServerStats};
pub use shed::{
    MAX_IN_FLIGHT, RETRY_AFTER_RANGE, ShedWith503, ShedWith503Future, ShedWith503Layer,
};
pub use signal::shutdown_signal;
/// Answers a handler panic with `500 Internal Server Error` instead of dropping the connection
/// (tower-http's layer, re-exported).
pub use tower_http::catch_panic::CatchPanicLayer;
#[cfg(feature = "axum")]
pub use track::{TrackRequests, TrackRequestsFuture, Tracked, TrackedFuture, track_requests};
