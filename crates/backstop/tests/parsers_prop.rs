//! Property tests of the configuration parsers and the gateway's path handling, through the
//! public API: the client policy (TOML and JSON), the gateway's route table, and what the
//! gateway answers for any request path. The same properties are fuzzed by
//! `fuzz/fuzz_targets/{policy_toml,policy_json,gateway_config,path_normalise}.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use backstop::{ConfigError, Gateway, GatewayReason, JitterMode, Policy};
use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use proptest::prelude::*;
use tower::ServiceExt;

/// Durations around every bound the policy has (0, 1 ms, 1 s, 1 h, 1 day), to the nanosecond,
/// and occasionally enormous.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        (0u64..2_000_000).prop_map(Duration::from_nanos),
        (0u64..7_200_000_000_000).prop_map(Duration::from_nanos),
        (0u64..200_000_000_000_000).prop_map(Duration::from_nanos),
        (86_399u64..86_401, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (0u64..u64::MAX / 2).prop_map(Duration::from_secs),
    ]
}

fn ratio() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(1.0), -0.5f64..1.5]
}

fn jitter() -> impl Strategy<Value = JitterMode> {
    prop_oneof![
        Just(JitterMode::Full),
        Just(JitterMode::Equal),
        Just(JitterMode::Decorrelated),
        Just(JitterMode::None),
    ]
}

/// Policies with every field drawn on both sides of its rules: some valid, most not.
fn policy() -> impl Strategy<Value = Policy> {
    let top = (
        duration(),
        any::<bool>(),
        proptest::option::of(duration()),
        duration(),
        duration(),
    );
    let retry = (
        0u32..13,
        duration(),
        duration(),
        jitter(),
        duration(),
        prop_oneof![
            0usize..100_000,
            Just(i64::MAX as usize),
            16_000_000usize..17_000_000
        ],
        any::<bool>(),
        any::<bool>(),
        (any::<bool>(), ratio(), any::<u32>(), duration()),
    );
    let breaker = (
        any::<bool>(),
        0u32..12,
        ratio(),
        any::<u32>(),
        0u32..30,
        duration(),
        duration(),
        any::<u32>(),
        any::<bool>(),
    );
    let propagation = (
        any::<bool>(),
        proptest::sample::select(vec![
            "request-timeout-ms",
            "x-deadline",
            "bad header",
            "",
            "é",
        ]),
        proptest::collection::vec(
            proptest::sample::select(vec![
                "*.internal",
                "api.internal:8080",
                "10.0.0.5",
                "a b",
                "*",
                "",
            ]),
            0..3,
        ),
        any::<bool>(),
    );
    (top, retry, breaker, propagation).prop_map(|(top, retry, breaker, propagation)| {
        let mut p = Policy::default();
        (
            p.deadline,
            p.deadline_covers_body,
            p.attempt_timeout,
            p.connect_timeout,
            p.idle_timeout,
        ) = top;
        let r = &mut p.retry;
        let budget;
        (
            r.max_attempts,
            r.base_delay,
            r.max_delay,
            r.jitter,
            r.retry_after_max,
            r.replay_limit,
            r.attach_idempotency_key,
            r.retry_conflict,
            budget,
        ) = retry;
        (
            r.budget.enabled,
            r.budget.ratio,
            r.budget.min_per_second,
            r.budget.window,
        ) = budget;
        let b = &mut p.breaker;
        (
            b.enabled,
            b.consecutive_failures,
            b.failure_rate,
            b.window_calls,
            b.minimum_calls,
            b.open_for,
            b.max_open_for,
            b.half_open_probes,
            b.single_call_may_trip,
        ) = breaker;
        let (http, header, only_to, grpc) = propagation;
        p.propagation.http = http;
        p.propagation.header = header.to_owned();
        p.propagation.only_to = only_to.into_iter().map(str::to_owned).collect();
        p.propagation.grpc = grpc;
        p
    })
}

fn field(result: Result<Policy, ConfigError>) -> Result<Policy, String> {
    result.map_err(|err| {
        assert!(!err.rule().is_empty(), "{err}");
        err.field().to_owned()
    })
}

