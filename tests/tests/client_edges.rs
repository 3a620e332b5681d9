//! The default `backstop::Client` where its rules meet each other and the outside world: an open
//! breaker inside the retry, a server's `Retry-After` against the client's limits, the deadline
//! on the wire and in the error, what a failed call reports, the breaker counting attempts, 409,
//! and an exhausted budget. Real loopback sockets; deliveries counted at the upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use backstop::breaker::State;
use backstop::deadline::PropagateDeadline;
use backstop::retry::StopReason;
use backstop::{CallInfoExt, Client, Kind, PropagationPolicy, Retryable, Timer};
use backstop_chaos::{ChaosServer, Fault, RetryAfter, Script};
use common::{bounded, request};
use http::{Method, StatusCode};
use tokio::time::Instant;

/// Point 1: with the defaults (3 attempts, 5 consecutive failures open a host's breaker), the
/// second call against a sick host trips its breaker; from then on every call is rejected at
/// once — one attempt, no delay slept, nothing sent, no retry budget spent — with its own kind.
#[tokio::test]
async fn an_open_breaker_fails_each_call_at_once_and_spends_no_budget() {
    let sick = ChaosServer::start().await.unwrap();
    sick.set_fault_for("/", Fault::status(503));
    let client = Client::new().unwrap();

    let first = bounded(client.get(&sick.url("/"))).await.unwrap();
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    let info = first.call_info().unwrap();
    assert_eq!(info.attempts, 3);
    assert_eq!(info.retry_stopped, Some(StopReason::AttemptsExhausted));
    assert_eq!(info.breaker, Some(State::Closed), "3 failures of 5");

    // Attempts 4 and 5 fail and open the breaker; the third attempt is rejected locally and
    // ends the call with the rejection.
    let err = bounded(client.get(&sick.url("/"))).await.unwrap_err();
    assert_eq!(err.kind(), Kind::BreakerOpen);
    assert_eq!(sick.request_count(), 5);
    let info = err.call_info().unwrap();
    assert_eq!(info.attempts, 3);
    assert_eq!(info.retry_stopped, Some(StopReason::RejectedLocally));
    assert_eq!(info.breaker, Some(State::Open));

    // Far more rejected calls than the budget's reserve (100 retries) could pay two retries for.
    for _ in 0..200 {
        let err = bounded(client.get(&sick.url("/"))).await.unwrap_err();
        assert_eq!(err.kind(), Kind::BreakerOpen);
        let info = err.call_info().unwrap();
        assert_eq!(info.attempts, 1);
        assert!(
            info.delays.is_empty(),
            "no backoff slept: {:?}",
            info.delays
        );
        assert_eq!(info.retry_stopped, Some(StopReason::RejectedLocally));
        assert_eq!(info.breaker, Some(State::Open));
    }
    assert_eq!(sick.request_count(), 5, "an open breaker sends nothing");

    // The budget is shared by every host: had the rejections spent it, this retry would be
    // denied.
    let healthy = ChaosServer::start().await.unwrap();
    healthy.script("/flaky", Script::fail_times(1, Fault::status(503)));
    let res = bounded(client.get(&healthy.url("/flaky"))).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.call_info().unwrap().attempts, 2);
}

/// Point 2: a server asking for a longer wait than the client will give is not retried early;
/// its response comes back at once with `Retry-After` intact.
#[tokio::test]
async fn a_retry_after_beyond_what_the_client_waits_returns_the_servers_answer() {
    let chaos = ChaosServer::start().await.unwrap();

    // Default `retry_after_max` is 30 s; the server asks for 60.
    chaos.set_fault_for("/", Fault::status_retry_after(503, RetryAfter::Seconds(60)));
    let client = Client::new().unwrap();
    let started = Instant::now();
    let res = bounded(client.get(&chaos.url("/"))).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "60");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(chaos.request_count(), 1);
    let info = res.call_info().unwrap();
    assert_eq!(info.retry_stopped, Some(StopReason::ServerWaitTooLong));
    assert!(info.delays.is_empty());

    // The case: `Retry-After: 5` with `retry_after_max = 1s`.
    chaos.reset_counts();
    chaos.set_fault_for("/", Fault::status_retry_after(503, RetryAfter::Seconds(5)));
    let client = Client::builder()
        .retry_after_max(Duration::from_secs(1))
        .build()
        .unwrap();
    let started = Instant::now();
    let res = bounded(client.get(&chaos.url("/"))).await.unwrap();
    assert_eq!(res.headers()["retry-after"], "5");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(chaos.request_count(), 1);

    // Within `retry_after_max` (30 s) but not within the time left of the default 30 s
    // deadline: returned at once too.
    chaos.reset_counts();
    chaos.set_fault_for("/", Fault::status_retry_after(429, RetryAfter::Seconds(30)));
    let client = Client::new().unwrap();
    let started = Instant::now();
    let res = bounded(client.get(&chaos.url("/"))).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "30");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(chaos.request_count(), 1);
    assert_eq!(
        res.call_info().unwrap().retry_stopped,
        Some(StopReason::Deadline)
    );

    // A short one is honoured, to the second.
    chaos.reset_counts();
    chaos.script(
        "/once",
        Script::fail_times(1, Fault::status_retry_after(503, RetryAfter::Seconds(1))),
    );
    let started = Instant::now();
    let res = bounded(client.get(&chaos.url("/once"))).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(res.call_info().unwrap().delays, [Duration::from_secs(1)]);
}

