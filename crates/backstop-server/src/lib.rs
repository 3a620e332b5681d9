//! backstop's server side: an accept loop that stays up and drains on shutdown ([`Server`]), and
//! overload shedding that answers `503` + `Retry-After` at once instead of queueing
//! ([`LoadShedLayer`]).
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use backstop_server::{LoadShedLayer, Server, ServeConfig};
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use hyper::body::Incoming;
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ServeConfig::builder()
//!     .idle_timeout(Some(Duration::from_secs(30)))
//!     .drain_timeout(Duration::from_secs(10))
//!     .build()?;
//! let app = ServiceBuilder::new()
//!     .layer(LoadShedLayer::new(512)?.retry_after(Duration::from_secs(2))?)
//!     .service_fn(|_req: Request<Incoming>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
//!     });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = Server::new(listener, config);
//! // Serve until the shutdown future completes (here: at once), then drain.
//! let summary = server.serve_with_shutdown(app, async {}).await?;
//! assert!(summary.drained);
//! # Ok(())
//! # }
//! ```
//!
//! A handler panic should be answered with `500` instead of a dropped connection: put
//! [`CatchPanicLayer`] innermost, around the handler.

mod config;
mod outcome;
mod serve;
mod shed;

pub use config::{ConfigError, ServeConfig, ServeConfigBuilder};
pub use outcome::{OutcomeCounts, OutcomeFuture, OutcomeLayer, OutcomeService};
pub use serve::{BoxError, ServeSummary, Server, ServerStats};
pub use shed::{LoadShed, LoadShedLayer, MAX_IN_FLIGHT, ShedFuture};
/// Answers a handler panic with `500 Internal Server Error` instead of dropping the connection
/// (tower-http's layer, re-exported).
pub use tower_http::catch_panic::CatchPanicLayer;
