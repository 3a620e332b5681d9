//! [`Gateway`]: a reverse proxy with per-route policies from configuration — path prefixes (and
//! methods) mapped to an upstream and a [`Policy`](crate::Policy), each route with its own
//! [`Client`](crate::Client).
//!
//! One concept per file: `config` (what a route says: [`RouteConfig`], [`ForwardedHeaders`],
//! [`BreakerCounts`]), `route` (a validated route, and [`GatewayRoute`] to mount one in a
//! router), `path` (normalising the request path before routing), `headers` (hop-by-hop,
//! forwarding and timing headers), `forward` (forwarding one request), `inbound` (the client's
//! body as forwarded: streamed, limited, watched), `budget` (the gateway-wide budget of bytes
//! kept for replay), `reason` (the gateway's own answers and their [`GatewayReason`] codes),
//! `body` ([`GatewayBody`]).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body;

use crate::policy::ConfigError;

mod body;
mod budget;
mod config;
mod forward;
mod headers;
mod inbound;
mod path;
mod reason;
mod route;

pub use body::GatewayBody;
use budget::BufferBudget;
pub use config::{
    BreakerCounts, DEFAULT_BODY_LIMIT, DEFAULT_BUFFER_BUDGET, ForwardedHeaders, RouteConfig,
};
#[cfg(fuzzing)]
pub(crate) use path::{normalise as normalise_path, under as path_under};
pub use reason::{GatewayReason, REASON_HEADER};
pub use route::GatewayRoute;
use route::Route;

/// A route table, served as a reverse proxy.
///
/// For each request:
///
/// 1. **The path is normalised** (RFC 3986: dot segments removed, `//` merged, escaped
///    unreserved characters such as `%61` or `%2e` decoded) — or refused with `400` (`DP`) when
///    its meaning depends on who decodes it: an escaped slash or backslash (`%2F`, `%5C`), a dot
///    segment written with escapes (`%2e%2e`) or path parameters (`..;`), a malformed escape.
///    So `/catalog/../payments/charge` is `/payments/charge`, routed (and forwarded) as such.
/// 2. **The route** is the longest prefix that the path lies under at a segment boundary
///    (`/catalog` serves `/catalog`, `/catalog/` and `/catalog/x`, not `/catalogue-admin`) and
///    whose methods include the request's; none is `404` (`NR`).
/// 3. **It is forwarded** to the route's upstream through the route's client: base path +
///    normalised path (without the prefix with `strip_prefix`) + the query as sent. Hop-by-hop
///    headers are removed both ways (`Connection` and every header it names, `Keep-Alive`,
///    `Proxy-Connection`, `Proxy-Authorization`, `Proxy-Authenticate`, `TE` — except `TE:
///    trailers` on gRPC requests —, `Trailer`, `Transfer-Encoding`, `Upgrade`: so protocol
///    upgrades such as WebSocket are not proxied); `Via: 1.1 backstop` is appended both ways;
///    forwarding headers are written per the route ([`ForwardedHeaders`], trusting a client's
///    own only with `trust_forwarded`); a client's `grpc-timeout` and `request-timeout-ms` (and
///    the route's propagation header) are removed, the route's client writing its own per its
///    `propagation` policy.
/// 4. **The body is streamed**, never collected first: counted against the route's
///    `body_limit` (default 64 MiB; a larger `Content-Length` is `413` (`RB`) before anything
///    is read or sent, a body growing past it fails the forward, `413` too), and kept for replay
///    only when the route may retry the request, up to its `replay_limit` (default 64 KiB;
///    beyond, it is sent once). The bytes kept for replay across all requests are bounded by the
///    gateway's buffer budget (top-level `buffer_budget`, default 256 MiB): a request that the
///    budget cannot cover now is answered `503` (`BB`) with `Retry-After: 1` at once. A
///    malformed or interrupted client body is `400` (`DPE`), not blamed on the upstream.
/// 5. **The upstream's answer** is relayed as it is, `5xx` included. When there is none, the
///    gateway answers with a status and a [`GatewayReason`] code in `x-backstop-reason`
///    (`503 UF`, `503 UO` with `Retry-After` when the breaker is open, `504 UT`, `502 UC`…),
///    with a one-line body; the full error goes to the log (`tracing::warn!`).
///
/// The client's address (for `X-Forwarded-For` / `Forwarded: for=`) is read from the request's
/// extensions: axum's `ConnectInfo<SocketAddr>` (`into_make_service_with_connect_info`, or
/// [`Server`](crate::server::Server), which inserts it and its own
/// [`PeerAddr`](crate::server::PeerAddr)), or a bare `std::net::SocketAddr`. Without any,
/// `X-Forwarded-For` is not written and `Forwarded` says `for=unknown`. `X-Forwarded-Proto` is
/// the scheme of an absolute request URI (HTTP/2's `:scheme`), else `http`.
///
/// A route's breaker counts only what says its upstream is sick (`breaker_counts`, see
/// [`BreakerCounts`]): connect failures, timeouts, `502`/`503`/`504` — not a `500`.
///
/// It is a `tower::Service<Request<B>>`, so it serves directly, e.g. as an axum fallback service
/// or with [`backstop::server::Server`](crate::server::Server); [`route_service`] gives one
/// route to mount on its own.
///
/// [`route_service`]: Gateway::route_service
///
/// ```
/// # #[cfg(feature = "config")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use backstop::{Gateway, GatewayReason, REASON_HEADER};
/// use tower::ServiceExt;
///
/// let gateway = Gateway::from_toml(r#"
///     buffer_budget = "64MiB"      # request-body bytes kept for replay, all requests together
///
///     [[route]]
///     prefix = "/catalog"
///     upstream = "http://127.0.0.1:9002/api"
///     strip_prefix = true          # /catalog/items?page=2 -> /api/items?page=2
///     body_limit = "1MiB"
/// "#)?;
///
/// // No route serves /catalogue-admin: a prefix matches at a segment boundary only.
/// let req = http::Request::get("/catalogue-admin").body(http_body_util::Empty::<bytes::Bytes>::new())?;
/// let res = gateway.clone().oneshot(req).await?;
/// assert_eq!(res.status(), 404);
/// assert_eq!(res.headers()[REASON_HEADER], "NR");
///
/// // An escaped slash is read differently by different servers: refused.
/// let req = http::Request::get("/catalog%2F..%2Fadmin").body(http_body_util::Empty::<bytes::Bytes>::new())?;
/// let res = gateway.oneshot(req).await?;
/// assert_eq!(GatewayReason::of(&res), Some(GatewayReason::DeniedPath));
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "config"))]
/// # fn main() {}
/// ```
#[derive(Clone)]
pub struct Gateway {
    /// Longest prefix first, so the first match is the most specific.
    routes: Arc<[Arc<Route>]>,
    /// Request-body bytes kept for replay, over all routes.
    budget: Arc<BufferBudget>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes: Vec<_> = self
            .routes
            .iter()
            .map(|r| (&r.prefix, &r.upstream, &r.base_path))
            .collect();
        f.debug_struct("Gateway").field("routes", &routes).finish()
    }
}

