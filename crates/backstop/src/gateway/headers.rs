//! The headers of a forwarded message: hop-by-hop ones removed in both directions (RFC 9110
//! §7.6.1), forwarding headers and `Via` added (§7.6.3, RFC 7239), timing headers the route did
//! not decide removed.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Extensions, Version};

use super::config::ForwardedHeaders;

/// The name the gateway gives itself in `Via`.
const VIA_PSEUDONYM: &str = "backstop";

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The headers that describe one connection, never the message: a proxy consumes them.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes `Connection`, every header it names, and the other hop-by-hop headers.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// What the gateway knows of the hop it received a request on.
pub(crate) struct Hop {
    /// The client's address, when the server recorded it.
    pub(crate) peer: Option<SocketAddr>,
    /// The scheme the client used.
    pub(crate) proto: &'static str,
    /// The host the client asked for (`Host`, or the authority of an HTTP/2 request).
    pub(crate) host: Option<HeaderValue>,
    /// The protocol version the client spoke.
    pub(crate) version: Version,
}

/// The client's address: axum's `ConnectInfo<SocketAddr>`, or a bare `SocketAddr`, in the
/// request's extensions.
pub(crate) fn peer_addr(extensions: &Extensions) -> Option<SocketAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0)
        .or_else(|| {
            extensions
                .get::<backstop_server::PeerAddr>()
                .map(|peer| peer.0)
        })
        .or_else(|| extensions.get::<SocketAddr>().copied())
}

/// What a route decided about forwarding headers.
pub(crate) struct Forwarding<'a> {
    pub(crate) style: ForwardedHeaders,
    pub(crate) trusted: bool,
    /// The header the route's client writes the deadline into, besides the standard ones.
    pub(crate) timing_header: &'a HeaderName,
}

/// Prepares a request's headers for the upstream.
pub(crate) fn prepare_request(headers: &mut HeaderMap, hop: &Hop, forwarding: &Forwarding<'_>) {
    // gRPC over HTTP/2 requires `TE: trailers`; it is hop-by-hop, so it is written again for
    // the next hop rather than passed through.
    let grpc_trailers = is_grpc(headers)
        && headers
            .get_all(header::TE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
    remove_hop_by_hop(headers);
    if grpc_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    headers.remove(header::HOST);

    // A client does not choose how long the upstream may take: the route's client writes the
    // time left of the route's own deadline, where its propagation policy says.
    headers.remove(GRPC_TIMEOUT);
    headers.remove(backstop_deadline::DEFAULT_TIMEOUT_HEADER);
    headers.remove(forwarding.timing_header);

    forward_headers(headers, hop, forwarding);
    append(headers, header::VIA, &via(hop.version));
}

/// Prepares an upstream's response headers for the client.
pub(crate) fn prepare_response(headers: &mut HeaderMap, upstream_version: Version) {
    remove_hop_by_hop(headers);
    append(headers, header::VIA, &via(upstream_version));
}

fn forward_headers(headers: &mut HeaderMap, hop: &Hop, forwarding: &Forwarding<'_>) {
    if !forwarding.trusted {
        // Anyone can write these: from an untrusted hop they are dropped, whichever style the
        // route writes, so the upstream never reads a client's claim as the gateway's.
        for name in [
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            header::FORWARDED,
        ] {
            headers.remove(name);
        }
    }
    let ip = hop.peer.map(|peer| peer.ip());
    match forwarding.style {
        ForwardedHeaders::None => {}
        ForwardedHeaders::XForwarded => {
            if let Some(ip) = ip {
                append(headers, X_FORWARDED_FOR, &ip.to_string());
            }
            // The first proxy saw the client's scheme and host; a trusted hop's are kept.
            if !headers.contains_key(X_FORWARDED_PROTO) {
                headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(hop.proto));
            }
            if let Some(host) = &hop.host
                && !headers.contains_key(X_FORWARDED_HOST)
            {
                headers.insert(X_FORWARDED_HOST, host.clone());
            }
        }
        ForwardedHeaders::Rfc7239 => {
            let mut element = format!("for={};proto={}", node(ip), hop.proto);
            if let Some(host) = hop.host.as_ref().and_then(|h| h.to_str().ok()) {
                element.push_str(";host=");
                element.push_str(&quoted_if_needed(host));
            }
            append(headers, header::FORWARDED, &element);
        }
    }
}

/// An RFC 7239 node: an IPv4 address, a quoted bracketed IPv6 address, or `unknown`.
fn node(ip: Option<IpAddr>) -> String {
    match ip {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => format!("\"[{v6}]\""),
        None => "unknown".to_owned(),
    }
}

/// An RFC 7239 value: a token as it is, anything else (`host:port`) a quoted string.
fn quoted_if_needed(value: &str) -> String {
    let token = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if token {
        return value.to_owned();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// `Via`'s entry for this gateway on a message received in `version`.
fn via(version: Version) -> String {
    let protocol = match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    };
    format!("{protocol} {VIA_PSEUDONYM}")
}

/// Appends `item` to a list header, folding its present lines into one.
fn append(headers: &mut HeaderMap, name: HeaderName, item: &str) {
    let mut list: Vec<u8> = Vec::new();
    for value in headers.get_all(&name) {
        list.extend_from_slice(value.as_bytes());
        list.extend_from_slice(b", ");
    }
    list.extend_from_slice(item.as_bytes());
    // Every piece is already a valid header value, so the join is one; if it were not, the
    // gateway's own item alone still is.
    let value = HeaderValue::from_bytes(&list)
        .or_else(|_| HeaderValue::from_str(item))
        .ok();
    if let Some(value) = value {
        headers.insert(name, value);
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn connection_and_the_headers_it_names_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("X-Internal, close"),
        );
        headers.insert("x-internal", HeaderValue::from_static("secret"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_values_are_quoted_when_needed() {
        assert_eq!(quoted_if_needed("example.test"), "example.test");
        assert_eq!(quoted_if_needed("h:80"), "\"h:80\"");
        assert_eq!(node(Some("::1".parse().unwrap())), "\"[::1]\"");
        assert_eq!(node(None), "unknown");
    }
}