/// Point 3: plain HTTP requests carry no deadline header unless the client opts in; gRPC
/// requests carry `grpc-timeout`.
#[tokio::test]
async fn the_deadline_is_propagated_only_where_it_is_wanted() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = Client::new().unwrap();
    bounded(client.get(&chaos.url("/plain"))).await.unwrap();
    let mut grpc = request(Method::POST, &chaos.url("/grpc"));
    grpc.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    bounded(client.send(grpc)).await.unwrap();

    let deliveries = chaos.deliveries();
    let plain = &deliveries[0].headers;
    assert!(!plain.contains_key("request-timeout-ms"), "{plain:?}");
    assert!(!plain.contains_key("grpc-timeout"), "{plain:?}");
    let grpc = &deliveries[1].headers;
    let sent = grpc["grpc-timeout"].to_str().unwrap();
    assert!(sent.ends_with('u') || sent.ends_with('m'), "{sent}");
    assert!(!grpc.contains_key("request-timeout-ms"));

    // Opted in for this client: every plain request says how long the caller waits.
    let client = Client::builder()
        .propagation(PropagationPolicy {
            http: true,
            ..PropagationPolicy::default()
        })
        .build()
        .unwrap();
    bounded(client.get(&chaos.url("/opted-in"))).await.unwrap();
    let deliveries = chaos.deliveries();
    let ms: u64 = deliveries[2].headers["request-timeout-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ms > 9_000 && ms <= 10_000, "the attempt's bound: {ms}");

    // Per destination: only the listed ones get it…
    let only_internal = Client::builder()
        .propagation(PropagationPolicy {
            http: true,
            only_to: vec!["*.internal".into()],
            ..PropagationPolicy::default()
        })
        .build()
        .unwrap();
    bounded(only_internal.get(&chaos.url("/elsewhere")))
        .await
        .unwrap();
    let this_host = Client::builder()
        .propagation(PropagationPolicy {
            http: true,
            only_to: vec![chaos.addr().to_string()],
            ..PropagationPolicy::default()
        })
        .build()
        .unwrap();
    bounded(this_host.get(&chaos.url("/listed"))).await.unwrap();
    // …and a request may ask for it, or refuse it, itself.
    let mut asked = request(Method::GET, &chaos.url("/asked"));
    asked.extensions_mut().insert(PropagateDeadline::Always);
    bounded(only_internal.send(asked)).await.unwrap();
    let mut refused = request(Method::GET, &chaos.url("/refused"));
    refused.extensions_mut().insert(PropagateDeadline::Never);
    bounded(this_host.send(refused)).await.unwrap();

    let deliveries = chaos.deliveries();
    let carries = |path: &str| {
        deliveries
            .iter()
            .find(|d| d.path == path)
            .map(|d| d.headers.contains_key("request-timeout-ms"))
    };
    assert_eq!(carries("/elsewhere"), Some(false));
    assert_eq!(carries("/listed"), Some(true));
    assert_eq!(carries("/asked"), Some(true));
    assert_eq!(carries("/refused"), Some(false));
}

