//! Headers from the network are untrusted: any bytes in Retry-After, grpc-status or
//! grpc-retry-pushback-ms must never panic and never yield a wait above the cap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use backstop_classify::{
    Classify, GrpcPolicy, HttpPolicy, Pushback, parse_grpc_pushback, parse_retry_after,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;

const CAP: Duration = Duration::from_secs(120);

fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        "[0-9]{0,40}".prop_map(String::into_bytes),
        "-?[0-9]{1,12}(\\.[0-9]{0,3})?".prop_map(String::into_bytes),
        "(Mon|Tue|Wed|Fri), [0-9]{1,2} (Jan|Feb|Dec) [0-9]{1,5} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
            .prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn retry_after_never_panics_and_never_exceeds_the_cap(bytes in header_bytes(), now_secs in 0u64..4_000_000_000) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now_secs);
        if let Ok(value) = HeaderValue::from_bytes(&bytes)
            && let Some(wait) = parse_retry_after(&value, now, CAP)
        {
            prop_assert!(wait <= CAP);
        }
    }

    #[test]
    fn grpc_pushback_never_panics_and_never_exceeds_the_cap(bytes in header_bytes()) {
        if let Ok(value) = HeaderValue::from_bytes(&bytes)
            && let Pushback::After(wait) = parse_grpc_pushback(&value, CAP)
        {
            prop_assert!(wait <= CAP);
        }
    }

    #[test]
    fn policies_classify_any_header_bytes(
        status in 100u16..1000,
        retry_after in header_bytes(),
        grpc_status in header_bytes(),
        pushback in header_bytes(),
    ) {
        let status = StatusCode::from_u16(status).unwrap();
        let mut headers = HeaderMap::new();
        for (name, bytes) in [("retry-after", &retry_after), ("grpc-status", &grpc_status), ("grpc-retry-pushback-ms", &pushback)] {
            if let Ok(value) = HeaderValue::from_bytes(bytes) {
                headers.insert(name, value);
            }
        }
        let http = HttpPolicy::new().retry_after_cap(CAP);
        for outcome in [
            http.classify_response(status, &headers),
            GrpcPolicy::new().http(http.clone()).classify_response(status, &headers),
            GrpcPolicy::new().http(http.clone()).classify_trailers(&headers),
        ] {
            if let Some(wait) = outcome.failure().and_then(|f| f.retry_after()) {
                prop_assert!(wait <= CAP);
            }
        }
    }
}
