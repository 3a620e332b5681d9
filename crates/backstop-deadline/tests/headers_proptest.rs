//! Property tests: arbitrary bytes in the deadline headers never panic and never yield a deadline
//! beyond the server maximum.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backstop_deadline::Deadline;
use backstop_deadline::ServerDeadlineLayer;
use backstop_deadline::propagate::{
    Incoming, format_grpc_timeout, format_timeout_ms, parse_grpc_timeout, parse_timeout_ms,
};
use http::{HeaderValue, Request, Response, StatusCode};
use proptest::prelude::*;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const MAX: Duration = Duration::from_secs(45);

/// Bytes as they might arrive: anything at all, or something close to a valid value.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..48),
        "[ \t]{0,2}-?[0-9]{0,30}[HMSmunx.e ]?[ \t]{0,2}".prop_map(String::into_bytes),
    ]
}

/// Runs one request with the given header values through the server layer; returns the status
/// and the time left the handler saw, if it ran.
fn serve(grpc: Option<HeaderValue>, ms: Option<HeaderValue>) -> (StatusCode, Option<Duration>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let seen: Arc<Mutex<Option<Option<Deadline>>>> = Arc::default();
        let layer = ServerDeadlineLayer::builder()
            .max_timeout(MAX)
            .build()
            .unwrap();
        let record = seen.clone();
        let svc = layer.layer(tower::service_fn(move |req: Request<()>| {
            *record.lock().unwrap() = Some(Deadline::of(&req));
            async { Ok::<_, Infallible>(Response::new(String::new())) }
        }));
        let mut req = Request::new(());
        if let Some(v) = grpc {
            req.headers_mut().insert("grpc-timeout", v);
        }
        if let Some(v) = ms {
            req.headers_mut().insert("request-timeout-ms", v);
        }
        let start = Instant::now();
        let res = svc.oneshot(req).await.unwrap();
        let left = seen.lock().unwrap().take().map(|d| {
            let d = d.expect("a handler that runs always has a deadline (default 30 s)");
            d.instant() - start
        });
        (res.status(), left)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn arbitrary_header_bytes_never_panic_nor_exceed_the_maximum(
        grpc in proptest::option::of(header_bytes()),
        ms in proptest::option::of(header_bytes()),
    ) {
        let grpc = grpc.and_then(|b| HeaderValue::from_bytes(&b).ok());
        let ms = ms.and_then(|b| HeaderValue::from_bytes(&b).ok());
        for value in grpc.iter().chain(ms.iter()) {
            for parsed in [parse_grpc_timeout(value), parse_timeout_ms(value)] {
                if let Incoming::Timeout(t) = parsed {
                    prop_assert!(!t.is_zero());
                }
            }
        }
        let (status, left) = serve(grpc, ms);
        match left {
            Some(left) => {
                prop_assert_eq!(status, StatusCode::OK);
                prop_assert!(left <= MAX, "{:?} beyond the maximum", left);
                prop_assert!(!left.is_zero());
            }
            None => prop_assert_eq!(status, StatusCode::GATEWAY_TIMEOUT),
        }
    }

    #[test]
    fn formatted_values_parse_back_to_no_more_than_was_formatted(nanos in any::<u64>(), secs in 0u64..10_000_000_000) {
        for d in [Duration::from_nanos(nanos), Duration::from_secs(secs)] {
            let grpc = format_grpc_timeout(d);
            prop_assert!(grpc.len() <= 9);
            match parse_grpc_timeout(&grpc) {
                Incoming::Timeout(back) => prop_assert!(back <= d),
                Incoming::Expired => prop_assert!(d.is_zero()),
                Incoming::Malformed => prop_assert!(false, "{:?} malformed", grpc),
            }
            let ms = format_timeout_ms(d);
            match parse_timeout_ms(&ms) {
                Incoming::Timeout(back) => prop_assert_eq!(back.as_millis(), d.as_millis()),
                Incoming::Expired => prop_assert!(d < Duration::from_millis(1)),
                Incoming::Malformed => prop_assert!(false, "{:?} malformed", ms),
            }
        }
    }
}
