//! [`Gateway`]: per-route policies from configuration — path prefixes (and methods) mapped to an
//! upstream and a [`Policy`], each route with its own [`Client`].

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;

use crate::client::{Client, ResponseBody};
use crate::policy::{ConfigError, Policy, path_error};
use crate::{Error, Kind, Timer};

/// The largest request body the gateway buffers to forward (and replay): 16 MiB.
pub const MAX_FORWARDED_BODY: usize = 16 * 1024 * 1024;

/// One route as written in the configuration.
///
/// ```toml
/// [[route]]
/// prefix = "/payments"
/// methods = ["POST"]
/// upstream = "http://127.0.0.1:9001"
/// [route.policy]
/// deadline = "2s"
/// attempt_timeout = "1s"
/// retry = { max_attempts = 1 }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The path prefix it serves, starting with `/`; the longest matching prefix wins.
    pub prefix: String,
    /// The methods it serves; empty means all.
    #[serde(default)]
    pub methods: Vec<String>,
    /// The upstream's base URL (`http://host:port` or `https://…`); the request's path and query
    /// are appended.
    pub upstream: String,
    /// The route's client policy; every field defaults as in [`Policy`].
    #[serde(default)]
    pub policy: Policy,
}

/// A route, validated and ready.
#[derive(Clone)]
struct Route {
    prefix: String,
    methods: Vec<Method>,
    upstream: Uri,
    client: Client,
}

/// A route table: requests are matched by the longest path prefix (and method), forwarded to
/// the route's upstream through a [`Client`] with the route's policy, and answered with the
/// upstream's response — or with `502`/`503`/`504` and the classified failure when the upstream
/// cannot answer.
///
/// It is a `tower::Service<Request<B>>`, so it serves directly, e.g. as an axum fallback service
/// or with [`backstop::server::Server`](crate::server::Server).
#[derive(Clone)]
pub struct Gateway {
    routes: Arc<[Route]>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes: Vec<_> = self
            .routes
            .iter()
            .map(|r| (&r.prefix, &r.upstream))
            .collect();
        f.debug_struct("Gateway").field("routes", &routes).finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayFile {
    #[serde(default, rename = "route")]
    routes: Vec<toml::Value>,
}

impl Gateway {
    /// Loads a route table from TOML (`[[route]]` tables). Any error names the route (by its
    /// prefix) and the field.
    pub fn from_toml(text: &str) -> Result<Gateway, ConfigError> {
        Gateway::from_toml_with(text, |builder| builder)
    }

    /// Like [`from_toml`](Gateway::from_toml), letting `customize` adjust every route's client
    /// builder (e.g. to trust a test CA or inject a resolver).
    pub fn from_toml_with(
        text: &str,
        customize: impl Fn(crate::ClientBuilder) -> crate::ClientBuilder,
    ) -> Result<Gateway, ConfigError> {
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
        Gateway::from_routes(configs, customize)
    }

    /// Builds a gateway from route configurations.
    pub fn from_routes(
        configs: Vec<RouteConfig>,
        customize: impl Fn(crate::ClientBuilder) -> crate::ClientBuilder,
    ) -> Result<Gateway, ConfigError> {
        let mut routes = Vec::with_capacity(configs.len());
        for config in configs {
            let name = format!("route {}", config.prefix);
            routes.push(Route::build(config, &customize).map_err(|e| e.within(&name))?);
        }
        // Longest prefix first, so the first match is the most specific.
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        Ok(Gateway {
            routes: Arc::from(routes),
        })
    }

    /// The routes' prefixes, most specific first.
    pub fn prefixes(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.prefix.as_str())
    }

    fn route(&self, method: &Method, path: &str) -> Option<&Route> {
        self.routes.iter().find(|route| {
            path.starts_with(&route.prefix)
                && (route.methods.is_empty() || route.methods.contains(method))
        })
    }

    async fn forward<B>(self, req: Request<B>) -> Response<GatewayBody>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(route) = self.route(req.method(), req.uri().path()) else {
            return text(StatusCode::NOT_FOUND, "no route for this path and method\n");
        };
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let (mut parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_FORWARDED_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large or broken\n",
                );
            }
        };
        let mut upstream = route.upstream.clone().into_parts();
        upstream.path_and_query = path_and_query.parse().ok();
        let Ok(uri) = Uri::from_parts(upstream) else {
            return text(StatusCode::BAD_REQUEST, "cannot forward this path\n");
        };
        parts.uri = uri;
        parts.headers.remove(http::header::HOST);
        parts.extensions = http::Extensions::new();
        parts.version = http::Version::HTTP_11;
        let outgoing = Request::from_parts(parts, Full::new(body));
        match route.client.send(outgoing).await {
            Ok(res) => res.map(GatewayBody::Upstream),
            Err(err) => failure(&err),
        }
    }
}

impl Route {
    fn build(
        config: RouteConfig,
        customize: &impl Fn(crate::ClientBuilder) -> crate::ClientBuilder,
    ) -> Result<Route, ConfigError> {
        if !config.prefix.starts_with('/') {
            return Err(ConfigError::new(
                "prefix",
                format!("must start with '/', got {:?}", config.prefix),
            ));
        }
        let upstream: Uri = config.upstream.parse().map_err(|e| {
            ConfigError::new(
                "upstream",
                format!("{:?} is not a URL: {e}", config.upstream),
            )
        })?;
        if !matches!(upstream.scheme_str(), Some("http" | "https")) || upstream.host().is_none() {
            return Err(ConfigError::new(
                "upstream",
                format!(
                    "must be an absolute http:// or https:// URL, got {:?}",
                    config.upstream
                ),
            ));
        }
        let methods = config
            .methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                    ConfigError::new("methods", format!("{m:?} is not an HTTP method"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client = customize(Client::builder().policy(config.policy)).build()?;
        Ok(Route {
            prefix: config.prefix,
            methods,
            upstream,
            client,
        })
    }
}

/// Maps a classified upstream failure to the gateway's answer: `503` for an open breaker or an
/// exhausted budget, `504` for timeouts, `502` for everything else; the body says what failed.
fn failure(err: &Error) -> Response<GatewayBody> {
    let status = match err.kind() {
        Kind::BreakerOpen | Kind::BudgetExhausted => StatusCode::SERVICE_UNAVAILABLE,
        Kind::TimedOut(Timer::Deadline | Timer::Attempt | Timer::Connect | Timer::Idle) => {
            StatusCode::GATEWAY_TIMEOUT
        }
        _ => StatusCode::BAD_GATEWAY,
    };
    let mut res = text(
        status,
        &format!(
            "upstream failed: {err}\nwhy: {}\nnext: {}\n",
            err.kind().explanation(),
            err.kind().next_step()
        ),
    );
    res.extensions_mut().insert(err.failure());
    res
}

fn text(status: StatusCode, body: &str) -> Response<GatewayBody> {
    let mut res = Response::new(GatewayBody::Local(Full::new(Bytes::copy_from_slice(
        body.as_bytes(),
    ))));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// The gateway's response body: the upstream's, or a short local answer.
#[derive(Debug)]
pub enum GatewayBody {
    /// The upstream's body, streamed.
    Upstream(ResponseBody),
    /// An answer made by the gateway itself.
    Local(Full<Bytes>),
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        match self.get_mut() {
            GatewayBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            GatewayBody::Local(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never: Infallible| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Upstream(body) => body.is_end_stream(),
            GatewayBody::Local(body) => body.is_end_stream(),
        }
    }
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
        Box::pin(async move { Ok(gateway.forward(req).await) })
    }
}
