//! Request-path normalisation before routing (RFC 3986 §5.2.4 and §6.2.2), and the refusal of
//! paths whose meaning depends on who decodes them.
//!
//! A prefix check on the raw path is the classic way past a proxy's routing:
//! `/catalog/../payments/charge` passes a `/catalog` check and then reaches `/payments` at an
//! upstream that resolves dot segments; `/catalog/%2e%2e/payments` does the same at an upstream
//! that decodes before resolving; `/c%61talog` misses a `/catalog` rule and then is `/catalog`
//! upstream. So the gateway routes — and forwards — the normalised path, and refuses the forms
//! that different servers read differently.

use std::fmt;

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathError {
    /// Not an absolute path (`*`, empty) or a malformed percent-escape.
    Invalid,
    /// `%2F` or `%5C` (or a literal `\`): a separator or data, depending on the server.
    EncodedSeparator,
    /// A dot segment spelled with escapes (`%2e%2e`) or with path parameters (`..;x`): resolved
    /// by some servers after decoding, by others never.
    AmbiguousDotSegment,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::Invalid => "not an absolute path, or a malformed percent-escape",
            PathError::EncodedSeparator => "an encoded slash or backslash",
            PathError::AmbiguousDotSegment => "an encoded or parameterised dot segment",
        })
    }
}

