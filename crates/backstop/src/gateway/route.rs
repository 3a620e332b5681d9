//! A validated route ([`Route`]), and [`GatewayRoute`]: the routes of one prefix as a service of
//! their own, to mount in a router.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body::{Body, SizeHint};

use super::body::GatewayBody;
use super::budget::BufferBudget;
use super::config::{DEFAULT_BUFFER_BUDGET, ForwardedHeaders, RouteConfig};
use super::path;
use super::reason::GatewayReason;
use crate::client::Client;
use crate::policy::ConfigError;

/// hyper's HTTP/1 buffer bound on a route's upstream connections: 64 KiB rather than its
/// default of about 400 KiB. Request bodies are streamed, and every chunk waiting in the write
/// queue keeps alive the whole read buffer of the client connection it was cut from; a short
/// queue keeps each upload's footprint near one read buffer (measured: 100 concurrent uploads
/// grew the gateway by 126 MiB with the default, 86 MiB with this).
const UPSTREAM_HTTP1_BUFFER: usize = 64 * 1024;

/// A route, validated and ready.
pub(crate) struct Route {
    /// The prefix in normal form, without a trailing `/` unless it is the root.
    pub(crate) prefix: String,
    /// Empty: every method.
    pub(crate) methods: Vec<Method>,
    /// The upstream's scheme and authority.
    pub(crate) upstream: Uri,
    /// The upstream's base path in normal form, without a trailing `/` (empty for none).
    pub(crate) base_path: String,
    pub(crate) strip_prefix: bool,
    pub(crate) forwarded: ForwardedHeaders,
    pub(crate) trust_forwarded: bool,
    /// The header the route's client writes the deadline into on plain HTTP requests.
    pub(crate) timing_header: HeaderName,
    /// The largest request body accepted, inclusive.
    pub(crate) body_limit: u64,
    /// What the route's retry layer keeps of a request body for replay.
    pub(crate) replay: ReplayRule,
    pub(crate) client: Client,
}

/// The route client's retry rules that decide how much of a request body it keeps for replay,
/// copied from its policy (after any customisation of its builder).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplayRule {
    /// More than one attempt: some request may be retried at all.
    retries: bool,
    /// The most bytes kept for replay.
    limit: u64,
    /// Every request is made idempotent with an `Idempotency-Key`.
    keyed: bool,
}

/// The header that makes a request idempotent for the retry layer (its default name; a route's
/// policy cannot change it).
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

impl ReplayRule {
    fn of(policy: &crate::Policy) -> ReplayRule {
        ReplayRule {
            retries: policy.retry.max_attempts > 1,
            limit: policy.retry.replay_limit as u64,
            keyed: policy.retry.attach_idempotency_key,
        }
    }

    /// Whether some request may have its body kept: the budget must hold at least `limit`.
    pub(crate) fn buffers(&self) -> Option<u64> {
        (self.retries && self.limit > 0).then_some(self.limit)
    }

    /// The most bytes of this request's body the route's retry layer will keep for replay.
    ///
    /// It mirrors the retry layer's own choice (`RetryLayer::call` and
    /// `ReplayBody::replayable`): a request that may be retried keeps up to the replay limit
    /// when it is idempotent (by method, or an `Idempotency-Key` sent or attached), nothing
    /// otherwise; an empty body, or one declaring more than the limit, keeps nothing. Were it
    /// to answer less than the layer keeps, the budget would undercount; the tests of this
    /// module pin each case.
    pub(crate) fn kept(&self, method: &Method, headers: &HeaderMap, hint: &SizeHint) -> u64 {
        let idempotent = backstop_retry::is_idempotent_method(method)
            || self.keyed
            || headers.contains_key(&IDEMPOTENCY_KEY);
        if !self.retries || !idempotent || self.limit == 0 || hint.lower() > self.limit {
            return 0;
        }
        hint.upper()
            .map_or(self.limit, |upper| upper.min(self.limit))
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("prefix", &self.prefix)
            .field("methods", &self.methods)
            .field("upstream", &self.upstream)
            .field("base_path", &self.base_path)
            .finish_non_exhaustive()
    }
}

