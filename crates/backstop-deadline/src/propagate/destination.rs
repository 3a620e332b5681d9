//! The destinations of [`Propagation::only_to`](super::Propagation::only_to): host patterns,
//! parsed once, matched against each request's authority without allocating.

use http::Request;
use http::header::HOST;
use http::uri::Scheme;

/// One destination of [`Propagation::only_to`], lowercased when parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HostPattern {
    host: HostMatch,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Exact(Box<str>),
    /// The suffix with its leading dot, `.internal` for `*.internal`.
    Suffix(Box<str>),
}

impl HostPattern {
    pub(super) fn parse(pattern: &str) -> Option<HostPattern> {
        let (host, port) = split_port(pattern)?;
        let port = match port {
            None => None,
            Some(digits) => Some(parse_port(digits)?),
        };
        let host = if let Some(suffix) = host.strip_prefix("*.") {
            valid_name(suffix).then(|| HostMatch::Suffix(format!(".{suffix}").into()))?
        } else if host.starts_with('[') {
            valid_ipv6(host).then(|| HostMatch::Exact(host.into()))?
        } else {
            // A fully qualified name's trailing dot names the same host.
            let host = host.strip_suffix('.').unwrap_or(host);
            valid_name(host).then(|| HostMatch::Exact(host.into()))?
        };
        let host = match host {
            HostMatch::Exact(h) => HostMatch::Exact(h.to_ascii_lowercase().into()),
            HostMatch::Suffix(s) => HostMatch::Suffix(s.to_ascii_lowercase().into()),
        };
        Some(HostPattern { host, port })
    }

    /// Whether `destination` is this one: byte comparisons, no allocation.
    #[inline]
    fn matches(&self, destination: &Destination<'_>) -> bool {
        let host = destination.host;
        let host_matches = match &self.host {
            HostMatch::Exact(exact) => host.eq_ignore_ascii_case(exact),
            HostMatch::Suffix(suffix) => {
                let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        };
        host_matches && (self.port.is_none() || self.port == destination.port())
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6) into its host and, if present, its port digits;
/// `None` for an unbracketed IPv6 address or an empty host.
fn split_port(authority: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            None => (authority, None),
            Some((host, port)) => (host, Some(port)),
        }
    };
    (!host.is_empty()).then_some((host, port))
}

fn parse_port(digits: &str) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&port| port != 0)
}

/// A DNS name or an IPv4 address: dot-separated labels of letters, digits, `-` and `_`.
fn valid_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `[` hex digits, `:` and `.` (an embedded IPv4) `]`, as `http` writes an IPv6 host.
fn valid_ipv6(host: &str) -> bool {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .is_some_and(|inner| {
            inner.contains(':')
                && inner
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        })
}

/// Whether the request's authority matches one of `patterns`. No allocation, and the port is
/// parsed only for a pattern that names one whose host matches.
pub(super) fn matches_destination<B>(patterns: &[HostPattern], req: &Request<B>) -> bool {
    let Some(destination) = Destination::of(req) else {
        return false;
    };
    patterns.iter().any(|pattern| pattern.matches(&destination))
}

/// Where a request goes, as slices of its URI's authority or of its `Host` header.
struct Destination<'a> {
    /// Without a trailing dot.
    host: &'a str,
    port: Option<&'a str>,
    scheme: Option<&'a Scheme>,
}

impl<'a> Destination<'a> {
    /// The URI's authority, or else the `Host` header (a request in origin form).
    fn of<B>(req: &'a Request<B>) -> Option<Destination<'a>> {
        let uri = req.uri();
        let authority = match uri.authority() {
            Some(authority) => authority.as_str(),
            None => req.headers().get(HOST)?.to_str().ok()?,
        };
        // Userinfo is no part of the destination (and `@` cannot appear after it).
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) = split_port(authority)?;
        Some(Destination {
            host: host.strip_suffix('.').unwrap_or(host),
            port,
            scheme: uri.scheme(),
        })
    }

    /// The explicit port, or the scheme's default one.
    fn port(&self) -> Option<u16> {
        match self.port {
            Some(digits) => parse_port(digits),
            None => match self.scheme {
                Some(scheme) if *scheme == Scheme::HTTP => Some(80),
                Some(scheme) if *scheme == Scheme::HTTPS => Some(443),
                _ => None,
            },
        }
    }
}
