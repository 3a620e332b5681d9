//! Property tests of the deadline headers beyond "no panic, never above the maximum"
//! (`headers_proptest.rs`): every well-formed value means exactly what it says, the formatters
//! lose almost nothing, and the server gives the handler exactly the asked time clamped to its
//! ceiling. The same properties are fuzzed by
//! `fuzz/fuzz_targets/{grpc_timeout,request_timeout_ms}.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
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
use tokio::runtime::Runtime;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const CEILING: Duration = Duration::from_secs(45);
const LARGEST_GRPC: Duration = Duration::from_secs(99_999_999 * 3600);

fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap()
}

fn unit() -> impl Strategy<Value = (char, fn(u64) -> Duration)> {
    let hours: fn(u64) -> Duration = |n| Duration::from_secs(n * 3600);
    let minutes: fn(u64) -> Duration = |n| Duration::from_secs(n * 60);
    prop_oneof![
        Just(('H', hours)),
        Just(('M', minutes)),
        Just(('S', Duration::from_secs as fn(u64) -> Duration)),
        Just(('m', Duration::from_millis as fn(u64) -> Duration)),
        Just(('u', Duration::from_micros as fn(u64) -> Duration)),
        Just(('n', Duration::from_nanos as fn(u64) -> Duration)),
    ]
}

thread_local! {
    static RUNTIME: RefCell<Option<Runtime>> = const { RefCell::new(None) };
}

/// The time the handler is given for a request carrying `name: value` (`None`: no deadline),
/// or the status it was refused with. A paused clock, so the figure is exact.
fn served(name: &'static str, value: HeaderValue) -> Result<Option<Duration>, StatusCode> {
    RUNTIME.with_borrow_mut(|rt| {
        let rt = rt.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap()
        });
        rt.block_on(async move {
            let layer = ServerDeadlineLayer::builder()
                .no_default_timeout()
                .max_timeout(CEILING)
                .build()
                .unwrap();
            let seen: Arc<Mutex<Option<Option<Deadline>>>> = Arc::default();
            let record = seen.clone();
            let svc = layer.layer(tower::service_fn(move |req: Request<()>| {
                *record.lock().unwrap() = Some(Deadline::of(&req));
                async { Ok::<_, Infallible>(Response::new(String::new())) }
            }));
            let mut req = Request::new(());
            req.headers_mut().insert(name, value);
            let start = Instant::now();
            let res = svc.oneshot(req).await.unwrap();
            match seen.lock().unwrap().take() {
                Some(deadline) => Ok(deadline.map(|d| d.instant() - start)),
                None => Err(res.status()),
            }
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// 1 to 8 digits and a unit, spaces and tabs around, is exactly that duration; a `-` in
    /// front makes it expired; a ninth digit makes it malformed.
    #[test]
    fn grpc_timeouts_mean_what_they_say(
        n in 0u64..100_000_000,
        (letter, per) in unit(),
        (left, right) in ("[ \t]{0,2}", "[ \t]{0,2}"),
    ) {
        let text = format!("{left}{n}{letter}{right}");
        let expected = if n == 0 { Incoming::Expired } else { Incoming::Timeout(per(n)) };
        prop_assert_eq!(parse_grpc_timeout(&value(&text)), expected, "{}", text);
        prop_assert_eq!(parse_grpc_timeout(&value(&format!("-{n}{letter}"))), Incoming::Expired);
        prop_assert_eq!(parse_grpc_timeout(&value(&format!("{n:09}{letter}"))), Incoming::Malformed);
    }

    /// Formatting picks the finest unit that fits 8 digits, so it never rounds a timeout up and
    /// never loses more than a 100 000th of it (the coarsest step, seconds for ≥ 10^5 s); beyond
    /// the largest value the grammar holds (99 999 999 hours) it says that value.
    #[test]
    fn grpc_formatting_loses_almost_nothing(
        nanos in any::<u64>(),
        scale in proptest::sample::select(vec![1u32, 1000, 3600, 1_000_000]),
    ) {
        let d = Duration::from_nanos(nanos) * scale;
        let Incoming::Timeout(back) = parse_grpc_timeout(&format_grpc_timeout(d)) else {
            prop_assert!(d.is_zero(), "{:?} did not parse back", d);
            return Ok(());
        };
        let most = d.min(LARGEST_GRPC);
        prop_assert!(back <= most, "{:?} came back as {:?}", d, back);
        prop_assert!((most - back).as_nanos() * 100_000 <= most.as_nanos(), "{:?} came back as {:?}", d, back);
    }

    /// Milliseconds: any digits are exactly that many (saturating), `-` in front expired,
    /// anything after the digits malformed; formatting round-trips exactly.
    #[test]
    fn timeout_ms_means_what_it_says(
        ms in any::<u64>(),
        (left, right) in ("[ \t]{0,2}", "[ \t]{0,2}"),
        junk in "[.eE+x_a-z]",
    ) {
        let expected = if ms == 0 { Incoming::Expired } else { Incoming::Timeout(Duration::from_millis(ms)) };
        prop_assert_eq!(parse_timeout_ms(&value(&format!("{left}{ms}{right}"))), expected);
        prop_assert_eq!(parse_timeout_ms(&format_timeout_ms(Duration::from_millis(ms))), expected);
        prop_assert_eq!(parse_timeout_ms(&value(&format!("-{ms}"))), Incoming::Expired);
        prop_assert_eq!(parse_timeout_ms(&value(&format!("{ms}{junk}"))), Incoming::Malformed);
        prop_assert_eq!(
            parse_timeout_ms(&value(&format!("{ms}{}", "0".repeat(20)))),
            if ms == 0 { Incoming::Expired } else { Incoming::Timeout(Duration::from_millis(u64::MAX)) }
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// The handler gets exactly what the header asked, clamped to the server's ceiling: never
    /// more, never zero; an expired header is a 504 without the handler; a malformed one is
    /// ignored (no deadline, as this server has no default).
    #[test]
    fn the_server_grants_exactly_the_clamped_request(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..16),
            "[ \t]{0,1}-?[0-9]{1,10}[HMSmun]?".prop_map(String::into_bytes),
        ],
        grpc in any::<bool>(),
    ) {
        let Ok(header) = HeaderValue::from_bytes(&bytes) else { return Ok(()); };
        let (name, parsed) = if grpc {
            ("grpc-timeout", parse_grpc_timeout(&header))
        } else {
            ("request-timeout-ms", parse_timeout_ms(&header))
        };
        let expected = match parsed {
            Incoming::Timeout(t) => Ok(Some(t.min(CEILING))),
            Incoming::Expired => Err(StatusCode::GATEWAY_TIMEOUT),
            Incoming::Malformed => Ok(None),
        };
        prop_assert_eq!(served(name, header.clone()), expected, "{:?}", header);
    }
}