impl Route {
    /// Validates `config` and builds its client; an error names the field (not yet the route).
    pub(crate) fn build(
        config: RouteConfig,
        customize: &impl Fn(crate::ClientBuilder) -> crate::ClientBuilder,
    ) -> Result<Route, ConfigError> {
        let prefix = canonical_prefix(&config.prefix)?;
        let (upstream, base_path) = parse_upstream(&config.upstream)?;
        let methods = config
            .methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                    ConfigError::new("methods", format!("{m:?} is not an HTTP method"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let timing_header = HeaderName::from_bytes(config.policy.propagation.header.as_bytes())
            .map_err(|_| {
                ConfigError::new(
                    "policy.propagation.header",
                    "must be a valid header name".to_owned(),
                )
            })?;
        let builder = Client::builder()
            .policy(config.policy)
            .breaker_judge(config.breaker_counts.judge())
            .http1_max_buf_size(UPSTREAM_HTTP1_BUFFER);
        let builder = customize(builder);
        let replay = ReplayRule::of(builder.current_policy());
        let client = builder.build()?;
        Ok(Route {
            prefix,
            methods,
            upstream,
            base_path,
            strip_prefix: config.strip_prefix,
            forwarded: config.forwarded,
            trust_forwarded: config.trust_forwarded,
            timing_header,
            body_limit: config.body_limit,
            replay,
            client,
        })
    }

    pub(crate) fn serves(&self, method: &Method) -> bool {
        self.methods.is_empty() || self.methods.contains(method)
    }

    /// Whether this route and `other` could both serve one request: same prefix, a method in
    /// common.
    pub(crate) fn overlaps(&self, other: &Route) -> bool {
        self.prefix == other.prefix
            && (self.methods.is_empty()
                || other.methods.is_empty()
                || self.methods.iter().any(|m| other.methods.contains(m)))
    }
}

/// The prefix in the form requests are matched in: normalised, without a trailing `/`.
fn canonical_prefix(prefix: &str) -> Result<String, ConfigError> {
    if !prefix.starts_with('/') {
        return Err(ConfigError::new(
            "prefix",
            format!("must start with '/', got {prefix:?}"),
        ));
    }
    let trimmed = match prefix.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    };
    // Paths are normalised before matching, so a prefix that is not in normal form would be
    // shadowed by its normal form: it could never match.
    let normal = path::normalise(trimmed).ok();
    if normal.as_deref() != Some(trimmed) || trimmed.contains(['%', '?', '#']) {
        return Err(ConfigError::new(
            "prefix",
            format!(
                "must be a normalised path (no '.', '..' or empty segments, no '%', '?' or \
                 '#'): request paths are normalised before matching, so {prefix:?} could never \
                 match"
            ),
        ));
    }
    Ok(trimmed.to_owned())
}

/// The upstream's scheme and authority, and its base path.
fn parse_upstream(text: &str) -> Result<(Uri, String), ConfigError> {
    // Checked before anything echoes the URL back: credentials must not reach an error
    // message (or a log).
    let authority_part = text.split_once("://").map_or(text, |(_, rest)| rest);
    let authority_part = authority_part.split(['/', '?', '#']).next().unwrap_or("");
    if authority_part.contains('@') {
        return Err(ConfigError::new(
            "upstream",
            "must not carry credentials (user:password@): they would be logged and sent on \
             every request; set an Authorization header instead"
                .to_owned(),
        ));
    }
    let uri: Uri = text
        .parse()
        .map_err(|e| ConfigError::new("upstream", format!("{text:?} is not a URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(ConfigError::new(
            "upstream",
            format!("must be an absolute http:// or https:// URL, got {text:?}"),
        ));
    }
    if !cfg!(feature = "tls") && uri.scheme_str() == Some("https") {
        return Err(ConfigError::new("upstream", crate::client::NO_TLS));
    }
    if uri.query().is_some() {
        return Err(ConfigError::new(
            "upstream",
            format!("must not have a query, got {text:?}"),
        ));
    }
    let base_path = uri.path().trim_end_matches('/');
    if !base_path.is_empty() && path::normalise(base_path).ok().as_deref() != Some(base_path) {
        return Err(ConfigError::new(
            "upstream",
            format!(
                "its base path must be normalised (no '.', '..' or empty segments), got {text:?}"
            ),
        ));
    }
    let base_path = base_path.to_owned();
    let mut parts = uri.into_parts();
    // Scheme and authority only: a Uri with a scheme needs a path to be built, so "/" stands
    // for it; the forwarded path replaces it.
    parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    let upstream = Uri::from_parts(parts)
        .map_err(|e| ConfigError::new("upstream", format!("{text:?} is not a URL: {e}")))?;
    Ok((upstream, base_path))
}

/// The routes of one prefix as a service of their own, for mounting routes one by one in a
/// router (e.g. axum's `Router::route_service`) with layers of their own.
///
/// Mount it at its prefix and below it (`"/catalog"` and `"/catalog/{*rest}"`), with
/// `route_service`, not `nest_service` (which strips the prefix from the path the route sees).
/// It normalises the path as the [`Gateway`](super::Gateway) does and answers `400` (`DP`) when
/// the normalised path is no longer under its prefix (the router matched the raw path:
/// `/catalog/../payments` is not the catalog's), `404` (`NR`) for a method it does not serve.
///
/// ```
/// use backstop::{Gateway, RouteConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let routes = vec![RouteConfig::new("/catalog", "http://127.0.0.1:9002")];
/// let gateway = Gateway::from_routes(routes, |client| client)?;
/// let catalog = gateway.route_service("/catalog").ok_or("no /catalog route")?;
/// // A layer for this route alone: here, a header the upstream sees.
/// let catalog = tower::ServiceBuilder::new()
///     .map_request(|mut req: http::Request<axum::body::Body>| {
///         req.headers_mut().insert("x-route", http::HeaderValue::from_static("catalog"));
///         req
///     })
///     .service(catalog);
/// let app: axum::Router = axum::Router::new()
///     .route_service("/catalog", catalog.clone())
///     .route_service("/catalog/{*rest}", catalog);
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct GatewayRoute {
    prefix: Arc<str>,
    routes: Arc<[Arc<Route>]>,
    /// The gateway's budget when taken from one ([`Gateway::route_service`]), else its own.
    ///
    /// [`Gateway::route_service`]: super::Gateway::route_service
    budget: Arc<BufferBudget>,
}

impl fmt::Debug for GatewayRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayRoute")
            .field("prefix", &self.prefix)
            .field("routes", &self.routes)
            .finish()
    }
}