#[cfg(feature = "config")]
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayFile {
    /// See [`Gateway::with_buffer_budget`].
    #[serde(default, deserialize_with = "config::size::deserialize_option")]
    buffer_budget: Option<u64>,
    #[serde(default, rename = "route")]
    routes: Vec<toml::Value>,
}

impl Gateway {
    /// Loads a route table from TOML (`[[route]]` tables, see [`RouteConfig`]), with an
    /// optional top-level `buffer_budget` (see [`with_buffer_budget`]). Any error names the
    /// route (by its prefix) and the field, e.g. `route /payments.upstream`, or
    /// `buffer_budget`.
    ///
    /// [`with_buffer_budget`]: Gateway::with_buffer_budget
    ///
    /// With the `config` feature.
    #[cfg(feature = "config")]
    pub fn from_toml(text: &str) -> Result<Gateway, ConfigError> {
        Gateway::from_toml_with(text, |builder| builder)
    }

    /// Like [`from_toml`](Gateway::from_toml), letting `customize` adjust every route's client
    /// builder (e.g. to trust a test CA or inject a resolver).
    ///
    /// With the `config` feature.
    #[cfg(feature = "config")]
    pub fn from_toml_with(
        text: &str,
        customize: impl Fn(crate::ClientBuilder) -> crate::ClientBuilder,
    ) -> Result<Gateway, ConfigError> {
        use crate::policy::path_error;

        let de = toml::Deserializer::new(text);
        let file: GatewayFile = serde_path_to_error::deserialize(de).map_err(path_error)?;
        let mut configs = Vec::with_capacity(file.routes.len());
        for (index, value) in file.routes.into_iter().enumerate() {
            let name = value
                .get("prefix")
                .and_then(toml::Value::as_str)
                .map_or_else(|| format!("route[{index}]"), |p| format!("route {p}"));
            let config: RouteConfig =
                serde_path_to_error::deserialize(value).map_err(|e| path_error(e).within(&name))?;
            configs.push(config);
        }
        let gateway = Gateway::from_routes(configs, customize)?;
        match file.buffer_budget {
            Some(bytes) => gateway.with_buffer_budget(bytes),
            None => Ok(gateway),
        }
    }