/// Points 4 and 5: a deadline alone builds (the attempt timeout follows it), and when the
/// attempt's bound is the deadline the error says so and is never retried.
#[tokio::test]
async fn a_deadline_alone_builds_and_names_the_error_when_it_is_the_bound() {
    let chaos = ChaosServer::start().await.unwrap();
    let stall = chaos.fault_url(&Fault::StallHeaders { duration: None });

    let client = Client::builder()
        .deadline(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = bounded(client.get(&stall)).await.unwrap_err();
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline));
    assert_eq!(err.retryable(), Retryable::Never);
    assert_eq!(chaos.request_count(), 1);

    // Both set to the same bound: the deadline is what ran out.
    chaos.reset_counts();
    let client = Client::builder()
        .deadline(Duration::from_millis(300))
        .attempt_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = bounded(client.get(&stall)).await.unwrap_err();
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline));
    assert_eq!(chaos.request_count(), 1);

    // An attempt timeout set explicitly against the deadline is still an error naming both.
    let err = Client::builder()
        .deadline(Duration::from_millis(300))
        .attempt_timeout(Duration::from_secs(10))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "attempt_timeout");
    assert!(err.rule().contains("deadline"), "{}", err.rule());
}

/// Point 6: a failed call reports what happened, like a successful one.
#[tokio::test]
async fn a_failed_call_says_what_happened() {
    let closed = backstop_chaos::closed_port_addr().unwrap();
    let client = Client::new().unwrap();
    let err = bounded(client.get(&format!("http://{closed}/")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Refused);
    assert_eq!(err.attempts(), Some(3));
    let info = err.call_info().unwrap();
    assert_eq!(info.attempts, 3);
    assert_eq!(info.delays.len(), 2);
    // Full jitter from 50 ms: the n-th delay is at most 50 ms × 2ⁿ.
    assert!(info.delays[0] <= Duration::from_millis(50), "{info:?}");
    assert!(info.delays[1] <= Duration::from_millis(100), "{info:?}");
    assert!(info.time_to_headers >= info.delays.iter().sum::<Duration>());
    assert_eq!(info.retry_stopped, Some(StopReason::AttemptsExhausted));
    assert_eq!(info.breaker, Some(State::Closed), "3 failed attempts of 5");
    assert_eq!(info.connect, None, "no connection was made");
}

/// The breaker state a call reports is its own destination's, read after the call, whether the
/// call was made from a URL (`get`) or from a request (`send`): one host's open breaker does not
/// show in another host's calls.
#[tokio::test]
async fn a_call_reports_its_own_hosts_breaker_from_a_url_or_a_request() {
    let sick = ChaosServer::start().await.unwrap();
    sick.set_fault_for("/", Fault::status(503));
    let client = Client::new().unwrap();
    // Three failed attempts, then two more and a rejection: the sick host's breaker opens.
    let first = bounded(client.send(request(Method::GET, &sick.url("/"))))
        .await
        .unwrap();
    assert_eq!(first.call_info().unwrap().breaker, Some(State::Closed));
    let err = bounded(client.send(request(Method::GET, &sick.url("/"))))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::BreakerOpen);
    assert_eq!(err.call_info().unwrap().breaker, Some(State::Open));
    let err = bounded(client.get(&sick.url("/"))).await.unwrap_err();
    assert_eq!(err.call_info().unwrap().breaker, Some(State::Open));

    // A retried call to another host looks its breaker up (no first-attempt shortcut): closed.
    let healthy = ChaosServer::start().await.unwrap();
    healthy.script("/a", Script::fail_times(1, Fault::status(503)));
    healthy.script("/b", Script::fail_times(1, Fault::status(503)));
    let by_url = bounded(client.get(&healthy.url("/a"))).await.unwrap();
    let info = by_url.call_info().unwrap();
    assert_eq!((info.attempts, info.breaker), (2, Some(State::Closed)));
    let by_request = bounded(client.send(request(Method::GET, &healthy.url("/b"))))
        .await
        .unwrap();
    let info = by_request.call_info().unwrap();
    assert_eq!((info.attempts, info.breaker), (2, Some(State::Closed)));
}

/// Point 10: the breaker counts attempts, so a policy whose single call can trip it is
/// rejected, naming both fields, unless the user says it is intended.
#[tokio::test]
async fn one_calls_own_retries_cannot_open_the_breaker_by_default() {
    let err = Client::builder().max_attempts(5).build().unwrap_err();
    assert_eq!(err.field(), "retry.max_attempts");
    assert!(
        err.rule().contains("breaker.consecutive_failures"),
        "{}",
        err.rule()
    );
    let err = backstop::Policy::from_toml("[retry]\nmax_attempts = 6").unwrap_err();
    assert_eq!(err.field(), "retry.max_attempts");

    // Intended, or no breaker at all: accepted, and one call can indeed open it.
    let chaos = ChaosServer::start().await.unwrap();
    chaos.set_fault_for("/", Fault::status(503));
    let client = Client::builder()
        .max_attempts(5)
        .single_call_may_trip(true)
        .build()
        .unwrap();
    let res = bounded(client.get(&chaos.url("/"))).await.unwrap();
    assert_eq!(res.call_info().unwrap().breaker, Some(State::Open));
    assert!(
        Client::builder()
            .max_attempts(5)
            .breaker(false)
            .build()
            .is_ok()
    );
}

