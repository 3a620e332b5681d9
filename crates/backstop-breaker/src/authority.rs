//! [`PerAuthority`], the default key: one breaker per scheme, host and port, matched against a
//! request without parsing or allocating in the common case.

use std::fmt;
use std::hash::{Hash, Hasher};

use http::Uri;

use crate::key::{BreakerKey, RequestHead};

/// One breaker per authority — scheme, host (case-insensitive) and port (the scheme's default
/// when absent) — read from the URI, or from the `Host` header for a request whose URI has no
/// authority. The default key.
#[derive(Debug, Clone, Copy, Default)]
pub struct PerAuthority;

/// The scheme part of an [`Authority`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SchemeKey {
    /// No scheme (a request in origin form).
    None,
    /// `http`.
    Http,
    /// `https`.
    Https,
    /// Any other scheme, lower-cased.
    Other(Box<str>),
}

/// The key of [`PerAuthority`]: scheme, lower-cased host, port.
#[derive(Clone, PartialEq, Eq)]
pub struct Authority {
    scheme: SchemeKey,
    /// The host, then `:port` unless the port is the scheme's default — the authority as most
    /// requests spell it, so that matching a request is one byte comparison before any parsing.
    /// A function of `scheme`, the host and `port`, so the derived equality is the key's.
    canonical: Box<str>,
    host_len: usize,
    port: Option<u16>,
}

// === impl Authority ===

impl Authority {
    /// The scheme.
    pub fn scheme(&self) -> &SchemeKey {
        &self.scheme
    }

    /// The host, lower-cased (IPv6 literals keep their brackets).
    pub fn host(&self) -> &str {
        self.canonical.get(..self.host_len).unwrap_or_default()
    }

    /// The port: explicit, else the scheme's default; `None` when neither is known.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The authority of a request (see [`PerAuthority`]).
    pub fn of(head: &RequestHead<'_>) -> Authority {
        let parts = Parts::of(head);
        let mut canonical = parts.host.to_ascii_lowercase();
        let host_len = canonical.len();
        if let Some(port) = parts.port
            && Some(port) != parts.scheme.default_port()
        {
            use fmt::Write;
            let _ = write!(canonical, ":{port}");
        }
        Authority {
            scheme: match parts.scheme {
                SchemeRef::None => SchemeKey::None,
                SchemeRef::Http => SchemeKey::Http,
                SchemeRef::Https => SchemeKey::Https,
                SchemeRef::Other(other) => SchemeKey::Other(other.to_ascii_lowercase().into()),
            },
            canonical: canonical.into(),
            host_len,
            port: parts.port,
        }
    }

    /// Whether `uri` spells this authority exactly as `canonical` does (the same scheme, the
    /// host in lower case, no default port): one byte comparison, no parsing. `false` says
    /// nothing; the caller then compares the parsed parts.
    #[inline(always)]
    fn spelled_by(&self, uri: &Uri) -> bool {
        let Some(authority) = uri.authority() else {
            return false;
        };
        let scheme = uri.scheme_str().unwrap_or_default();
        let same_scheme = match &self.scheme {
            // `http` parses the standard schemes in any case and prints them in lower case.
            SchemeKey::Http => scheme.len() == 4 && scheme == "http",
            SchemeKey::Https => scheme.len() == 5 && scheme == "https",
            SchemeKey::None => uri.scheme().is_none(),
            SchemeKey::Other(other) => **other == *scheme,
        };
        same_scheme && same_bytes(self.canonical.as_bytes(), authority.as_str().as_bytes())
    }
}

/// Byte equality without a call to `memcmp`, which costs more than the comparison for a host.
/// From four bytes on, the two words (of four, or of eight bytes) at either end overlap, so an
/// authority of up to 16 bytes is two comparisons with no loop; longer ones take the slice
/// comparison.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| {
        s.get(at..at + 8)
            .and_then(|chunk| chunk.try_into().ok())
            .map_or(0, u64::from_ne_bytes)
    };
    let half = |s: &[u8], at: usize| {
        s.get(at..at + 4)
            .and_then(|chunk| chunk.try_into().ok())
            .map_or(0, u32::from_ne_bytes)
    };
    match len {
        17.. => a == b,
        8..=16 => (word(a, 0) ^ word(b, 0)) | (word(a, len - 8) ^ word(b, len - 8)) == 0,
        4..=7 => (half(a, 0) ^ half(b, 0)) | (half(a, len - 4) ^ half(b, len - 4)) == 0,
        _ => a == b,
    }
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scheme {
            SchemeKey::None => {}
            SchemeKey::Http => f.write_str("http://")?,
            SchemeKey::Https => f.write_str("https://")?,
            SchemeKey::Other(other) => write!(f, "{other}://")?,
        }
        f.write_str(self.host())?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

