//! Forwarding one request through a route: the upstream URL (base path, prefix, query), the
//! buffered body, the headers both ways, and the answer when the upstream cannot give one.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};

use super::MAX_FORWARDED_BODY;
use super::body::GatewayBody;
use super::headers::{self, Forwarding, Hop};
use super::path::PathError;
use super::reason::GatewayReason;
use super::route::Route;
use crate::Kind;

/// The `400` for a path refused before routing; the detail goes to the log only.
pub(crate) fn denied(raw: &str, err: PathError) -> Response<GatewayBody> {
    tracing::warn!(path = %raw, why = %err, "gateway: refused an ambiguous request path");
    GatewayReason::DeniedPath.respond()
}

/// Forwards `req`, whose normalised path is `path`, through `route`.
pub(crate) async fn forward<B>(route: &Route, req: Request<B>, path: &str) -> Response<GatewayBody>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(uri) = upstream_uri(route, path, req.uri().query()) else {
        tracing::warn!(route = %route.prefix, %path, "gateway: cannot build the upstream URL");
        return GatewayReason::DeniedPath.respond();
    };
    let hop = Hop {
        peer: headers::peer_addr(req.extensions()),
        proto: match req.uri().scheme_str() {
            Some("https") => "https",
            _ => "http",
        },
        host: req.headers().get(http::header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        }),
        version: req.version(),
    };
    let (mut parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_FORWARDED_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            tracing::warn!(route = %route.prefix, error = %err, "gateway: request body refused");
            return GatewayReason::RequestBody.respond();
        }
    };
    headers::prepare_request(
        &mut parts.headers,
        &hop,
        &Forwarding {
            style: route.forwarded,
            trusted: route.trust_forwarded,
            timing_header: &route.timing_header,
        },
    );
    parts.uri = uri;
    // The client's extensions describe its connection to the gateway, not this call.
    parts.extensions = http::Extensions::new();
    // The route's client picks the upstream's protocol (ALPN); this one is a default.
    parts.version = http::Version::HTTP_11;
    let outgoing = Request::from_parts(parts, Full::new(body));
    let target = outgoing.uri().clone();
    match route.client.send(outgoing).await {
        Ok(res) => {
            let version = res.version();
            let mut res = res.map(GatewayBody::Upstream);
            headers::prepare_response(res.headers_mut(), version);
            res
        }
        Err(err) => {
            let retry_after = if err.kind() == Kind::BreakerOpen {
                Some(until_probe(route, &target))
            } else {
                None
            };
            let res = GatewayReason::respond_to_error(&err, retry_after);
            tracing::warn!(
                route = %route.prefix,
                upstream = %target,
                reason = %GatewayReason::of_error(&err),
                status = res.status().as_u16(),
                error = %err,
                "gateway: upstream call failed"
            );
            res
        }
    }
}

/// `scheme://authority` + base path + path (without the prefix when the route strips it) +
/// `?query`.
fn upstream_uri(route: &Route, path: &str, query: Option<&str>) -> Option<Uri> {
    let rest = if route.strip_prefix && route.prefix != "/" {
        path.strip_prefix(route.prefix.as_str()).unwrap_or(path)
    } else {
        path
    };
    let mut target = String::with_capacity(route.base_path.len() + rest.len() + 1);
    target.push_str(&route.base_path);
    target.push_str(rest);
    if target.is_empty() {
        target.push('/');
    }
    if let Some(query) = query {
        target.push('?');
        target.push_str(query);
    }
    let mut parts = route.upstream.clone().into_parts();
    parts.path_and_query = Some(target.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// The time until the route's open breaker for `target` lets a probe through; a second when it
/// is not known (half-open with its probes in flight).
fn until_probe(route: &Route, target: &Uri) -> Duration {
    let fallback = Duration::from_secs(1);
    let Some(breakers) = route.client.breakers() else {
        return fallback;
    };
    let Ok(head) = Request::get(target.clone()).body(()) else {
        return fallback;
    };
    let key = backstop_breaker::Authority::of(&backstop_breaker::RequestHead::of(&head));
    breakers
        .snapshot(&key)
        .and_then(|snapshot| snapshot.next_probe_in)
        .unwrap_or(fallback)
}