/// What every loaded policy promises: the bounds of `Policy::validate`'s table, which are the
/// layers' own (`crates/backstop/src/policy/bounds.rs`).
fn within_bounds(p: &Policy) -> Result<(), TestCaseError> {
    let milli = Duration::from_millis(1);
    prop_assert!(p.deadline > Duration::ZERO, "{:?}", p.deadline);
    prop_assert!(
        (milli..=backstop::timeout::MAX_CONNECT_TIMEOUT).contains(&p.connect_timeout),
        "{:?}",
        p.connect_timeout
    );
    prop_assert!(
        (milli..=backstop::timeout::MAX_IDLE_TIMEOUT).contains(&p.idle_timeout),
        "{:?}",
        p.idle_timeout
    );
    if let Some(attempt) = p.attempt_timeout {
        prop_assert!(
            attempt > Duration::ZERO && attempt <= backstop::deadline::MAX_ATTEMPT_TIMEOUT,
            "{:?}",
            attempt
        );
    }
    let attempt = p.effective_attempt_timeout();
    prop_assert!(
        attempt > Duration::ZERO && attempt <= p.deadline,
        "{:?}",
        attempt
    );
    prop_assert!((1..=backstop::retry::MAX_ATTEMPTS_LIMIT).contains(&p.retry.max_attempts));
    prop_assert!(p.retry.base_delay <= p.retry.max_delay);
    prop_assert!(backstop::retry::BUDGET_RATIO_RANGE.contains(&p.retry.budget.ratio));
    prop_assert!(p.breaker.failure_rate > 0.0 && p.breaker.failure_rate <= 1.0);
    prop_assert!(p.breaker.open_for <= p.breaker.max_open_for);
    Ok(())
}