impl Hash for Authority {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let scheme = match &self.scheme {
            SchemeKey::None => SchemeRef::None,
            SchemeKey::Http => SchemeRef::Http,
            SchemeKey::Https => SchemeRef::Https,
            SchemeKey::Other(other) => SchemeRef::Other(other),
        };
        hash_parts(
            &Parts {
                scheme,
                host: self.host(),
                port: self.port,
            },
            state,
        );
    }
}

// === impl PerAuthority ===

impl BreakerKey for PerAuthority {
    type Key = Authority;

    fn key(&self, head: &RequestHead<'_>) -> Authority {
        Authority::of(head)
    }

    #[inline]
    fn matches(&self, head: &RequestHead<'_>, key: &Authority) -> bool {
        key.spelled_by(head.uri()) || matches_parsed(head, key)
    }

    /// The request's scheme and authority spelled exactly as the key's canonical form (lower
    /// case, no default port): one byte comparison, no parsing.
    // Always inlined: on every call, and a dozen instructions once inlined, fewer than a
    // call's own cost.
    #[inline(always)]
    fn matches_quickly(&self, head: &RequestHead<'_>, key: &Authority) -> bool {
        key.spelled_by(head.uri())
    }

    fn hash_head<H: Hasher>(&self, head: &RequestHead<'_>, state: &mut H) {
        hash_parts(&Parts::of(head), state);
    }
}

/// The slow half of [`PerAuthority::matches`]: parse, default the port, ignore case.
#[cold]
fn matches_parsed(head: &RequestHead<'_>, key: &Authority) -> bool {
    let parts = Parts::of(head);
    let scheme_matches = match (&key.scheme, parts.scheme) {
        (SchemeKey::None, SchemeRef::None)
        | (SchemeKey::Http, SchemeRef::Http)
        | (SchemeKey::Https, SchemeRef::Https) => true,
        (SchemeKey::Other(a), SchemeRef::Other(b)) => a.eq_ignore_ascii_case(b),
        _ => false,
    };
    scheme_matches && key.port == parts.port && key.host().eq_ignore_ascii_case(parts.host)
}

// === impl Parts: a request's authority, read in place ===

#[derive(Clone, Copy)]
enum SchemeRef<'a> {
    None,
    Http,
    Https,
    Other(&'a str),
}

impl SchemeRef<'_> {
    fn default_port(self) -> Option<u16> {
        match self {
            SchemeRef::Http => Some(80),
            SchemeRef::Https => Some(443),
            SchemeRef::None | SchemeRef::Other(_) => None,
        }
    }
}

/// An authority borrowed from a request, before lower-casing.
struct Parts<'a> {
    scheme: SchemeRef<'a>,
    host: &'a str,
    port: Option<u16>,
}

impl<'a> Parts<'a> {
    fn of(head: &RequestHead<'a>) -> Parts<'a> {
        let uri = head.uri();
        let scheme = match uri.scheme_str() {
            None => SchemeRef::None,
            Some(s) if s.eq_ignore_ascii_case("http") => SchemeRef::Http,
            Some(s) if s.eq_ignore_ascii_case("https") => SchemeRef::Https,
            Some(s) => SchemeRef::Other(s),
        };
        let (host, port) = match uri.host() {
            Some(host) => (host, uri.port_u16()),
            None => head
                .headers()
                .get(http::header::HOST)
                .and_then(|value| value.to_str().ok())
                .map_or(("", None), split_host_port),
        };
        let port = port.or(scheme.default_port());
        Parts { scheme, host, port }
    }
}

/// Splits a `Host` header value; a malformed port is treated as absent (never a panic).
fn split_host_port(value: &str) -> (&str, Option<u16>) {
    let value = value.trim();
    if value.starts_with('[') {
        // An IPv6 literal: the port, if any, follows the closing bracket.
        return match value.find(']') {
            Some(end) => {
                let (host, rest) = value.split_at(end + 1);
                (host, rest.strip_prefix(':').and_then(|p| p.parse().ok()))
            }
            None => (value, None),
        };
    }
    match value.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()),
        None => (value, None),
    }
}

/// The one hashing routine for both borrowed parts and owned keys, so they always agree.
fn hash_parts<H: Hasher>(parts: &Parts<'_>, state: &mut H) {
    match parts.scheme {
        SchemeRef::None => state.write_u8(0),
        SchemeRef::Http => state.write_u8(1),
        SchemeRef::Https => state.write_u8(2),
        SchemeRef::Other(other) => {
            state.write_u8(3);
            write_lowercase(other, state);
        }
    }
    write_lowercase(parts.host, state);
    match parts.port {
        Some(port) => {
            state.write_u8(1);
            state.write_u16(port);
        }
        None => state.write_u8(0),
    }
}

