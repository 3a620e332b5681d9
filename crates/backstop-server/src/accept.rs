//! The accept step that [`Server`](crate::Server) and the axum listener share: a place under the
//! connection cap first, then an accept that survives accept errors.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::sleep;

use crate::config::ServeConfig;
use crate::serve::{OpenConnection, ServerStats};

/// The longest pause after a failed accept.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// A listener under the server's accept rules.
#[derive(Debug)]
pub(crate) struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    max_connections: usize,
    first_backoff: Duration,
    /// The pause after the next failed accept.
    backoff: Duration,
    stats: ServerStats,
}

/// A connection just accepted, holding its place under the cap.
pub(crate) struct Accepted {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) open: OpenConnection,
}

impl Acceptor {
    pub(crate) fn new(listener: TcpListener, config: &ServeConfig, stats: ServerStats) -> Self {
        Acceptor {
            listener,
            slots: Arc::new(Semaphore::new(config.max_connections)),
            max_connections: config.max_connections,
            first_backoff: config.accept_backoff,
            backoff: config.accept_backoff,
            stats,
        }
    }

    #[cfg(feature = "axum")]
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Waits for a place under the cap, then for a connection. Accept errors never come out:
    /// errors that concern only the one connection (`ECONNABORTED`…) are skipped at once, the
    /// others (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`…) are counted, logged at warn and backed
    /// off (doubling from `accept_backoff` up to one second) instead of spinning.
    ///
    /// Cancel-safe, as both callers race it against a shutdown signal: a cancelled call gives
    /// its place back and accepts nothing. `None` only if the cap's semaphore were closed, which
    /// nothing does.
    pub(crate) async fn accept(&mut self) -> Option<Accepted> {
        // The place first, then accept: at the cap the connection waits in the listen backlog
        // (the kernel's queue) instead of being accepted only to be closed.
        if self.slots.available_permits() == 0 {
            tracing::debug!(
                max_connections = self.max_connections,
                "at the connection cap; not accepting until a connection ends"
            );
        }
        let slot = Arc::clone(&self.slots).acquire_owned().await.ok()?;
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    self.backoff = self.first_backoff;
                    self.stats.count_accepted();
                    let _ = stream.set_nodelay(true);
                    return Some(Accepted {
                        stream,
                        peer,
                        open: OpenConnection::new(self.stats.clone(), slot),
                    });
                }
                Err(err) if is_per_connection(&err) => {
                    tracing::debug!(error = %err, "accept failed for one connection; going on");
                }
                Err(err) => {
                    self.stats.count_accept_error();
                    let pause = self.backoff;
                    tracing::warn!(
                        error = %err,
                        backoff_ms = pause.as_millis() as u64,
                        "accept failed (out of file descriptors or memory?); backing off"
                    );
                    // Doubled before the pause, so a cancelled pause still counts.
                    self.backoff = (pause * 2).min(MAX_ACCEPT_BACKOFF);
                    sleep(pause).await;
                }
            }
        }
    }
}

/// Accept errors that concern only the connection being accepted: the next accept may succeed at
/// once.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}