impl GatewayRoute {
    /// Builds a single route from its configuration.
    pub fn new(config: RouteConfig) -> Result<GatewayRoute, ConfigError> {
        GatewayRoute::with(config, |builder| builder)
    }

    /// Like [`new`](GatewayRoute::new), letting `customize` adjust the route's client builder.
    pub fn with(
        config: RouteConfig,
        customize: impl Fn(crate::ClientBuilder) -> crate::ClientBuilder,
    ) -> Result<GatewayRoute, ConfigError> {
        let name = format!("route {}", config.prefix);
        let route = Route::build(config, &customize).map_err(|e| e.within(&name))?;
        // The largest replay limit is 16 MiB, far below the default budget: nothing to check.
        let budget = BufferBudget::new(DEFAULT_BUFFER_BUDGET);
        Ok(GatewayRoute::of(vec![Arc::new(route)], budget))
    }

    /// The routes given, all of one prefix, drawing on `budget`.
    pub(crate) fn of(routes: Vec<Arc<Route>>, budget: Arc<BufferBudget>) -> GatewayRoute {
        let prefix = routes
            .first()
            .map_or_else(|| Arc::from("/"), |r| Arc::from(r.prefix.as_str()));
        GatewayRoute {
            prefix,
            routes: Arc::from(routes),
            budget,
        }
    }