/// One edit at a byte position of `text` (kept on a char boundary): a deletion, or one of a
/// few characters that matter to TOML and JSON inserted.
fn mutate(text: &str, at: usize, what: usize) -> String {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let mut out = text.to_owned();
    const INSERTS: [&str; 10] = ["\"", "=", "]", "[", ",", "}", "-", "9", "\n", "é"];
    match what % (INSERTS.len() + 1) {
        0 => {
            if at < out.len() {
                out.remove(at);
            }
        }
        i => out.insert_str(at, INSERTS[i - 1]),
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Written as TOML or JSON and read back, a policy is either the same policy (when it is
    /// valid) or refused with the same field `validate` names; nothing panics.
    #[test]
    fn policies_round_trip_or_are_refused_naming_the_field(p in policy()) {
        let expected = field(p.validate().map(|()| p.clone()));
        let toml = toml::to_string(&p).unwrap();
        prop_assert_eq!(field(Policy::from_toml(&toml)), expected.clone(), "{}", toml);
        let json = serde_json::to_string(&p).unwrap();
        prop_assert_eq!(field(Policy::from_json(&json)), expected.clone(), "{}", json);
        if let Ok(p) = &expected {
            within_bounds(p)?;
        }
    }

    /// A damaged file (one character removed or inserted anywhere) loads or is refused naming
    /// a field; what loads is within every bound.
    #[test]
    fn damaged_policy_files_never_panic(p in policy(), at in any::<usize>(), what in any::<usize>()) {
        for text in [toml::to_string(&p).unwrap(), serde_json::to_string(&p).unwrap()] {
            let damaged = mutate(&text, at, what);
            for loaded in [Policy::from_toml(&damaged), Policy::from_json(&damaged)] {
                match loaded {
                    Ok(p) => within_bounds(&p)?,
                    Err(err) => prop_assert!(!err.field().is_empty() && !err.rule().is_empty()),
                }
            }
        }
    }
}

fn segment() -> impl Strategy<Value = String> {
    proptest::sample::select(vec![
        "a", "bc", "x-1", ".", "..", "", "%2e", "%41", "a%2Fb", "é", "a?b",
    ])
    .prop_map(str::to_owned)
}

/// Route prefixes, some in normal form and some not.
fn prefix() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        proptest::collection::vec(segment(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(slash, segments, trailing)| {
            let mut p = if slash { "/".to_owned() } else { String::new() };
            p.push_str(&segments.join("/"));
            if trailing {
                p.push('/');
            }
            p
        })
}

fn route() -> impl Strategy<Value = String> {
    let upstream = proptest::sample::select(vec![
        "http://127.0.0.1:9001",
        "https://api.internal/v2/",
        "http://u:p@h/",
        "ftp://h/",
        "http://h/?q=1",
        "/relative",
        "http://h/a/../b",
        "not a url",
    ]);
    let methods = proptest::sample::select(vec![
        "",
        "methods = [\"GET\"]",
        "methods = [\"post\", \"GET\"]",
        "methods = [\"NO METHOD\"]",
    ]);
    let body_limit = proptest::sample::select(vec![
        "",
        "body_limit = 10",
        "body_limit = \"64 KiB\"",
        "body_limit = \"1.5MiB\"",
        "body_limit = \"64MB\"",
        "body_limit = -1",
        "body_limit = \"99999999999GiB\"",
    ]);
    let policy = proptest::sample::select(vec![
        "",
        "[route.policy]\ndeadline = \"2s\"",
        "[route.policy]\ndeadline = \"0s\"",
        "[route.policy.retry]\nmax_attempts = 1",
    ]);
    (prefix(), upstream, methods, body_limit, policy).prop_map(|(prefix, upstream, methods, body_limit, policy)| {
        format!("[[route]]\nprefix = {prefix:?}\nupstream = {upstream:?}\n{methods}\n{body_limit}\n{policy}\n")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// A route table loads, or is refused naming the route and the field (or the top-level
    /// `buffer_budget`, or the root for a syntax error); a loaded one has every prefix in the
    /// normal form request paths are matched in.
    #[test]
    fn route_tables_load_or_name_the_route_and_field(
        routes in proptest::collection::vec(route(), 0..4),
        budget in proptest::sample::select(vec!["", "buffer_budget = 0", "buffer_budget = \"1KiB\"", "buffer_budget = \"1GiB\"", "buffer_budget = \"lots\""]),
        damage in proptest::option::of((any::<usize>(), any::<usize>())),
    ) {
        let mut text = format!("{budget}\n{}", routes.concat());
        if let Some((at, what)) = damage {
            text = mutate(&text, at, what);
        }
        match Gateway::from_toml(&text) {
            Err(err) => {
                let field = err.field();
                prop_assert!(
                    field.starts_with("route ") || field.starts_with("route[") || field == "buffer_budget" || !field.is_empty() && damage.is_some(),
                    "{} from {}", err, text
                );
                prop_assert!(!err.rule().is_empty());
            }
            Ok(gateway) => {
                prop_assert!(gateway.buffer_budget() >= 1);
                let prefixes: Vec<&str> = gateway.prefixes().collect();
                prop_assert!(prefixes.len() <= routes.len());
                for p in prefixes {
                    prop_assert!(p.starts_with('/'), "{}", p);
                    prop_assert!(p == "/" || !p.ends_with('/'), "{}", p);
                    prop_assert!(!p.contains(['%', '?', '#', '\\']), "{}", p);
                    prop_assert!(p[1..].split('/').all(|s| !matches!(s, "." | "..") && (p == "/" || !s.is_empty())), "{}", p);
                    prop_assert!(gateway.route_service(p).is_some());
                }
            }
        }
    }

    /// Two routes for the same prefix (however it is spelled with a trailing `/`) and a method
    /// in common are refused, naming the later route's prefix.
    #[test]
    fn shadowed_routes_are_refused(name in "[a-z]{1,6}", slash in any::<bool>()) {
        let text = format!(
            "[[route]]\nprefix = \"/{name}\"\nupstream = \"http://127.0.0.1:1\"\n\
             [[route]]\nprefix = \"/{name}{}\"\nupstream = \"http://127.0.0.1:2\"\nmethods = [\"GET\"]\n",
            if slash { "/" } else { "" }
        );
        let err = Gateway::from_toml(&text).unwrap_err();
        prop_assert_eq!(err.field(), format!("route /{name}{}.prefix", if slash { "/" } else { "" }));
    }
}

/// Request paths as clients might send them: anything printable, dot segments, escapes of
/// every kind (valid, lower-case, truncated, of separators).
fn request_path() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("/".to_owned()),
            Just("..".to_owned()),
            Just(".".to_owned()),
            Just("catalog".to_owned()),
            Just(";x".to_owned()),
            "%[0-9a-fA-FgG]{0,2}",
            "[!-~]{1,3}",
        ],
        0..10,
    )
    .prop_map(|parts| parts.concat())
}

/// The outcome class of one request to a gateway with a single route `/catalog` whose
/// upstream refuses connections (a closed loopback port).
fn reason(
    gateway: &Gateway,
    rt: &tokio::runtime::Runtime,
    path: &str,
) -> Option<Option<GatewayReason>> {
    let req = Request::get(path).body(Empty::<Bytes>::new()).ok()?;
    if req.uri().path() != path {
        return None;
    }
    let res = rt.block_on(gateway.clone().oneshot(req)).unwrap();
    Some(GatewayReason::of(&res))
}

thread_local! {
    static FIXTURE: (tokio::runtime::Runtime, Gateway) = {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // A port that was just bound and released: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let gateway = Gateway::from_toml(&format!(
            "[[route]]\nprefix = \"/catalog\"\nupstream = \"http://127.0.0.1:{port}\"\n\
             [route.policy]\nretry = {{ max_attempts = 1 }}\nbreaker = {{ enabled = false }}\n"
        )).unwrap();
        (rt, gateway)
    };
}