fn write_lowercase<H: Hasher>(text: &str, state: &mut H) {
    // Hosts are short: lower-case into a small stack buffer and write in chunks.
    let mut buf = [0u8; 64];
    for chunk in text.as_bytes().chunks(buf.len()) {
        let out = &mut buf[..chunk.len()];
        for (o, b) in out.iter_mut().zip(chunk) {
            *o = b.to_ascii_lowercase();
        }
        state.write(out);
    }
    state.write_u8(0xff);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    use http::Request;

    fn head_hash(req: &Request<()>) -> u64 {
        let state = std::hash::RandomState::new();
        let mut h1 = state.build_hasher();
        PerAuthority.hash_head(&RequestHead::of(req), &mut h1);
        let key = PerAuthority.key(&RequestHead::of(req));
        assert_eq!(h1.finish(), state.hash_one(&key));
        state.hash_one(&key)
    }

    fn req(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap_or_default()
    }

    #[test]
    fn authority_ignores_case_and_defaults_the_port() {
        let a = req("http://Example.COM/x");
        let b = req("http://example.com:80/y");
        let c = req("https://example.com/");
        let ka = PerAuthority.key(&RequestHead::of(&a));
        assert_eq!(ka, PerAuthority.key(&RequestHead::of(&b)));
        assert!(PerAuthority.matches(&RequestHead::of(&b), &ka));
        assert!(!PerAuthority.matches(&RequestHead::of(&c), &ka));
        head_hash(&a);
        head_hash(&c);
        assert_eq!(ka.to_string(), "http://example.com:80");
    }

    #[test]
    fn the_quick_match_never_claims_a_request_of_another_key() {
        let uris = [
            "http://a.internal/",
            "http://A.internal/",
            "http://a.internal:80/",
            "http://a.internal:8080/",
            "https://a.internal/",
            "https://a.internal:443/",
            "http://user@a.internal/",
            "http://a.internal.evil/",
            "http://a.interna/",
            "http://[::1]:8080/",
            "http://[::1]/",
            "foo://a.internal/",
            "FOO://a.internal:99/",
            "a.internal:80",
        ];
        for key_uri in uris {
            let key = PerAuthority.key(&RequestHead::of(&req(key_uri)));
            for uri in uris {
                let r = req(uri);
                let head = RequestHead::of(&r);
                let exact = PerAuthority.key(&head) == key;
                assert_eq!(PerAuthority.matches(&head, &key), exact, "{uri} vs {key}");
                if PerAuthority.matches_quickly(&head, &key) {
                    assert!(exact, "{uri} quickly claimed by {key}");
                }
            }
            // The spelling a key was made from is claimed quickly when it is canonical.
            let canonical = req(&format!("{key}/"));
            if canonical.uri().authority().is_some() {
                assert!(
                    PerAuthority.matches_quickly(&RequestHead::of(&canonical), &key)
                        || key.port().is_some_and(|p| p == 80 || p == 443),
                    "{key}"
                );
            }
        }
        let a = PerAuthority.key(&RequestHead::of(&req("http://a.internal:8080/")));
        assert_eq!(a.host(), "a.internal");
        assert_eq!(a.to_string(), "http://a.internal:8080");
    }

    #[test]
    fn same_bytes_finds_any_difference_at_any_length() {
        for len in 0..40 {
            let a: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(same_bytes(&a, &a.clone()), "{len}");
            for at in 0..len {
                let mut b = a.clone();
                b[at] ^= 0x20;
                assert!(!same_bytes(&a, &b), "{len} at {at}");
            }
            assert!(!same_bytes(&a, &a[..len.saturating_sub(1)]) || len == 0);
        }
    }

    #[test]
    fn host_header_is_used_without_authority_and_never_panics() {
        for value in ["[::1]:8080", "[::1", "host:99999", "host:", "h:1:2", ""] {
            let mut r = req("/path");
            if let Ok(v) = http::HeaderValue::from_str(value) {
                r.headers_mut().insert(http::header::HOST, v);
            }
            head_hash(&r);
        }
        let mut r = req("/path");
        r.headers_mut().insert(
            http::header::HOST,
            http::HeaderValue::from_static("[::1]:8080"),
        );
        let key = PerAuthority.key(&RequestHead::of(&r));
        assert_eq!(key.host(), "[::1]");
        assert_eq!(key.port(), Some(8080));
    }
}
