//! What the server records: the [`Delivery`] log and connection counter it shares with every
//! connection task, and the [`ChaosServer`] methods that count them. Separate from the server's
//! lifecycle and from request handling because tests read these counts to prove what reached the
//! upstream, whatever fault was applied.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Method;
use tokio::time::Instant;

use super::ChaosServer;
use crate::{Fault, Script, lock};

/// One request as received by the chaos server, recorded after its body was
/// read (completely, unless the client gave up).
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Request method.
    pub method: Method,
    /// Request path, without the query.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// The `idempotency-key` header, if present and valid UTF-8.
    pub idempotency_key: Option<String>,
    /// The `x-request-id` header, if present and valid UTF-8.
    pub request_id: Option<String>,
    /// Every request header as received, e.g. to check which deadline header a client sent.
    pub headers: http::HeaderMap,
    /// Number of body bytes received.
    pub body_len: u64,
    /// [`digest`](crate::digest) of the body bytes received.
    pub body_digest: u64,
    /// Whether the body was received up to its end (false if the client
    /// aborted mid-body).
    pub body_complete: bool,
    /// Name of the fault applied ([`Fault::name`]), or `"bad-request"`.
    pub fault: &'static str,
    /// When the body had been read (tokio clock).
    pub at: Instant,
}

/// State shared by the server handle and every connection task.
pub(crate) struct Shared {
    pub(super) routes: Mutex<Vec<(String, Script)>>,
    pub(super) log: Mutex<Vec<Delivery>>,
    pub(super) connections: AtomicU64,
}

impl Shared {
    /// The fault the longest matching script prefix gives `path` (`Ok` without one).
    pub(super) fn route(&self, path: &str) -> Fault {
        let mut routes = lock(&self.routes);
        let best = routes
            .iter_mut()
            .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len());
        match best {
            Some((_, script)) => script.next_fault(Instant::now()),
            None => Fault::Ok,
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl ChaosServer {
    /// The ordered log of every request received since start or the last
    /// [`ChaosServer::reset_counts`].
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.shared.log).clone()
    }

    /// Number of requests received.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.log).len()
    }

    /// Number of requests with this method (e.g. `"POST"` or `Method::POST`)
    /// and exactly this path (without query).
    pub fn count(&self, method: impl AsRef<str>, path: &str) -> usize {
        let method = method.as_ref();
        self.count_where(|d| d.method.as_str() == method && d.path == path)
    }

    /// Number of requests with exactly this path, any method.
    pub fn count_path(&self, path: &str) -> usize {
        self.count_where(|d| d.path == path)
    }

    /// Number of requests carrying `idempotency-key: <key>`.
    pub fn count_key(&self, key: &str) -> usize {
        self.count_where(|d| d.idempotency_key.as_deref() == Some(key))
    }

    /// Number of requests carrying `x-request-id: <id>`.
    pub fn count_request_id(&self, id: &str) -> usize {
        self.count_where(|d| d.request_id.as_deref() == Some(id))
    }

    fn count_where(&self, f: impl Fn(&Delivery) -> bool) -> usize {
        lock(&self.shared.log).iter().filter(|d| f(d)).count()
    }

    /// Number of TCP connections accepted (including ones whose TLS
    /// handshake failed).
    pub fn connection_count(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Clears the delivery log and the connection counter.
    pub fn reset_counts(&self) {
        lock(&self.shared.log).clear();
        self.shared.connections.store(0, Ordering::Relaxed);
    }
}