    /// The prefix it serves, normalised.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The route's client (of the first route, when several methods share the prefix), e.g. to
    /// watch its breakers.
    pub fn client(&self) -> Option<&Client> {
        self.routes.first().map(|route| &route.client)
    }

    async fn handle<B>(self, req: Request<B>) -> Response<GatewayBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let normal = match path::normalise(req.uri().path()) {
            Ok(normal) => normal,
            Err(err) => return super::forward::denied(req.uri().path(), err),
        };
        if !path::under(&normal, &self.prefix) {
            tracing::warn!(
                route = %self.prefix,
                path = %normal,
                "gateway: refused a path that leaves its route once normalised"
            );
            return GatewayReason::DeniedPath.respond();
        }
        let Some(route) = self.routes.iter().find(|r| r.serves(req.method())) else {
            return GatewayReason::NoRoute.respond();
        };
        super::forward::forward(route, &self.budget, req, &normal).await
    }
}

impl<B> tower::Service<Request<B>> for GatewayRoute
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
        let route = self.clone();
        Box::pin(async move { Ok(route.handle(req).await) })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A route whose upstream needs HTTPS, in a build that cannot speak it, is refused when the
    /// gateway is built, naming the route and the field; the same route over `http://` builds.
    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_tls_an_https_upstream_is_a_config_error_at_build() {
        let https = vec![RouteConfig::new("/pay", "https://127.0.0.1:9443/api")];
        let err = super::super::Gateway::from_routes(https, |client| client).unwrap_err();
        assert_eq!(err.field(), "route /pay.upstream");
        assert!(err.rule().contains("rustls-ring"), "{}", err.rule());
        let plain = vec![RouteConfig::new("/pay", "http://127.0.0.1:9080/api")];
        assert!(super::super::Gateway::from_routes(plain, |client| client).is_ok());
    }

    /// With TLS, the same upstream is not refused for its scheme.
    #[cfg(feature = "tls")]
    #[test]
    fn with_tls_an_https_upstream_is_accepted() {
        assert!(parse_upstream("https://127.0.0.1:9443/api").is_ok());
    }

    fn rule(retries: bool, limit: u64, keyed: bool) -> ReplayRule {
        ReplayRule {
            retries,
            limit,
            keyed,
        }
    }

    /// What the route reserves for a request is what the retry layer keeps of its body.
    #[test]
    fn the_reservation_mirrors_what_the_retry_layer_keeps() {
        let none = HeaderMap::new();
        let mut keyed = HeaderMap::new();
        keyed.insert("idempotency-key", http::HeaderValue::from_static("k1"));
        let unknown = SizeHint::new();
        let exact = SizeHint::with_exact;
        let default = rule(true, 65_536, false);

        // Idempotent, length unknown: up to the limit; declared: the declared length.
        assert_eq!(default.kept(&Method::PUT, &none, &unknown), 65_536);
        assert_eq!(default.kept(&Method::GET, &none, &exact(100)), 100);
        assert_eq!(default.kept(&Method::PUT, &none, &exact(65_536)), 65_536);
        // Declared above the limit: not kept at all.
        assert_eq!(default.kept(&Method::PUT, &none, &exact(65_537)), 0);
        // Not idempotent: retried only if never sent, nothing kept…
        assert_eq!(default.kept(&Method::POST, &none, &unknown), 0);
        // …unless keyed by the client or by the route.
        assert_eq!(default.kept(&Method::POST, &keyed, &unknown), 65_536);
        assert_eq!(
            rule(true, 65_536, true).kept(&Method::POST, &none, &unknown),
            65_536
        );
        // A route that never retries, or keeps nothing, reserves nothing.
        assert_eq!(
            rule(false, 65_536, false).kept(&Method::PUT, &none, &unknown),
            0
        );
        assert_eq!(rule(true, 0, false).kept(&Method::PUT, &none, &unknown), 0);
        assert_eq!(rule(false, 65_536, false).buffers(), None);
        assert_eq!(default.buffers(), Some(65_536));
    }
}
