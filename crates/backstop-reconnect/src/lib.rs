//! A supervisor for long-lived connections: it reconnects with capped, jittered exponential
//! backoff, resets the backoff only after a connection proved healthy, classifies every
//! disconnect, detects silent peers with a heartbeat, and keeps one outbound queue and one
//! incoming stream alive across connections.
//!
//! ```
//! use std::time::Duration;
//! use backstop_reconnect::{Event, Supervisor, TcpLines};
//! use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A loopback echo server that closes each connection after one line.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn(async move {
//!     while let Ok((socket, _)) = listener.accept().await {
//!         let (read, mut write) = socket.into_split();
//!         let mut lines = BufReader::new(read).lines();
//!         if let Ok(Some(line)) = lines.next_line().await {
//!             let _ = write.write_all(format!("echo {line}\n").as_bytes()).await;
//!         }
//!     }
//! });
//!
//! let (handle, mut events) = Supervisor::builder(TcpLines::new(addr.to_string())?)
//!     .backoff(backstop_retry::Backoff::new(
//!         Duration::from_millis(10),
//!         Duration::from_secs(1),
//!         backstop_retry::Jitter::Full,
//!     )?)
//!     .spawn()?;
//!
//! handle.send("one".to_string()).ok();
//! assert_eq!(events.next_message().await.as_deref(), Some("echo one"));
//! // The server closed that connection; the supervisor reconnects and the queue carries on.
//! handle.send("two".to_string()).ok();
//! assert_eq!(events.next_message().await.as_deref(), Some("echo two"));
//!
//! assert!(handle.shutdown().await.is_none()); // stopped on request, not given up
//! # Ok(())
//! # }
//! ```
//!
//! # How it behaves
//!
//! - **Backoff**: the delay before attempt *n+1* after *n* consecutive failures is
//!   backstop-retry's [`Backoff::delay`](backstop_retry::Backoff::delay)`(n - 1)`, so delays grow
//!   from the base to the cap within the jitter mode's bounds (seed them with
//!   [`SupervisorBuilder::seed`]). A connection lost before
//!   [`healthy_after`](SupervisorBuilder::healthy_after) counts as a failure like a refused
//!   connect: a server that accepts and closes at once is retried no faster than the backoff.
//!   Only a connection that stayed up for the healthy period resets the count, so the next
//!   reconnect waits the base delay again.
//! - **Giving up**: with [`max_attempts`](SupervisorBuilder::max_attempts) or
//!   [`max_elapsed`](SupervisorBuilder::max_elapsed) the supervisor stops with a classified
//!   [`Error`](backstop_classify::Error) of the last failure's kind and phase, carrying the
//!   attempt count and the last failure as its source ([`State::Stopped`]).
//! - **Every disconnect is classified** ([`Event::Disconnected`], [`Event::AttemptFailed`],
//!   [`State::Reconnecting`]`{ last_error }`): a peer's close is
//!   [`Kind::Closed`](backstop_classify::Kind::Closed), a heartbeat timeout
//!   `Kind::TimedOut(Timer::Idle)`, I/O errors by their cause; tracing events at every decision.
//! - **On-connect hook** ([`SupervisorBuilder::on_connect`]): runs on every connection before the
//!   application sees it (authenticate, replay subscriptions); its failure is a failed attempt.
//! - **Heartbeat** ([`Heartbeat`]): a silent peer is detected at most `interval + timeout` after
//!   the last thing it sent.
//! - **Outbound queue**: [`Handle::send`] queues up to
//!   [`queue_capacity`](SupervisorBuilder::queue_capacity) messages while disconnected and
//!   otherwise hands the message back in [`SendError::Full`]; nothing is dropped silently. What
//!   happens to messages in flight on a lost connection is the [`Delivery`] mode: at-most-once
//!   hands them back ([`Event::Unconfirmed`]), at-least-once sends them again first. With
//!   [`acknowledged_by`](SupervisorBuilder::acknowledged_by) a message stays in flight until the
//!   peer acknowledges it. On stop, everything unsent comes back as [`Event::Unconfirmed`].
//! - **Shutdown** ([`Handle::shutdown`]) interrupts any connect, backoff sleep or write at once
//!   and closes the connection within one second.
//!
//! # Connectors
//!
//! Anything implementing [`Connector`]: an async function ([`connect_fn`]), a tower service
//! ([`ServiceConnector`]), raw TCP framed by a tokio-util codec ([`TcpFramed`], [`TcpLines`]:
//! newline-delimited strings, connected through backstop-timeout's `TcpConnector` under a
//! connect timeout) and, with the `websocket` feature (on by default), WebSocket over ws:// and
//! wss:// ([`WebSocket`]; rustls with ring chosen explicitly). Turn the feature off to build
//! without tungstenite.

mod connector;
mod handle;
mod heartbeat;
mod state;
mod supervisor;
mod task;
mod tcp;
#[cfg(feature = "websocket")]
mod ws;

pub use connector::{Connector, FnConnector, ServiceConnector, connect_fn};
pub use handle::{Events, Handle, SendError};
pub use heartbeat::{Heartbeat, MAX_HEARTBEAT};
pub use state::{Event, State};
pub use supervisor::{
    DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_HEALTHY_AFTER, DEFAULT_QUEUE_CAPACITY, Delivery,
    MAX_QUEUE_CAPACITY, Spawned, Supervisor, SupervisorBuilder,
};
pub use tcp::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_LINE_LENGTH, FramedConn, TcpFramed, TcpLines};
#[cfg(feature = "websocket")]
pub use ws::{WebSocket, WsConn};

/// The WebSocket message type, re-exported so applications need not depend on tungstenite.
#[cfg(feature = "websocket")]
pub use tokio_tungstenite::tungstenite::Message as WsMessage;
