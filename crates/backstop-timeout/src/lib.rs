//! Connect and idle timeouts for hyper clients and servers: no connection may hang forever, on
//! either side.
//!
//! "No timeout" means "hang forever". hyper-util's `HttpConnector` bounds only the TCP connect
//! (not DNS, not TLS), and nothing in hyper 1 bounds a connection that simply stops sending bytes.
//!
//! - [`ConnectTimeoutLayer`] bounds the whole connection establishment of any connector — name
//!   resolution, TCP and TLS — and says which phase was stuck, as the connect future tells it
//!   ([`ConnectProgress`]; [`OpaqueConnector`] for a connector whose future says nothing).
//! - [`TcpConnector`] bounds each address attempt and races addresses happy-eyeballs style, so
//!   one black-holed address cannot burn the whole connect budget.
//! - Three idle timeouts, one per thing that can go silent: [`ConnectionIdleTimeoutLayer`] fails
//!   client connections awaiting an answer that never comes, [`BodyIdleTimeoutLayer`] stalled
//!   response bodies, [`ServerIdleTimeout`] silent server connections; [`Http2KeepAlive`] gives
//!   matching HTTP/2 keep-alive PING settings.
//!
//! Every failure is a [`backstop_classify::Error`]: [`Kind::TimedOut`]`(`[`Timer::Connect`]`)` in
//! the phase it was stuck in, [`Retryable::Safe`] (nothing was sent), or
//! [`Kind::TimedOut`]`(`[`Timer::Idle`]`)`. Constructors (`new`) take settings as given, like
//! tower-http's; the checked ones (`try_new`, builders' `build`) reject a setting outside the
//! bounds ([`MIN_TIMEOUT`], [`MAX_CONNECT_TIMEOUT`], [`MAX_IDLE_TIMEOUT`], [`MAX_KEEP_ALIVE`])
//! with a [`ConfigError`] naming it.
//!
//! Features (off by default; the `backstop` facade turns on what its client and server use):
//! `http2` gives `Http2KeepAlive::apply_to_client` (hyper-util's `http2`, so h2), and
//! `http2-server` gives `Http2KeepAlive::apply_to_server` too (hyper-util's `server-auto`).
//!
//! [`Kind::TimedOut`]: backstop_classify::Kind::TimedOut
//! [`Timer::Connect`]: backstop_classify::Timer::Connect
//! [`Timer::Idle`]: backstop_classify::Timer::Idle
//! [`Retryable::Safe`]: backstop_classify::Retryable::Safe
//!
//! ```
//! use std::time::Duration;
//! use backstop_classify::{Error, Kind, Phase, Retryable, Timer};
//! use backstop_timeout::{ConnectTimeoutLayer, ConnectionIdleTimeoutLayer, TcpConnector};
//! use hyper_util::client::legacy::Client;
//! use hyper_util::client::legacy::connect::dns::Name;
//! use hyper_util::rt::TokioExecutor;
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A resolver that never answers, standing in for a DNS server that has gone away.
//! let hanging_dns = tower::service_fn(|_name: Name| {
//!     std::future::pending::<Result<std::vec::IntoIter<std::net::SocketAddr>, std::io::Error>>()
//! });
//! let connector = ServiceBuilder::new()
//!     .layer(ConnectTimeoutLayer::try_new(Duration::from_millis(50))?)
//!     .layer(ConnectionIdleTimeoutLayer::try_new(Duration::from_secs(30))?)
//!     .service(TcpConnector::builder().resolver(hanging_dns).build()?);
//! let client = Client::builder(TokioExecutor::new())
//!     .build::<_, http_body_util::Empty<bytes::Bytes>>(connector);
//!
//! let err = client.get("http://service.test/".parse()?).await.unwrap_err();
//! let err = Error::find_in(&err).expect("a classified connect error");
//! assert_eq!(err.kind(), Kind::TimedOut(Timer::Connect));
//! assert_eq!(err.phase(), Phase::Resolve);
//! assert_eq!(err.retryable(), Retryable::Safe);
//! # Ok(())
//! # }
//! ```

mod activity;
mod body;
mod config;
mod connect;
mod connection;
mod io;
mod keepalive;
mod progress;
mod race;
mod server;
mod socket;
mod tcp;

pub use activity::{ActiveBody, ActiveFuture, ServerActivity, TrackActivity};
pub use body::{BodyIdleTimeout, BodyIdleTimeoutLayer, IdleBody, ResponseFuture};
pub use config::{ConfigError, MAX_CONNECT_TIMEOUT, MAX_IDLE_TIMEOUT, MAX_KEEP_ALIVE, MIN_TIMEOUT};
pub use connect::{ConnectFuture, ConnectTimeout, ConnectTimeoutLayer};
pub use connection::{
    ConnectionIdleTimeoutLayer, IdleConnectFuture, IdleConnection, IdleConnector,
};
pub use io::{IdleIo, Side};
pub use keepalive::Http2KeepAlive;
pub use progress::{ConnectProgress, OpaqueConnecting, OpaqueConnector, PhaseStamps};
pub use server::ServerIdleTimeout;
pub use socket::{MAX_KEEPALIVE, MAX_KEEPALIVE_RETRIES, MIN_KEEPALIVE};
pub use tcp::{
    DEFAULT_ATTEMPT_DELAY, DEFAULT_ATTEMPT_TIMEOUT, TcpConnecting, TcpConnector,
    TcpConnectorBuilder,
};
