//! [`StatusSnapshot`]: everything a [`Status`] watches, read at one moment.

use std::time::{Duration, SystemTime};

use backstop_breaker::{Breakers, PerAuthority, Snapshot};
use backstop_retry::RetryBudget;

use super::status::{Status, Watched};

/// Everything a [`Status`] watches, read at one moment; [`to_json`](StatusSnapshot::to_json)
/// and [`to_html`](StatusSnapshot::to_html) render it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StatusSnapshot {
    /// When it was taken (the system clock).
    pub taken_at: SystemTime,
    /// The clients, in the order registered.
    pub clients: Vec<ClientStatus>,
    /// The gateways, in the order registered.
    #[cfg(feature = "gateway")]
    pub gateways: Vec<GatewayStatus>,
    /// The server stacks, in the order registered.
    pub servers: Vec<ServerStatus>,
}

/// One client's (or one gateway route's client's) breakers and budget.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientStatus {
    /// The name it was registered under (for a gateway route: `route <prefix>`).
    pub name: String,
    /// Whether the client has breakers at all (`breaker.enabled`).
    pub breakers_enabled: bool,
    /// One breaker per upstream host it has called, sorted by host.
    pub breakers: Vec<BreakerStatus>,
    /// Its retry budget (`None` when off).
    pub budget: Option<BudgetStatus>,
}

/// One upstream host's breaker.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BreakerStatus {
    /// The breaker's key: scheme, host and port, e.g. `http://127.0.0.1:8080`.
    pub host: String,
    /// Its state, counts and time left before a probe.
    pub snapshot: Snapshot,
    /// While open: when the next probe may go (the snapshot's `next_probe_in` from
    /// `taken_at`).
    pub open_until: Option<SystemTime>,
}

/// A retry budget's balance and rule.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct BudgetStatus {
    /// Whole retries it would allow now ([`RetryBudget::available`]).
    pub available: u64,
    /// Retries earned per request.
    pub ratio: f64,
    /// Retries always allowed per second.
    pub min_per_second: u32,
    /// The window requests are counted over.
    pub window: Duration,
}

/// A server stack's load.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStatus {
    /// The name it was registered under.
    pub name: String,
    /// Requests being handled now.
    pub in_flight: usize,
    /// Requests handled at once before shedding starts.
    pub max_in_flight: usize,
    /// Requests shed (503 + `Retry-After`) since it was built.
    pub shed: u64,
    /// Successes since it was built.
    pub success: u64,
    /// 4xx answers (except 408, 429).
    pub client_errors: u64,
    /// 5xx answers (except shed and timed out).
    pub server_errors: u64,
    /// Requests whose deadline expired (504, 408).
    pub timed_out: u64,
}

/// A gateway and its routes.
#[cfg(feature = "gateway")]
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GatewayStatus {
    /// The name it was registered under.
    pub name: String,
    /// Request-body bytes that may be kept for replay, over all routes.
    pub buffer_budget: u64,
    /// Of which reserved now.
    pub buffer_reserved: u64,
    /// Its routes, most specific prefix first.
    pub routes: Vec<RouteStatus>,
}

/// One gateway route and its client.
#[cfg(feature = "gateway")]
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RouteStatus {
    /// The path prefix it serves, normalised.
    pub prefix: String,
    /// The methods it serves (empty: all).
    pub methods: Vec<String>,
    /// Its upstream: scheme, authority and base path.
    pub upstream: String,
    /// Its client's breakers and budget (named `route <prefix>`).
    pub client: ClientStatus,
}

impl StatusSnapshot {
    pub(super) fn take(status: &Status) -> StatusSnapshot {
        let taken_at = SystemTime::now();
        StatusSnapshot {
            taken_at,
            clients: status
                .clients
                .iter()
                .map(|watched| client(watched, taken_at))
                .collect(),
            #[cfg(feature = "gateway")]
            gateways: status
                .gateways
                .iter()
                .map(|(name, gateway)| gateway_status(name, gateway, taken_at))
                .collect(),
            servers: status
                .servers
                .iter()
                .map(|(name, stack)| {
                    let counts = stack.counts();
                    ServerStatus {
                        name: name.clone(),
                        in_flight: stack.in_flight(),
                        max_in_flight: stack.max_in_flight(),
                        shed: counts.shed(),
                        success: counts.success(),
                        client_errors: counts.client_errors(),
                        server_errors: counts.server_errors(),
                        timed_out: counts.timed_out(),
                    }
                })
                .collect(),
        }
    }

    /// Every client's breakers, gateway routes' included, as `(client or route name, breaker)`.
    pub fn all_breakers(&self) -> impl Iterator<Item = (&str, &BreakerStatus)> {
        let clients = self.clients.iter();
        #[cfg(feature = "gateway")]
        let clients = clients.chain(
            self.gateways
                .iter()
                .flat_map(|g| g.routes.iter().map(|r| &r.client)),
        );
        clients.flat_map(|c| c.breakers.iter().map(move |b| (c.name.as_str(), b)))
    }
}

fn client(watched: &Watched, taken_at: SystemTime) -> ClientStatus {
    ClientStatus {
        name: watched.name.clone(),
        breakers_enabled: watched.breakers.is_some(),
        breakers: watched
            .breakers
            .as_ref()
            .map(|b| breakers(b, taken_at))
            .unwrap_or_default(),
        budget: watched.budget.as_ref().map(budget),
    }
}

fn breakers(breakers: &Breakers<PerAuthority>, taken_at: SystemTime) -> Vec<BreakerStatus> {
    let mut all: Vec<BreakerStatus> = breakers
        .snapshots()
        .into_iter()
        .map(|(key, snapshot)| BreakerStatus {
            host: key.to_string(),
            open_until: snapshot
                .next_probe_in
                .and_then(|left| taken_at.checked_add(left)),
            snapshot,
        })
        .collect();
    all.sort_by(|a, b| a.host.cmp(&b.host));
    all
}

fn budget(budget: &RetryBudget) -> BudgetStatus {
    BudgetStatus {
        available: budget.available(),
        ratio: budget.ratio(),
        min_per_second: budget.min_per_second(),
        window: budget.window(),
    }
}

#[cfg(feature = "gateway")]
fn gateway_status(name: &str, gateway: &crate::Gateway, taken_at: SystemTime) -> GatewayStatus {
    GatewayStatus {
        name: name.to_owned(),
        buffer_budget: gateway.buffer_budget(),
        buffer_reserved: gateway.buffer_reserved(),
        routes: gateway
            .routes()
            .iter()
            .map(|route| {
                let watched = Watched {
                    name: format!("route {}", route.prefix),
                    breakers: route.client.breakers().cloned(),
                    budget: route.client.retry_budget().cloned(),
                };
                let authority = route.upstream.authority().map_or("", |a| a.as_str());
                RouteStatus {
                    prefix: route.prefix.clone(),
                    methods: route
                        .methods
                        .iter()
                        .map(|m| m.as_str().to_owned())
                        .collect(),
                    upstream: format!(
                        "{}://{authority}{}",
                        route.upstream.scheme_str().unwrap_or("http"),
                        route.base_path
                    ),
                    client: client(&watched, taken_at),
                }
            })
            .collect(),
    }
}
