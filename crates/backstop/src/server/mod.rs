//! The server side, in the order a connection and then a request meet its rules. Start here.
//!
//! Each rule below is named after the setting that controls it, with the crate and the type that
//! implement it. [`ServerStack`] assembles the per-request rules (steps 5 to 8) as one layer;
//! [`Server`] applies the per-connection ones (steps 1 to 4 and 9) in its accept loop. This
//! module re-exports all of `backstop-server`, so `backstop::server::Server` and
//! `backstop_server::Server` are the same type.
//!
//! An application that keeps `axum::serve` takes what it can of steps 1 and 3 from [`listener`]
//! instead (the connection cap, accept errors survived, the idle rule on every stream, and axum's
//! `ConnectInfo<SocketAddr>`), and [`track_requests`] pauses the idle timer while a handler runs
//! and puts request bodies under the idle rule (step 4);
//! [`AxumListener`] lists what only [`Server`] does. A
//! [`ServerStack`] goes on the whole router with `Router::layer`, or on some routes with
//! `Router::route_layer`, each with its own limits, deadline and counts:
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use backstop::ServerStack;
//! use backstop::server::{ServeConfig, listener, track_requests};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let reports = ServerStack::builder()
//!     .max_in_flight(4)
//!     .default_deadline(Duration::from_secs(2))
//!     .build()?;
//! let app = Router::new()
//!     .route("/reports", get(|| async { "a heavy report" }))
//!     .route_layer(reports) // the routes above only
//!     .route("/", get(|| async { "hello" }))
//!     .layer(ServerStack::builder().build()?); // every route
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! axum::serve(
//!     listener(tcp, ServeConfig::default()),
//!     track_requests(app.into_make_service_with_connect_info::<SocketAddr>()),
//! )
//! .with_graceful_shutdown(async {}) // a real server: `shutdown_signal()`
//! .await?;
//! # Ok(())
//! # }
//! ```
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use backstop::ServerStack;
//! use backstop::server::{ServeConfig, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Per connection (steps 1–4, 9).
//! let config = ServeConfig::builder()
//!     .header_read_timeout(Duration::from_secs(10))
//!     .idle_timeout(Some(Duration::from_secs(60)))
//!     .max_connections(10_000)
//!     .drain_timeout(Duration::from_secs(30))
//!     .build()?;
//! // Per request (steps 5–8).
//! let stack = ServerStack::builder()
//!     .default_deadline(Duration::from_secs(10))
//!     .max_in_flight(512)
//!     .build()?;
//! let counts = stack.counts();
//! let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(stack);
//!
//! let server = Server::new(tokio::net::TcpListener::bind("127.0.0.1:0").await?, config);
//! // A real server passes `backstop::server::shutdown_signal()` (SIGTERM or Ctrl-C); this
//! // one shuts down at once.
//! let summary = server.serve_with_shutdown(app, async {}).await?;
//! assert!(summary.drained);
//! assert_eq!(counts.success(), 0);
//! # Ok(())
//! # }
//! ```
//!
//! # Per connection: [`Server`] (backstop-server)
//!
//! 1. **Connection cap** (`ServeConfig::max_connections`, default 10 000): at the cap the accept
//!    loop stops accepting, so new connections wait in the kernel's backlog. An accept that fails
//!    (out of file descriptors) backs off instead of ending the loop. Both in [`Server`].
//! 2. **Header read timeout** (`ServeConfig::header_read_timeout`, default 10 s): bounds the TLS
//!    handshake ([`Server::tls`]) and the wait for a complete request head (hyper's
//!    `header_read_timeout`, set by [`Server`]). A client that opens a connection and sends
//!    nothing, or a head one byte at a time, is dropped.
//! 3. **Idle I/O** (`ServeConfig::idle_timeout`, default 60 s): a connection on which no byte
//!    moves for the period, while one is awaited, is dropped. backstop-timeout implements it:
//!    the stream is wrapped in [`IdleIo`](crate::timeout::IdleIo), and
//!    [`ServerActivity`](crate::timeout::ServerActivity) pauses the read timer while a request
//!    is being handled, so a slow handler is not mistaken for a silent client (writes stay
//!    timed). The hand-off between the two is the `ServerActivity` value the server creates with
//!    the stream and puts around the service.
//! 4. **Request body idle** (the same `idle_timeout`): a handler waiting longer than the period
//!    for the next piece of its request body gets `TimedOut(Idle)` in `Phase::ReadBody`, like
//!    nginx's `client_body_timeout`. The body is an [`IncomingBody`] (backstop-server) around
//!    backstop-timeout's [`IdleBody`](crate::timeout::IdleBody); every request also carries the
//!    client's address as [`PeerAddr`] (and axum's `ConnectInfo`).
//!
//! # Per request: [`ServerStack`] (this crate), outermost first
//!
//! 5. **Outcome counting** ([`OutcomeLayer`], backstop-server): every response is classified
//!    (backstop-classify's `HttpPolicy`), its [`Outcome`](crate::Outcome) put in the response's
//!    extensions, counted in [`OutcomeCounts`] ([`ServerStack::counts`]) and failures logged. It
//!    is outermost so that it also counts what the rules below answer on their own: `504` from
//!    the deadline, `503` from shedding, `500` from a panic.
//! 6. **Incoming deadline, clamped** (`ServerStackBuilder::default_deadline`, default 30 s, and
//!    `max_deadline`): [`deadline::server::ServerDeadlineLayer`](crate::deadline::server::ServerDeadlineLayer)
//!    (backstop-deadline) reads `request-timeout-ms` or `grpc-timeout`; a caller may shorten the
//!    server's own deadline, never extend it. On expiry the handler is dropped and the caller gets
//!    `504`. The deadline is the ambient one while the handler runs, so a backstop
//!    [`Client`] called inside inherits the time left.
//! 7. **Overload shedding** (`ServerStackBuilder::max_in_flight`, default 1 024, and
//!    `shed_retry_after`): [`ShedWith503Layer`] (backstop-server) admits that many requests at
//!    once and answers every other one at once with `503` + `Retry-After`, instead of queueing it.
//!    It sits inside the deadline so that a request's slot is freed when its deadline expires.
//! 8. **Panics** ([`CatchPanicLayer`], tower-http): a handler panic becomes `500` instead of a
//!    dropped connection.
//!
//! # Shutdown
//!
//! 9. **Draining** (`ServeConfig::drain_timeout`, default 30 s): when the future given to
//!    [`Server::serve_with_shutdown`] completes ([`shutdown_signal`]: SIGTERM or Ctrl-C), the
//!    listener closes, idle connections close at once, busy ones finish their requests for up
//!    to the drain timeout; [`ServeSummary::drained`] says whether all did.
//!
//! The bounds of each setting are on the builders: [`ServeConfig`] for steps 1–4 and 9,
//! [`ServerStackBuilder`] for steps 5–8.
#![doc = ""]
#![cfg_attr(feature = "client", doc = "[`Client`]: crate::Client")]
#![cfg_attr(not(feature = "client"), doc = "[`Client`]: crate#features")]

mod stack;
mod telemetry;

pub use backstop_server::*;

pub use self::stack::{ServerStack, ServerStackBuilder, ServerStackService};
pub use self::telemetry::{RequestTelemetry, RequestTelemetryFuture};