    /// Builds a gateway from route configurations.
    ///
    /// Besides each route's own rules, two routes may not serve the same prefix (once
    /// normalised: `/catalog/` is `/catalog`) with a method in common: one would shadow the
    /// other.
    pub fn from_routes(
        configs: Vec<RouteConfig>,
        customize: impl Fn(crate::ClientBuilder) -> crate::ClientBuilder,
    ) -> Result<Gateway, ConfigError> {
        let mut routes: Vec<Arc<Route>> = Vec::with_capacity(configs.len());
        for config in configs {
            let name = format!("route {}", config.prefix);
            let route = Route::build(config, &customize).map_err(|e| e.within(&name))?;
            if let Some(earlier) = routes.iter().find(|r| r.overlaps(&route)) {
                return Err(ConfigError::new(
                    "prefix",
                    format!(
                        "duplicates an earlier route: same prefix ({}) and overlapping methods \
                         (earlier {}, this one {}); the later one could never be chosen",
                        route.prefix,
                        methods(&earlier.methods),
                        methods(&route.methods)
                    ),
                )
                .within(&name));
            }
            routes.push(Arc::new(route));
        }
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        // No check needed: the default budget is far above the largest replay limit (16 MiB).
        Ok(Gateway {
            routes: Arc::from(routes),
            budget: BufferBudget::new(DEFAULT_BUFFER_BUDGET),
        })
    }

    /// Sets the budget of request-body bytes kept in memory for replay, over all requests
    /// together (in TOML, the top-level `buffer_budget`, a number of bytes or a size such as
    /// `"256MiB"`). Default [`DEFAULT_BUFFER_BUDGET`] (256 MiB).
    ///
    /// A request that its route may retry (see [`RouteConfig`]) reserves, before it is
    /// forwarded, the most of its body the route keeps for replay: its declared length up to the
    /// route's `replay_limit`, the whole limit when the length is not declared, nothing when it
    /// declares more (such a body is sent once, never kept). The reservation is given back when
    /// the body has been sent and the upstream's answer (or failure) came back. A request the
    /// budget cannot cover now is answered `503` with `Retry-After: 1` and reason `BB` at once;
    /// requests that keep nothing are never refused for it.
    ///
    /// Rejected (naming `buffer_budget`): zero, or less than a route's `replay_limit` when that
    /// route may retry, since its requests of undeclared length would always be refused. Routes
    /// taken with [`route_service`](Gateway::route_service) before the call keep the budget
    /// they were taken with.
    pub fn with_buffer_budget(self, bytes: u64) -> Result<Gateway, ConfigError> {
        if bytes == 0 {
            return Err(ConfigError::new(
                "buffer_budget",
                "must be at least 1 byte (and at least every retried route's replay_limit)",
            ));
        }
        if let Some((route, limit)) = self
            .routes
            .iter()
            .filter_map(|r| r.replay.buffers().map(|limit| (r, limit)))
            .find(|(_, limit)| *limit > bytes)
        {
            return Err(ConfigError::new(
                "buffer_budget",
                format!(
                    "{bytes} bytes is less than route {}'s replay_limit ({limit} bytes): its \
                     retried requests of undeclared length would always be refused",
                    route.prefix
                ),
            ));
        }
        Ok(Gateway {
            routes: self.routes,
            budget: BufferBudget::new(bytes),
        })
    }

    /// The budget of request-body bytes kept for replay (see
    /// [`with_buffer_budget`](Gateway::with_buffer_budget)).
    pub fn buffer_budget(&self) -> u64 {
        self.budget.total()
    }

    /// The bytes of the buffer budget reserved right now by requests in flight.
    pub fn buffer_reserved(&self) -> u64 {
        self.budget.reserved()
    }

    /// The routes' prefixes (normalised), most specific first.
    pub fn prefixes(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.prefix.as_str())
    }

    /// The routes of `prefix` as a service of their own (sharing this gateway's clients and
    /// breakers), to mount in a router with layers of their own; see [`GatewayRoute`].
    /// `prefix` is compared in normal form (a trailing `/` ignored).
    pub fn route_service(&self, prefix: &str) -> Option<GatewayRoute> {
        let prefix = match prefix.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        };
        let routes: Vec<Arc<Route>> = self
            .routes
            .iter()
            .filter(|r| r.prefix == prefix)
            .cloned()
            .collect();
        (!routes.is_empty()).then(|| GatewayRoute::of(routes, self.budget.clone()))
    }

    /// Every route, most specific first (for the status page).
    #[cfg(feature = "admin")]
    pub(crate) fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    fn route(&self, method: &Method, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|route| path::under(path, &route.prefix) && route.serves(method))
            .map(Arc::as_ref)
    }

    async fn handle<B>(self, req: Request<B>) -> Response<GatewayBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let normal = match path::normalise(req.uri().path()) {
            Ok(normal) => normal,
            Err(err) => return forward::denied(req.uri().path(), err),
        };
        let Some(route) = self.route(req.method(), &normal) else {
            return GatewayReason::NoRoute.respond();
        };
        forward::forward(route, &self.budget, req, &normal).await
    }
}

fn methods(methods: &[Method]) -> String {
    if methods.is_empty() {
        return "all".to_owned();
    }
    methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

impl<B> tower::Service<Request<B>> for Gateway
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<GatewayBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<GatewayBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let gateway = self.clone();
        Box::pin(async move { Ok(gateway.handle(req).await) })
    }
}
