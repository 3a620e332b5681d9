//! Forwarding one request through a route: the upstream URL (base path, prefix, query), the
//! streamed body (its limit, its share of the buffer budget), the headers both ways, and the
//! answer when the upstream cannot give one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body::Body;

use super::body::GatewayBody;
use super::budget::BufferBudget;
use super::headers::{self, Forwarding, Hop};
use super::inbound::{Fate, Inbound, Watch};
use super::path::PathError;
use super::reason::GatewayReason;
use super::route::Route;
use crate::{Kind, RequestBody};

/// The `400` for a path refused before routing; the detail goes to the log only.
pub(crate) fn denied(raw: &str, err: PathError) -> Response<GatewayBody> {
    tracing::warn!(path = %raw, why = %err, "gateway: refused an ambiguous request path");
    GatewayReason::DeniedPath.respond()
}

/// Forwards `req`, whose normalised path is `path`, through `route`, its body streamed.
pub(crate) async fn forward<B>(
    route: &Route,
    budget: &Arc<BufferBudget>,
    req: Request<B>,
    path: &str,
) -> Response<GatewayBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(uri) = upstream_uri(route, path, req.uri().query()) else {
        tracing::warn!(route = %route.prefix, %path, "gateway: cannot build the upstream URL");
        return GatewayReason::DeniedPath.respond();
    };
    // A declared length (`Content-Length`, or HTTP/2's) above the limit is refused before a
    // byte of the body is read or anything is sent upstream.
    let hint = req.body().size_hint();
    if hint.lower() > route.body_limit {
        tracing::warn!(
            route = %route.prefix,
            declared = hint.lower(),
            limit = route.body_limit,
            "gateway: request body larger than the route's body_limit"
        );
        return GatewayReason::RequestBody.respond();
    }
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

    // An empty body is sent as one: nothing to stream, watch or keep (and nothing boxed).
    let (body, watch, reservation) = if body.is_end_stream() {
        (RequestBody::empty(), None, None)
    } else {
        let kept = route.replay.kept(&parts.method, &parts.headers, &hint);
        let reservation = if kept == 0 {
            None
        } else if let Some(reservation) = budget.try_reserve(kept) {
            Some(Arc::new(reservation))
        } else {
            tracing::warn!(
                route = %route.prefix,
                wanted = kept,
                budget = budget.total(),
                reserved = budget.reserved(),
                "gateway: buffer budget exhausted, request refused"
            );
            return GatewayReason::BufferBudget.respond_retry_after(Duration::from_secs(1));
        };
        let watch = Arc::new(Watch::default());
        let inbound = Inbound::new(
            body,
            route.body_limit,
            watch.clone(),
            kept,
            reservation.clone(),
        );
        (RequestBody::stream(inbound), Some(watch), reservation)
    };
    let outgoing = Request::from_parts(parts, body);
    let target = outgoing.uri().clone();
    let sent = route.client.send(outgoing).await;
    // The retry layer's hold on the replay buffer ended with the call; the body's own share is
    // given back when the body ends (it may still be streaming under an early answer).
    drop(reservation);
    match sent {
        Ok(res) => {
            let version = res.version();
            let mut res = res.map(GatewayBody::Upstream);
            headers::prepare_response(res.headers_mut(), version);
            res
        }
        Err(err) => {
            // The client's body, not the upstream, may be why the call failed.
            let blame = match watch.map(|watch| watch.fate()) {
                Some(Fate::TooLarge) => Some(GatewayReason::RequestBody),
                Some(Fate::Broken) => Some(GatewayReason::BrokenRequestBody),
                Some(Fate::Fine) | None => None,
            };
            if let Some(reason) = blame {
                tracing::warn!(
                    route = %route.prefix,
                    upstream = %target,
                    reason = %reason,
                    status = reason.status().as_u16(),
                    error = %err,
                    "gateway: request body refused"
                );
                return reason.respond();
            }
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