/// Point 11: 409 is retried only when the user opts in, and only for requests that may be
/// retried at all.
#[tokio::test]
async fn conflict_is_retried_only_when_opted_in() {
    let chaos = ChaosServer::start().await.unwrap();
    chaos.script("/default", Script::fail_times(1, Fault::status(409)));
    let client = Client::new().unwrap();
    let res = bounded(client.send(request(Method::PUT, &chaos.url("/default"))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(chaos.count_path("/default"), 1);

    let client = Client::builder().retry_conflict(true).build().unwrap();
    chaos.script("/put", Script::fail_times(1, Fault::status(409)));
    let res = bounded(client.send(request(Method::PUT, &chaos.url("/put"))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(chaos.count_path("/put"), 2);

    chaos.script("/post", Script::fail_times(1, Fault::status(409)));
    let res = bounded(client.send(request(Method::POST, &chaos.url("/post"))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(chaos.count_path("/post"), 1, "a plain POST is never resent");
}

/// Point 12: when the budget denies a retry, the error is still the real failure; why retrying
/// stopped travels beside it.
#[tokio::test]
async fn an_exhausted_budget_never_hides_the_real_failure() {
    // 80 hosts (each its own breaker, so none opens) refusing connections at once: 160 retries
    // wanted, against a budget of 100 in reserve plus 20 % of 80 calls.
    let port = backstop_chaos::closed_port_addr().unwrap().port();
    let client = Client::new().unwrap();
    let calls = (2..82).map(|host| {
        let client = client.clone();
        let url = format!("http://127.0.0.{host}:{port}/");
        tokio::spawn(async move { bounded(client.get(&url)).await.unwrap_err() })
    });
    let mut denied = 0;
    for call in calls.collect::<Vec<_>>() {
        let err = call.await.unwrap();
        assert_eq!(err.kind(), Kind::Refused, "{err}");
        let info = err.call_info().unwrap();
        match info.retry_stopped {
            Some(StopReason::BudgetExhausted) => denied += 1,
            Some(StopReason::AttemptsExhausted) => assert_eq!(info.attempts, 3),
            other => panic!("{other:?}"),
        }
    }
    assert!(denied > 0, "the budget denied no retry");
}

/// The default client called under a shorter deadline than its own (a server handler's, made
/// ambient by the server's deadline layer): its call ends at that deadline, named as the
/// deadline and never retried, and a call made once it has passed is refused before anything
/// is sent, with its record. The 30 s default deadline plays no part: the paused clock would
/// otherwise run to it.
#[tokio::test(start_paused = true)]
async fn the_default_client_keeps_to_a_shorter_ambient_deadline_and_refuses_once_it_passed() {
    use backstop::Phase;
    use backstop::deadline::{Deadline, ambient};

    let chaos = ChaosServer::start().await.unwrap();
    let stall = chaos.fault_url(&Fault::StallHeaders { duration: None });
    let client = Client::new().unwrap();

    let started = Instant::now();
    let handler = Deadline::after(Duration::from_millis(700));
    let err = bounded(ambient::scope(handler, client.get(&stall)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline), "{err:?}");
    assert_eq!(err.retryable(), Retryable::Never);
    assert_eq!(started.elapsed(), Duration::from_millis(700));
    assert_eq!(chaos.request_count(), 1, "one attempt, cut by the deadline");

    // Passed already: refused locally, nothing sent, with the record of a call that stopped
    // at once (the retry layer never saw it: no reason of its own to stop).
    let passed = Deadline::at(Instant::now());
    let err = bounded(ambient::scope(passed, client.get(&stall)))
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.phase()),
        (Kind::TimedOut(Timer::Deadline), Phase::Local),
        "{err:?}"
    );
    let info = err.call_info().expect("a refused call has its record");
    assert_eq!((info.attempts, info.retry_stopped), (1, None));
    assert!(info.delays.is_empty(), "{:?}", info.delays);
    assert_eq!(info.breaker, Some(State::Closed));
    assert_eq!(chaos.request_count(), 1, "nothing more was sent");
}
