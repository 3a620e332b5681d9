//! A live status page — every circuit breaker, retry budget, in-flight and shed count — on an
//! admin listener of its own (like Envoy's admin `/clusters` and the Hystrix dashboard). With
//! the `admin` feature.
//!
//! You register what to watch in a [`Status`], give it a name each, and serve it with
//! [`Admin`]:
//!
//! - `GET /status`: an HTML page that refreshes itself every 2 s (no JavaScript): a table per
//!   client and per gateway route, with each upstream host's breaker state as a coloured badge
//!   (closed green, half-open amber, open red), the time left before the next probe, the
//!   failure rate and calls in the window, the retry budget's balance; and a table of servers
//!   with requests in flight and shed. `GET /` redirects there.
//! - `GET /status.json`: the same [`StatusSnapshot`] as JSON (written by hand: no `config`
//!   feature or serde needed), for scripts and alerting.
//! - anything else: `404`.
//!
//! The listener binds `127.0.0.1:9901` unless told otherwise, and a non-loopback address is
//! refused when the [`Admin`] is built (a [`ConfigError`](crate::ConfigError) naming `bind`)
//! unless [`AdminBuilder::allow_non_loopback`] says so: the page shows your upstreams, and it
//! is never meant for the public port. It is served by [`server::Server`](crate::server::Server)
//! (its accept loop, header read and idle timeouts), and stops with the shutdown future it is
//! given, or when its future is dropped.
//!
//! The snapshot and the page are built by this module (`status.rs` holds what is watched,
//! `snapshot.rs` what is read from it, `json.rs` and `html.rs` its two renderings, the page's
//! single template is `status.html`, `serve.rs` the listener and its three routes).
//!
//! ```
//! # #[cfg(feature = "client")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use backstop::admin::{Admin, Status};
//! use backstop::{Client, ServerStack};
//!
//! let payments = Client::builder().build()?;
//! let public = ServerStack::builder().max_in_flight(256).build()?;
//! let status = Status::new()
//!     .client("payments", &payments)
//!     .server("public", &public);
//!
//! // Port 0 here so the example never collides; the default is 127.0.0.1:9901.
//! let admin = Admin::builder().bind("127.0.0.1:0".parse()?).build()?;
//! let server = admin.listen().await?;
//! println!("status page: http://{}/status", server.local_addr()?);
//! // A real server passes `backstop::server::shutdown_signal()`; this one stops at once.
//! server.serve_with_shutdown(status.clone(), async {}).await?;
//!
//! // The same snapshot, without a listener.
//! let json = status.snapshot().to_json();
//! assert!(json.contains(r#""name":"payments""#));
//!
//! // A public address needs saying so.
//! let err = Admin::builder().bind("0.0.0.0:9901".parse()?).build().unwrap_err();
//! assert_eq!(err.field(), "bind");
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "client"))]
//! # fn main() {}
//! ```

mod html;
mod json;
mod serve;
mod snapshot;
mod status;

pub use serve::{Admin, AdminBuilder, AdminServer, DEFAULT_ADMIN_ADDR};
pub use snapshot::{BreakerStatus, BudgetStatus, ClientStatus, ServerStatus, StatusSnapshot};
#[cfg(feature = "gateway")]
pub use snapshot::{GatewayStatus, RouteStatus};
pub use status::Status;
