//! The gateway's request-path normalisation: any path.
//!
//! Asserts: no panic; an accepted path comes out in normal form — starting with `/`, no empty,
//! `.` or `..` segment, every remaining escape upper-case hex of a byte that is not unreserved
//! (RFC 3986 §6.2.2) — and normalises to itself (idempotent); a normalised path lies under a
//! prefix only at a segment boundary; and a gateway with no routes answers such a request 404
//! (`NR`) when the path is accepted and 400 (`DP`) when it is refused, never anything else.
#![no_main]

use std::sync::OnceLock;

use backstop::fuzzing::{normalise_path, path_under};
use backstop::{Gateway, GatewayReason};
use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;
use tower::ServiceExt;

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime")
    })
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let normal = normalise_path(raw);
    if let Ok(normal) = &normal {
        assert!(normal.starts_with('/'), "{raw:?} -> {normal:?}");
        let segments: Vec<&str> = normal[1..].split('/').collect();
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            assert!(
                !segment.is_empty() || last,
                "{raw:?} -> {normal:?}: empty segment"
            );
            assert!(
                *segment != "." && *segment != "..",
                "{raw:?} -> {normal:?}: dot segment"
            );
        }
        let bytes = normal.as_bytes();
        for (i, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'%') {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                panic!("{raw:?} -> {normal:?}: an escape not in upper-case hex at {i}");
            };
            assert!(
                !unreserved(h << 4 | l),
                "{raw:?} -> {normal:?}: escaped unreserved byte"
            );
        }
        assert!(!normal.contains('\\'), "{raw:?} -> {normal:?}");
        assert_eq!(
            normalise_path(normal).as_ref(),
            Ok(normal),
            "{raw:?}: not idempotent"
        );
        // Every prefix of the normal form that ends at a segment boundary covers it; one that
        // ends inside a segment does not.
        for (cut, _) in normal.char_indices().skip(1).take(64) {
            let prefix = &normal[..cut];
            if prefix.ends_with('/') {
                continue;
            }
            let at_boundary = normal[cut..].is_empty() || normal[cut..].starts_with('/');
            assert_eq!(
                path_under(normal, prefix),
                at_boundary,
                "{normal:?} under {prefix:?}"
            );
        }
        assert!(path_under(normal, "/"));
    }
    // The same path as a request to a gateway with no routes (when it is a valid request URI).
    let Ok(req) = Request::get(raw).body(Empty::<Bytes>::new()) else {
        return;
    };
    if req.uri().path() != raw {
        return;
    }
    static GATEWAY: OnceLock<Gateway> = OnceLock::new();
    let gateway = GATEWAY
        .get_or_init(|| Gateway::from_routes(Vec::new(), |b| b).expect("an empty table"))
        .clone();
    let res = runtime()
        .block_on(gateway.oneshot(req))
        .expect("infallible");
    let expected = match normal {
        Ok(_) => GatewayReason::NoRoute,
        Err(_) => GatewayReason::DeniedPath,
    };
    assert_eq!(
        GatewayReason::of(&res),
        Some(expected),
        "{raw:?}: {}",
        res.status()
    );
});
