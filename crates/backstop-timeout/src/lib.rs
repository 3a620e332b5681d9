//! Connect and idle timeouts for hyper clients and servers: no connection may hang forever, on
//! either side.
//!
//! "No timeout" means "hang forever". hyper-util's `HttpConnector` bounds only the TCP connect
//! (not DNS, not TLS), and nothing in hyper 1 bounds a connection that simply stops sending bytes.
//!
//! - [`ConnectTimeoutLayer`] bounds the whole connection establishment of any connector — name
//!   resolution, TCP and TLS — and says which phase was stuck.
//! - [`TcpConnector`] bounds each address attempt and races addresses happy-eyeballs style, so
//!   one black-holed address cannot burn the whole connect budget.
//! - [`IdleTimeoutLayer`] fails client connections awaiting an answer that never comes, stalled
//!   response bodies ([`BodyIdleTimeoutLayer`]) and silent server connections ([`IdleIo`]), and
//!   gives matching HTTP/2 keep-alive PING settings ([`Http2KeepAlive`]).
//!
//! Every failure is a [`backstop_classify::Error`]: [`Kind::TimedOut`]`(`[`Timer::Connect`]`)` in
//! the phase it was stuck in, [`Retryable::Safe`] (nothing was sent), or
//! [`Kind::TimedOut`]`(`[`Timer::Idle`]`)`. Invalid settings (zero, absurdly long) are rejected
//! when a layer is built, with a [`ConfigError`] naming the setting.
//!
//! [`Kind::TimedOut`]: backstop_classify::Kind::TimedOut
//! [`Timer::Connect`]: backstop_classify::Timer::Connect
//! [`Timer::Idle`]: backstop_classify::Timer::Idle
//! [`Retryable::Safe`]: backstop_classify::Retryable::Safe
//!
//! ```
//! use std::time::Duration;
//! use backstop_classify::{Error, Kind, Phase, Retryable, Timer};
//! use backstop_timeout::{ConnectTimeoutLayer, IdleTimeoutLayer, TcpConnector};
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
//!     .layer(ConnectTimeoutLayer::new(Duration::from_millis(50))?)
//!     .layer(IdleTimeoutLayer::new(Duration::from_secs(30))?)
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

mod body;
mod config;
mod connect;
mod idle;
mod io;
mod keepalive;
mod phase;
mod server;
mod tcp;

pub use body::{BodyIdleTimeout, BodyIdleTimeoutLayer, IdleBody, ResponseFuture};
pub use config::ConfigError;
pub use connect::{ConnectFuture, ConnectTimeout, ConnectTimeoutLayer, MAX_CONNECT_TIMEOUT};
pub use idle::{IdleConnectFuture, IdleConnector, IdleTimeoutLayer, MAX_IDLE_TIMEOUT};
pub use io::{IdleConnection, IdleIo, Side};
pub use keepalive::{Http2KeepAlive, MAX_KEEP_ALIVE};
pub use phase::{
    MarkConnecting, MarkFuture, MarkResolving, PhaseStamps, report_phase, track_phase,
    track_phase_stamped,
};
pub use server::{ActiveBody, ActiveFuture, ServerActivity, TrackActivity};
pub use tcp::{DEFAULT_ATTEMPT_DELAY, DEFAULT_ATTEMPT_TIMEOUT, TcpConnector, TcpConnectorBuilder};
