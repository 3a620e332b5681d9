//! [`Status`]: what the status page watches, each under a name of the user's.

use std::fmt;

use backstop_breaker::{Breakers, PerAuthority};
use backstop_retry::RetryBudget;

use super::snapshot::StatusSnapshot;
use crate::server::ServerStack;

/// What the status page watches: clients (their breakers per host and their retry budget),
/// gateways (every route's client) and server stacks (in flight, shed), each under a name.
///
/// It holds handles that share the live state (cheap clones of the breakers, budgets and
/// counters), never the clients themselves, so it stays current without being updated; clone it
/// freely. Names are shown as given (escaped), in the order registered.
///
/// ```
/// # #[cfg(feature = "client")]
/// # fn main() -> Result<(), backstop::ConfigError> {
/// let client = backstop::Client::builder().build()?;
/// let stack = backstop::ServerStack::builder().build()?;
/// let status = backstop::admin::Status::new()
///     .client("payments", &client)
///     .server("public", &stack);
/// let snapshot = status.snapshot();
/// assert_eq!(snapshot.clients[0].name, "payments");
/// assert_eq!(snapshot.servers[0].in_flight, 0);
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "client"))]
/// # fn main() {}
/// ```
#[derive(Clone, Default)]
pub struct Status {
    pub(super) clients: Vec<Watched>,
    #[cfg(feature = "gateway")]
    pub(super) gateways: Vec<(String, crate::Gateway)>,
    pub(super) servers: Vec<(String, ServerStack)>,
}

/// A client's live handles: its breakers and its retry budget.
#[derive(Clone)]
pub(super) struct Watched {
    pub(super) name: String,
    pub(super) breakers: Option<Breakers<PerAuthority>>,
    pub(super) budget: Option<RetryBudget>,
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Status");
        debug.field(
            "clients",
            &self.clients.iter().map(|c| &c.name).collect::<Vec<_>>(),
        );
        #[cfg(feature = "gateway")]
        debug.field(
            "gateways",
            &self.gateways.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        );
        debug
            .field(
                "servers",
                &self.servers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Status {
    /// Nothing watched yet.
    pub fn new() -> Status {
        Status::default()
    }

    /// Watches `client`: its breaker per upstream host and its retry budget.
    #[cfg(feature = "client")]
    #[must_use]
    pub fn client(self, name: impl Into<String>, client: &crate::Client) -> Status {
        self.breakers(
            name,
            client.breakers().cloned(),
            client.retry_budget().cloned(),
        )
    }

    /// Watches a breaker layer and a retry budget of a stack assembled by hand
    /// ([`CircuitBreakerLayer::breakers`](crate::breaker::CircuitBreakerLayer::breakers),
    /// [`RetryLayer::budget`](crate::retry::RetryLayer::budget)), shown like a client.
    #[must_use]
    pub fn breakers(
        mut self,
        name: impl Into<String>,
        breakers: Option<Breakers<PerAuthority>>,
        budget: Option<RetryBudget>,
    ) -> Status {
        self.clients.push(Watched {
            name: name.into(),
            breakers,
            budget,
        });
        self
    }

    /// Watches every route of `gateway`: its prefix, methods and upstream, and its client's
    /// breakers and budget; and the gateway's buffer budget.
    #[cfg(feature = "gateway")]
    #[must_use]
    pub fn gateway(mut self, name: impl Into<String>, gateway: &crate::Gateway) -> Status {
        self.gateways.push((name.into(), gateway.clone()));
        self
    }

    /// Watches a server stack: requests in flight (of its `max_in_flight`), shed, and its other
    /// outcome counts.
    #[must_use]
    pub fn server(mut self, name: impl Into<String>, stack: &ServerStack) -> Status {
        self.servers.push((name.into(), stack.clone()));
        self
    }

    /// Reads everything watched, now.
    pub fn snapshot(&self) -> StatusSnapshot {
        StatusSnapshot::take(self)
    }
}