/// Dot segments resolved by hand (RFC 3986 §5.2.4, empty segments dropped), for paths of
/// plain names, `.`, `..` and `/` only: the oracle for the gateway's routing.
fn resolve(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            name => out.push(name),
        }
    }
    format!("/{}", out.join("/"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the path, the answer is the gateway's own: refused (400 `DP`), no route (404
    /// `NR`), or the failure of forwarding to `/catalog`'s closed upstream — never a panic,
    /// never a relayed answer.
    #[test]
    fn any_request_path_gets_a_gateway_answer(path in request_path()) {
        FIXTURE.with(|(rt, gateway)| {
            let raw = format!("/{path}");
            if let Some(reason) = reason(gateway, rt, &raw) {
                prop_assert!(reason.is_some(), "{}: an answer that was not the gateway's", raw);
            }
            Ok(())
        })?;
    }

    /// Paths made of names, `.`, `..` and `/` are routed by their resolved form: forwarded to
    /// `/catalog`'s upstream exactly when they resolve to `/catalog` or below it, however many
    /// dot segments try to climb in or out.
    #[test]
    fn dot_segments_cannot_smuggle_a_path_in_or_out_of_a_prefix(
        parts in proptest::collection::vec(
            proptest::sample::select(vec!["catalog", "catalogue", "x", ".", "..", ""]),
            0..8,
        ),
    ) {
        let raw = format!("/{}", parts.join("/"));
        let resolved = resolve(&raw);
        let inside = resolved == "/catalog" || resolved.starts_with("/catalog/");
        FIXTURE.with(|(rt, gateway)| {
            let reason = reason(gateway, rt, &raw).flatten();
            prop_assert_ne!(reason, Some(GatewayReason::DeniedPath), "{}", raw);
            prop_assert_eq!(reason != Some(GatewayReason::NoRoute), inside, "{} resolves to {}", raw, resolved);
            Ok(())
        })?;
    }
}

/// Found by the `policy_toml` fuzz target (`['']`) and by `damaged_policy_files_never_panic`:
/// an unknown key spelled as the empty string gave a `ConfigError` whose field was empty.
#[test]
fn an_empty_key_is_named_as_written() {
    for err in [
        Policy::from_toml("['']").unwrap_err(),
        Policy::from_toml("\"\" = 1").unwrap_err(),
        Policy::from_json("{\"\": 1}").unwrap_err(),
    ] {
        assert_eq!(err.field(), "\"\"", "{err}");
        assert!(err.rule().contains("unknown field"), "{err}");
    }
    let err = Gateway::from_toml("\"\" = 1").unwrap_err();
    assert_eq!(err.field(), "\"\"", "{err}");
}