/// The normal form of an absolute request path (no query):
///
/// - percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, the others
///   kept with upper-case hex (RFC 3986 §6.2.2.1–2);
/// - empty segments (`//`) are dropped, a trailing `/` kept;
/// - `.` and `..` segments are removed (§5.2.4), `..` never climbing above the root.
///
/// Refused ([`PathError`]): escaped separators (`%2F`, `%5C`) and backslashes, dot segments
/// written with escapes (`%2e%2e`, `.%2E`) or followed by path parameters (`..;`), malformed
/// escapes, and anything not starting with `/`.
pub(crate) fn normalise(raw: &str) -> Result<String, PathError> {
    let rest = raw.strip_prefix('/').ok_or(PathError::Invalid)?;
    let mut out: Vec<String> = Vec::new();
    let mut trailing_slash = false;
    let mut segments = rest.split('/').peekable();
    while let Some(raw_segment) = segments.next() {
        let last = segments.peek().is_none();
        let segment = decode_unreserved(raw_segment)?;
        let dot_part = segment.split(';').next().unwrap_or("");
        let is_dot = matches!(dot_part, "." | "..");
        // `..;x` is `..` to servlet containers and a plain name to others; `%2e%2e` is `..`
        // to servers that decode before resolving.
        if is_dot && (segment != raw_segment || segment.len() != dot_part.len()) {
            return Err(PathError::AmbiguousDotSegment);
        }
        match segment.as_str() {
            "" => trailing_slash = last,
            "." => trailing_slash = last,
            ".." => {
                out.pop();
                trailing_slash = last;
            }
            _ => {
                out.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut path = String::with_capacity(raw.len());
    for segment in &out {
        path.push('/');
        path.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        path.push('/');
    }
    Ok(path)
}

/// One segment with its unreserved escapes decoded and the others upper-cased.
fn decode_unreserved(segment: &str) -> Result<String, PathError> {
    if segment.contains('\\') {
        return Err(PathError::EncodedSeparator);
    }
    if !segment.contains('%') {
        return Ok(segment.to_owned());
    }
    let bytes = segment.as_bytes();
    // Bytes, not chars: a segment may hold UTF-8 beside its escapes (hyper passes it through),
    // and only ASCII escapes are decoded, so the result is valid UTF-8 again.
    let mut out = Vec::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let (Some(&hi), Some(&lo)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
            return Err(PathError::Invalid);
        };
        let (Some(h), Some(l)) = (hex(hi), hex(lo)) else {
            return Err(PathError::Invalid);
        };
        let byte = h << 4 | l;
        match byte {
            b'/' | b'\\' => return Err(PathError::EncodedSeparator),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(byte),
            _ => out.extend_from_slice(&[b'%', hi.to_ascii_uppercase(), lo.to_ascii_uppercase()]),
        }
        i += 3;
    }
    String::from_utf8(out).map_err(|_| PathError::Invalid)
}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Whether `path` (normalised) lies under `prefix` (normalised, no trailing `/` unless it is
/// the root): at a segment boundary, so `/catalog` covers `/catalog`, `/catalog/` and
/// `/catalog/x` but not `/catalogue-admin`.
pub(crate) fn under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn normal_forms() {
        let cases = [
            ("/", "/"),
            ("/catalog", "/catalog"),
            ("/catalog/", "/catalog/"),
            ("//catalog//items", "/catalog/items"),
            ("/catalog/../payments/charge", "/payments/charge"),
            ("/catalog/./items/.", "/catalog/items/"),
            ("/a/b/..", "/a/"),
            ("/../../etc", "/etc"),
            ("/c%61talog/x", "/catalog/x"),
            ("/file%2ejson", "/file.json"),
            ("/a%20b%c3%a9", "/a%20b%C3%A9"),
            ("/..x/.y", "/..x/.y"),
            ("/a;b", "/a;b"),
        ];
        for (raw, normal) in cases {
            assert_eq!(normalise(raw).as_deref(), Ok(normal), "{raw}");
        }
    }

    #[test]
    fn ambiguous_forms_are_refused() {
        let cases = [
            ("/catalog/%2e%2e/payments", PathError::AmbiguousDotSegment),
            ("/catalog/.%2E/payments", PathError::AmbiguousDotSegment),
            ("/catalog/%2E", PathError::AmbiguousDotSegment),
            ("/catalog/..;x/payments", PathError::AmbiguousDotSegment),
            ("/catalog%2F..%2Fpayments", PathError::EncodedSeparator),
            ("/catalog%2fx", PathError::EncodedSeparator),
            ("/catalog%5cx", PathError::EncodedSeparator),
            ("/catalog\\..\\x", PathError::EncodedSeparator),
            ("/bad%zz", PathError::Invalid),
            ("/bad%2", PathError::Invalid),
            ("*", PathError::Invalid),
            ("", PathError::Invalid),
        ];
        for (raw, err) in cases {
            assert_eq!(normalise(raw), Err(err), "{raw}");
        }
    }

    #[test]
    fn prefixes_match_at_segment_boundaries() {
        assert!(under("/catalog", "/catalog"));
        assert!(under("/catalog/", "/catalog"));
        assert!(under("/catalog/x", "/catalog"));
        assert!(!under("/catalogue-admin", "/catalog"));
        assert!(!under("/catalo", "/catalog"));
        assert!(under("/anything", "/"));
    }

    proptest::proptest! {
        /// Whatever the network sends: no panic, and a path that is accepted comes out in a
        /// normal form that normalises to itself, with no empty or dot segment left.
        #[test]
        fn normalisation_is_total_and_idempotent(raw in r"/?([a-zA-Z0-9._~;:@!$&'()*+,=-]|%[0-9a-fA-FgG]{0,2}|/|\\|é){0,40}") {
            if let Ok(normal) = normalise(&raw) {
                proptest::prop_assert!(normal.starts_with('/'));
                proptest::prop_assert!(!normal.contains("//"), "{normal}");
                for segment in normal.split('/') {
                    proptest::prop_assert!(segment != "." && segment != "..", "{normal}");
                }
                proptest::prop_assert_eq!(normalise(&normal), Ok(normal.clone()));
            }
        }

        /// Decoding touches escapes only: every other byte, UTF-8 included, comes through as is.
        #[test]
        fn bytes_outside_escapes_are_kept(name in "[a-zé€]{1,8}") {
            proptest::prop_assert_eq!(normalise(&format!("/{name}%41")), Ok(format!("/{name}A")));
        }

        /// A path under a prefix stays under it however it is spelled, and one outside never
        /// slips in through a dot segment.
        #[test]
        fn a_normalised_path_is_under_a_prefix_only_at_a_boundary(tail in "[a-z./]{0,12}") {
            let raw = format!("/catalog{tail}");
            if let Ok(normal) = normalise(&raw) {
                let inside = normal == "/catalog" || normal.starts_with("/catalog/");
                proptest::prop_assert_eq!(under(&normal, "/catalog"), inside, "{}", normal);
            }
        }

        /// Any string at all (not only path-like ones): no panic, and what is accepted is
        /// idempotent and in normal form — every escape left is upper-case hex of a byte that
        /// is not unreserved, and no backslash survives.
        #[test]
        fn any_string_normalises_to_a_fixed_point_or_is_refused(
            raw in proptest::prop_oneof![
                proptest::prelude::any::<String>(),
                proptest::strategy::Strategy::prop_map(
                    proptest::prelude::any::<String>(),
                    |s| format!("/{s}"),
                ),
                r"/([a-z.%/\\;]|%[0-9a-fA-F]{2}){0,24}",
            ],
        ) {
            let Ok(normal) = normalise(&raw) else { return Ok(()); };
            proptest::prop_assert!(!normal.contains('\\'), "{}", normal);
            let bytes = normal.as_bytes();
            for (i, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'%') {
                let escape = bytes.get(i + 1..i + 3).unwrap_or(b"");
                proptest::prop_assert!(
                    escape.len() == 2 && escape.iter().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
                    "{} -> {}", raw, normal
                );
                let byte = hex(escape[0]).unwrap_or(0) << 4 | hex(escape[1]).unwrap_or(0);
                proptest::prop_assert!(
                    !(byte.is_ascii_alphanumeric() || b"-._~".contains(&byte)),
                    "{} -> {}: an unreserved byte left escaped", raw, normal
                );
            }
            proptest::prop_assert_eq!(normalise(&normal), Ok(normal.clone()), "{}", raw);
        }
    }
}
