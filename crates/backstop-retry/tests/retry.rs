//! The retry policy against an in-process scripted upstream, in paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, SystemTime};

use backstop_classify::{Classify, Error, GrpcPolicy, HttpPolicy, Kind, Outcome, Phase, Timer};
use backstop_deadline::Deadline;
use backstop_retry::{
    Jitter, RetryBudget, RetryInfo, RetryLayer, RetryLayerBuilder, RetryOverride, StopReason,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use support::{Chunked, MS, Reply, Upstream};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

type Res = Result<Response<http_body_util::Full<Bytes>>, Error>;

async fn send<P: Classify>(
    layer: RetryLayer<P>,
    upstream: &Upstream,
    req: Request<Chunked>,
) -> Res {
    let up = upstream.clone();
    let svc = layer.layer(service_fn(move |req| up.clone().handle(req)));
    svc.oneshot(req).await
}

fn request(method: Method) -> Request<Chunked> {
    Request::builder()
        .method(method)
        .uri("http://127.0.0.1/x")
        .body(Chunked::empty())
        .unwrap()
}

fn builder() -> RetryLayerBuilder {
    RetryLayer::builder().seed(7).no_budget()
}

#[tokio::test(start_paused = true)]
async fn get_503_503_200_succeeds_on_the_third_attempt_with_delays_inside_their_bounds() {
    let upstream = Upstream::new([Reply::status(503), Reply::status(503)]);
    let base = 100 * MS;
    let layer = builder()
        .base_delay(base)
        .max_delay(10 * base)
        .build()
        .unwrap();
    let start = Instant::now();
    let res = send(layer, &upstream, request(Method::GET)).await.unwrap();
    assert_eq!(res.status(), 200);
    let info = RetryInfo::of(&res);
    assert_eq!(info.attempts(), 3);
    assert_eq!(info.stopped(), None);
    let delays: Vec<_> = info.delays().collect();
    assert_eq!(delays.len(), 2);
    assert!(delays[0] <= base, "{delays:?}");
    assert!(delays[1] <= 2 * base, "{delays:?}");
    // Full jitter: with this seed the two delays differ from their bounds and each other.
    assert_ne!(delays[0], delays[1]);
    assert_eq!(start.elapsed(), info.total_delay());
    let seen = upstream.seen();
    assert_eq!(seen[1].at - seen[0].at, delays[0]);
    assert_eq!(seen[2].at - seen[1].at, delays[1]);
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_delays() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let upstream = Upstream::new([Reply::status(503), Reply::status(503)]);
        let res = send(builder().build().unwrap(), &upstream, request(Method::GET)).await;
        runs.push(RetryInfo::of(&res.unwrap()).delays().collect::<Vec<_>>());
    }
    assert_eq!(runs[0], runs[1]);
}

#[tokio::test(start_paused = true)]
async fn post_answered_503_is_not_retried() {
    let upstream = Upstream::new([Reply::status(503)]);
    let res = send(builder().build().unwrap(), &upstream, request(Method::POST)).await;
    let res = res.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(upstream.calls(), 1);
    assert_eq!(
        RetryInfo::of(&res).stopped(),
        Some(StopReason::NotRetryable)
    );
}

#[tokio::test(start_paused = true)]
async fn post_reset_after_the_write_is_not_retried_but_refused_is() {
    let upstream = Upstream::new([Reply::Fail(Kind::Reset, Phase::AwaitHeaders)]);
    let err = send(builder().build().unwrap(), &upstream, request(Method::POST))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Reset);
    assert_eq!(upstream.calls(), 1);

    let upstream = Upstream::new([
        Reply::Fail(Kind::Refused, Phase::Connect),
        Reply::Fail(Kind::Closed, Phase::Send),
    ]);
    let res = send(builder().build().unwrap(), &upstream, request(Method::POST)).await;
    assert_eq!(res.unwrap().status(), 200);
    assert_eq!(upstream.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn idempotent_methods_are_retried_after_a_reset() {
    for method in [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ] {
        let upstream = Upstream::new([Reply::Fail(Kind::Reset, Phase::AwaitHeaders)]);
        let res = send(
            builder().build().unwrap(),
            &upstream,
            request(method.clone()),
        )
        .await;
        assert_eq!(res.unwrap().status(), 200, "{method}");
        assert_eq!(upstream.calls(), 2, "{method}");
    }
    for method in [Method::POST, Method::PATCH, Method::CONNECT] {
        let upstream = Upstream::new([Reply::Fail(Kind::Reset, Phase::AwaitHeaders)]);
        let res = send(
            builder().build().unwrap(),
            &upstream,
            request(method.clone()),
        )
        .await;
        assert!(res.is_err(), "{method}");
        assert_eq!(upstream.calls(), 1, "{method}");
    }
}

#[tokio::test(start_paused = true)]
async fn post_with_an_idempotency_key_is_retried_with_the_same_key() {
    let upstream = Upstream::new([Reply::status(503), Reply::status(503)]);
    let mut req = request(Method::POST);
    req.headers_mut()
        .insert("idempotency-key", HeaderValue::from_static("k-123"));
    let res = send(builder().build().unwrap(), &upstream, req)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let keys: Vec<_> = upstream
        .seen()
        .iter()
        .map(|s| s.headers["idempotency-key"].clone())
        .collect();
    assert_eq!(keys, ["k-123", "k-123", "k-123"]);
}

#[tokio::test(start_paused = true)]
async fn the_idempotency_key_header_name_is_configurable() {
    let upstream = Upstream::new([Reply::status(503)]);
    let mut req = request(Method::POST);
    req.headers_mut()
        .insert("x-request-key", HeaderValue::from_static("a"));
    let layer = builder()
        .idempotency_key_header(http::HeaderName::from_static("x-request-key"))
        .build()
        .unwrap();
    assert_eq!(send(layer, &upstream, req).await.unwrap().status(), 200);
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_attached_key_is_fresh_per_request_and_identical_on_every_attempt() {
    let upstream = Upstream::new([Reply::status(503), Reply::status(200), Reply::status(200)]);
    let layer = builder().attach_idempotency_key(true).build().unwrap();
    send(layer.clone(), &upstream, request(Method::POST))
        .await
        .unwrap();
    send(layer.clone(), &upstream, request(Method::GET))
        .await
        .unwrap();
    let seen = upstream.seen();
    assert_eq!(seen.len(), 3);
    let first = seen[0].headers["idempotency-key"].clone();
    assert_eq!(seen[1].headers["idempotency-key"], first);
    assert_eq!(first.len(), 36, "a UUID: {first:?}");
    // An idempotent method needs no key.
    assert!(!seen[2].headers.contains_key("idempotency-key"));
    // And a second POST gets another key.
    let upstream2 = Upstream::new([]);
    send(layer, &upstream2, request(Method::POST))
        .await
        .unwrap();
    assert_ne!(upstream2.seen()[0].headers["idempotency-key"], first);
}

#[tokio::test(start_paused = true)]
async fn overrides_mark_idempotent_or_never_retry() {
    let upstream = Upstream::new([Reply::status(503)]);
    let mut req = request(Method::POST);
    req.extensions_mut().insert(RetryOverride::Idempotent);
    assert_eq!(
        send(builder().build().unwrap(), &upstream, req)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(upstream.calls(), 2);

    let upstream = Upstream::new([Reply::Fail(Kind::Refused, Phase::Connect)]);
    let mut req = request(Method::GET);
    req.extensions_mut().insert(RetryOverride::NeverRetry);
    let err = send(builder().build().unwrap(), &upstream, req)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Refused);
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn conflict_is_retried_only_when_opted_in_bad_request_and_unprocessable_never() {
    // By default a 409 is a lost race a replay would lose again: returned as it is.
    let upstream = Upstream::new([Reply::status(409)]);
    let mut req = request(Method::PUT);
    req.headers_mut()
        .insert("idempotency-key", HeaderValue::from_static("k"));
    let res = send(builder().build().unwrap(), &upstream, req)
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(upstream.calls(), 1);
    assert_eq!(
        RetryInfo::of(&res).stopped(),
        Some(StopReason::NotRetryable)
    );

    // Opted in: retried for a keyed request…
    let upstream = Upstream::new([Reply::status(409)]);
    let mut req = request(Method::POST);
    req.headers_mut()
        .insert("idempotency-key", HeaderValue::from_static("k"));
    assert_eq!(
        send(
            builder().retry_conflict(true).build().unwrap(),
            &upstream,
            req
        )
        .await
        .unwrap()
        .status(),
        200
    );
    assert_eq!(upstream.calls(), 2);

    // …but never for a request that may not be retried at all.
    let upstream = Upstream::new([Reply::status(409)]);
    let res = send(
        builder().retry_conflict(true).build().unwrap(),
        &upstream,
        request(Method::POST),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(upstream.calls(), 1);

    for code in [400, 422] {
        let upstream = Upstream::new([Reply::status(code)]);
        let mut req = request(Method::PUT);
        req.headers_mut()
            .insert("idempotency-key", HeaderValue::from_static("k"));
        let res = send(builder().build().unwrap(), &upstream, req)
            .await
            .unwrap();
        assert_eq!(res.status(), code);
        assert_eq!(upstream.calls(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_are_limited() {
    let upstream = Upstream::new((0..10).map(|_| Reply::status(503)));
    let res = send(
        builder().max_attempts(4).build().unwrap(),
        &upstream,
        request(Method::GET),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(upstream.calls(), 4);
    let info = RetryInfo::of(&res);
    assert_eq!(info.attempts(), 4);
    assert_eq!(info.stopped(), Some(StopReason::AttemptsExhausted));
}

#[tokio::test(start_paused = true)]
async fn retry_after_seconds_and_http_date_are_honoured() {
    let upstream = Upstream::new([Reply::with_header(503, "retry-after", "2")]);
    let start = Instant::now();
    send(builder().build().unwrap(), &upstream, request(Method::GET))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));

    // An HTTP-date two seconds after the policy's (fixed) wall clock.
    fn fixed_now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }
    let date = httpdate::fmt_http_date(fixed_now() + Duration::from_secs(2));
    let upstream = Upstream::new([Reply::with_header(429, "retry-after", &date)]);
    let layer = builder()
        .policy(HttpPolicy::new().clock(fixed_now))
        .build()
        .unwrap();
    let start = Instant::now();
    let res = send(layer, &upstream, request(Method::PUT)).await.unwrap();
    assert_eq!(
        res.status(),
        200,
        "an idempotent request is retried after a 429"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(2));

    // A POST is not: nothing promises that a 429 came before any processing.
    let upstream = Upstream::new([Reply::with_header(429, "retry-after", "1")]);
    let res = send(builder().build().unwrap(), &upstream, request(Method::POST))
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_longer_than_the_max_ends_the_retries_and_garbage_falls_back_to_the_backoff()
{
    // The server asks for 5 s, the layer waits at most 1 s: retrying after 1 s would go back
    // earlier than asked, so the 503 comes back at once with its header intact.
    for (asked, max) in [("5", 1), ("99999", 5)] {
        let upstream = Upstream::new([Reply::with_header(503, "retry-after", asked)]);
        let layer = builder()
            .retry_after_max(Duration::from_secs(max))
            .build()
            .unwrap();
        let start = Instant::now();
        let res = send(layer, &upstream, request(Method::GET)).await.unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["retry-after"], asked);
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(upstream.calls(), 1);
        assert_eq!(
            RetryInfo::of(&res).stopped(),
            Some(StopReason::ServerWaitTooLong)
        );
    }
    // Exactly the longest wait is still honoured, to the millisecond.
    let upstream = Upstream::new([Reply::with_header(503, "retry-after", "5")]);
    let layer = builder()
        .retry_after_max(Duration::from_secs(5))
        .build()
        .unwrap();
    let start = Instant::now();
    let res = send(layer, &upstream, request(Method::GET)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(start.elapsed(), Duration::from_secs(5));

    for garbage in ["soon", "-1", "1.5", "é"] {
        let reply = Reply::Status(503, vec![("retry-after", garbage.to_owned())]);
        let upstream = Upstream::new([reply]);
        let layer = builder().base_delay(10 * MS).build().unwrap();
        let start = Instant::now();
        let res = send(layer, &upstream, request(Method::GET)).await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            start.elapsed() <= 10 * MS,
            "{garbage:?}: {:?}",
            start.elapsed()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_on_other_statuses_is_ignored_unless_configured() {
    let upstream = Upstream::new([Reply::with_header(500, "retry-after", "3")]);
    let start = Instant::now();
    send(
        builder().base_delay(MS).build().unwrap(),
        &upstream,
        request(Method::GET),
    )
    .await
    .unwrap();
    assert!(start.elapsed() <= MS);

    let upstream = Upstream::new([Reply::with_header(500, "retry-after", "3")]);
    let layer = builder()
        .retry_after_statuses(&[StatusCode::INTERNAL_SERVER_ERROR])
        .build()
        .unwrap();
    let start = Instant::now();
    send(layer, &upstream, request(Method::GET)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_past_the_deadline_returns_the_response_at_once() {
    let upstream = Upstream::new([Reply::with_header(503, "retry-after", "2")]);
    let mut req = request(Method::GET);
    Deadline::after(Duration::from_secs(1)).apply(&mut req);
    let start = Instant::now();
    let res = send(builder().build().unwrap(), &upstream, req)
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(res.status(), 503);
    assert_eq!(RetryInfo::of(&res).stopped(), Some(StopReason::Deadline));
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn backoff_that_cannot_fit_the_deadline_is_not_slept() {
    let upstream = Upstream::new([
        Reply::Fail(Kind::Reset, Phase::AwaitHeaders),
        Reply::Fail(Kind::Reset, Phase::AwaitHeaders),
    ]);
    let layer = builder()
        .base_delay(Duration::from_millis(300))
        .max_delay(Duration::from_secs(10))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let mut req = request(Method::GET);
    Deadline::after(Duration::from_millis(500)).apply(&mut req);
    let start = Instant::now();
    let err = send(layer, &upstream, req).await.unwrap_err();
    // 300 ms fits, the next 600 ms does not: the second failure comes back at 300 ms.
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(err.kind(), Kind::Reset);
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_ambient_deadline_is_honoured_like_one_on_the_request() {
    // The deadline layer carries its deadline ambiently (no allocation); the retry inside it
    // must see it all the same.
    let upstream = Upstream::new([
        Reply::Fail(Kind::Reset, Phase::AwaitHeaders),
        Reply::Fail(Kind::Reset, Phase::AwaitHeaders),
    ]);
    let layer = builder()
        .base_delay(Duration::from_millis(300))
        .max_delay(Duration::from_secs(10))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let start = Instant::now();
    let call = send(layer, &upstream, request(Method::GET));
    let err = backstop_deadline::ambient::scope(Deadline::after(Duration::from_millis(500)), call)
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(err.kind(), Kind::Reset);
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn grpc_pushback_is_honoured_and_a_negative_one_stops() {
    let upstream = Upstream::new([Reply::Status(
        200,
        vec![
            ("grpc-status", "14".into()),
            ("grpc-retry-pushback-ms", "250".into()),
        ],
    )]);
    let layer = builder().policy(GrpcPolicy::new()).build().unwrap();
    let mut req = request(Method::POST);
    req.extensions_mut().insert(RetryOverride::Idempotent);
    let start = Instant::now();
    send(layer.clone(), &upstream, req).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(upstream.calls(), 2);

    let upstream = Upstream::new([Reply::Status(
        200,
        vec![
            ("grpc-status", "14".into()),
            ("grpc-retry-pushback-ms", "-1".into()),
        ],
    )]);
    let mut req = request(Method::POST);
    req.extensions_mut().insert(RetryOverride::Idempotent);
    send(layer.clone(), &upstream, req).await.unwrap();
    assert_eq!(upstream.calls(), 1);

    // Garbage means "do not retry" too (gRPC A6), and so does a pushback longer than the max.
    for (pushback, max) in [("soon", 30), ("2000", 1)] {
        let upstream = Upstream::new([Reply::Status(
            200,
            vec![
                ("grpc-status", "14".into()),
                ("grpc-retry-pushback-ms", pushback.into()),
            ],
        )]);
        let layer = builder()
            .policy(GrpcPolicy::new())
            .retry_after_max(Duration::from_secs(max))
            .build()
            .unwrap();
        let mut req = request(Method::POST);
        req.extensions_mut().insert(RetryOverride::Idempotent);
        let start = Instant::now();
        let res = send(layer, &upstream, req).await.unwrap();
        assert_eq!(upstream.calls(), 1, "{pushback}");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(res.headers()["grpc-retry-pushback-ms"], pushback);
    }
}

#[tokio::test(start_paused = true)]
async fn a_local_rejection_ends_the_call_at_once_and_spends_no_budget() {
    for kind in [Kind::BreakerOpen, Kind::Overloaded] {
        // A budget with no reserve and a 100 % ratio: one deposit (this request) allows exactly
        // one retry, so a spent withdrawal would show.
        let budget = RetryBudget::builder()
            .ratio(1.0)
            .min_per_second(0)
            .build()
            .unwrap();
        let layer = builder().budget(budget.clone()).build().unwrap();
        let upstream = Upstream::new([Reply::Fail(kind, Phase::Local)]);
        let start = Instant::now();
        let err = send(layer, &upstream, request(Method::GET))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), kind);
        assert_eq!(start.elapsed(), Duration::ZERO, "no backoff slept");
        assert_eq!(upstream.calls(), 1);
        let info = RetryInfo::of_error(&err).unwrap();
        assert_eq!(info.attempts(), 1);
        assert_eq!(info.stopped(), Some(StopReason::RejectedLocally));
        assert!(budget.try_withdraw(), "{kind:?}: the budget was spent");
    }

    // Too little time left to send at all: stopped for the deadline, not as a rejection.
    let upstream = Upstream::new([Reply::Fail(
        Kind::TimedOut(backstop_classify::Timer::Deadline),
        Phase::Local,
    )]);
    let err = send(builder().build().unwrap(), &upstream, request(Method::GET))
        .await
        .unwrap_err();
    assert_eq!(
        RetryInfo::of_error(&err).and_then(|info| info.stopped()),
        Some(StopReason::Deadline)
    );
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_returns_the_real_failure_with_the_reason_beside_it() {
    let budget = support::spent_budget();
    let layer = builder().budget(budget).build().unwrap();
    let upstream = Upstream::new([Reply::Fail(Kind::Refused, Phase::Connect)]);
    let err = send(layer.clone(), &upstream, request(Method::GET))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Refused);
    assert_eq!(err.attempts(), Some(1));
    assert_eq!(
        RetryInfo::of_error(&err).and_then(|info| info.stopped()),
        Some(StopReason::BudgetExhausted)
    );
    assert_eq!(upstream.calls(), 1);

    let upstream = Upstream::new([Reply::status(503)]);
    let res = send(layer, &upstream, request(Method::GET)).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        RetryInfo::of(&res).stopped(),
        Some(StopReason::BudgetExhausted)
    );
}

/// Counts the warnings logged on the thread it is set on.
#[tokio::test(start_paused = true)]
async fn a_budget_allows_its_fraction_of_requests() {
    let budget = RetryBudget::builder()
        .ratio(0.5)
        .min_per_second(0)
        .build()
        .unwrap();
    let layer = builder().budget(budget).max_attempts(2).build().unwrap();
    // Ten requests fail once each: deposits of 10 × 0.5 allow 5 retries in all.
    let upstream = Upstream::new((0..20).map(|_| Reply::status(503)));
    for _ in 0..10 {
        send(layer.clone(), &upstream, request(Method::GET))
            .await
            .unwrap();
    }
    assert_eq!(upstream.calls(), 15);
}

#[tokio::test(start_paused = true)]
async fn a_classify_outcome_in_the_extensions_wins_over_the_status() {
    // A ClassifyLayer inside said this 200 is a failure (say, an error in a header) ...
    let failing = Outcome::Failure(backstop_classify::Failure::new(
        Kind::TimedOut(Timer::Attempt),
        Phase::AwaitHeaders,
    ));
    // ... and this 503 a success.
    let replies = [(200, failing), (503, Outcome::Success)];
    // Shared by every clone of the service: retries run on a clone of it.
    let replies = std::sync::Arc::new(std::sync::Mutex::new(replies.into_iter()));
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = service_fn(move |_req: Request<backstop_retry::ReplayBody<Chunked>>| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (code, outcome) = replies
            .lock()
            .unwrap()
            .next()
            .unwrap_or((200, Outcome::Success));
        async move {
            let mut res = Response::new(());
            *res.status_mut() = StatusCode::from_u16(code).unwrap();
            res.extensions_mut().insert(outcome);
            Ok::<_, Error>(res)
        }
    });
    let res = builder()
        .build()
        .unwrap()
        .layer(svc)
        .oneshot(request(Method::GET))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_attempt_header_numbers_each_attempt() {
    let upstream = Upstream::new([Reply::status(503), Reply::status(502)]);
    let layer = builder()
        .attempt_header(http::HeaderName::from_static("x-attempt"))
        .build()
        .unwrap();
    send(layer, &upstream, request(Method::GET)).await.unwrap();
    let attempts: Vec<_> = upstream
        .seen()
        .iter()
        .map(|s| s.headers["x-attempt"].clone())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
}

#[tokio::test(start_paused = true)]
async fn a_successful_head_commits_even_if_its_body_fails_later() {
    #[derive(Default)]
    struct FailingBody;
    impl http_body::Body for FailingBody {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            std::task::Poll::Ready(Some(Err(std::io::ErrorKind::ConnectionReset.into())))
        }
    }
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = service_fn(move |_req: Request<backstop_retry::ReplayBody<Chunked>>| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Ok::<_, Error>(Response::new(FailingBody)) }
    });
    let res = builder()
        .build()
        .unwrap()
        .layer(svc)
        .oneshot(request(Method::GET))
        .await
        .unwrap();
    use http_body_util::BodyExt;
    assert!(res.into_body().collect().await.is_err());
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn invalid_configurations_are_rejected_naming_the_field() {
    let field = |b: RetryLayerBuilder| b.build().unwrap_err().field().to_owned();
    assert_eq!(field(RetryLayer::builder().max_attempts(0)), "max_attempts");
    assert_eq!(
        field(RetryLayer::builder().max_attempts(11)),
        "max_attempts"
    );
    assert_eq!(
        field(
            RetryLayer::builder()
                .base_delay(Duration::from_secs(10))
                .max_delay(Duration::from_secs(1))
        ),
        "base_delay"
    );
    assert_eq!(
        field(RetryLayer::builder().max_delay(Duration::from_secs(7200))),
        "max_delay"
    );
    assert_eq!(
        field(RetryLayer::builder().retry_after_max(Duration::from_secs(7200))),
        "retry_after_max"
    );
    assert_eq!(
        field(RetryLayer::builder().replay_limit(usize::MAX)),
        "replay_limit"
    );
    assert_eq!(
        field(
            RetryLayer::builder().attempt_header(http::HeaderName::from_static("idempotency-key"))
        ),
        "attempt_header"
    );
    assert!(RetryLayer::builder().max_attempts(10).build().is_ok());
}

/// The exported bounds are the ones `build` enforces, ends included: code validating its own
/// configuration with them (the facade's `Policy`) accepts exactly what the layer accepts.
#[test]
fn the_exported_bounds_are_the_ones_build_enforces() {
    use backstop_retry::{
        BUDGET_RATIO_RANGE, BUDGET_WINDOW_RANGE, MAX_ATTEMPTS_RANGE, MAX_BACKOFF_CAP,
        MAX_BUDGET_MIN_PER_SECOND, MAX_REPLAY_LIMIT,
    };
    let field = |b: RetryLayerBuilder| b.build().err().map(|e| e.field().to_owned());
    let attempts = |n| field(RetryLayer::builder().max_attempts(n));
    assert_eq!(attempts(*MAX_ATTEMPTS_RANGE.start()), None);
    assert_eq!(attempts(*MAX_ATTEMPTS_RANGE.end()), None);
    assert_eq!(
        attempts(MAX_ATTEMPTS_RANGE.start() - 1).as_deref(),
        Some("max_attempts")
    );
    assert_eq!(
        attempts(MAX_ATTEMPTS_RANGE.end() + 1).as_deref(),
        Some("max_attempts")
    );

    let max_delay = |d| field(RetryLayer::builder().max_delay(d));
    assert_eq!(max_delay(MAX_BACKOFF_CAP), None);
    assert_eq!(
        max_delay(MAX_BACKOFF_CAP + MS).as_deref(),
        Some("max_delay")
    );
    let server_wait = |d| field(RetryLayer::builder().retry_after_max(d));
    assert_eq!(server_wait(MAX_BACKOFF_CAP), None);
    assert_eq!(
        server_wait(MAX_BACKOFF_CAP + MS).as_deref(),
        Some("retry_after_max")
    );
    let replay = |n| field(RetryLayer::builder().replay_limit(n));
    assert_eq!(replay(MAX_REPLAY_LIMIT), None);
    assert_eq!(
        replay(MAX_REPLAY_LIMIT + 1).as_deref(),
        Some("replay_limit")
    );

    let budget =
        |b: backstop_retry::RetryBudgetBuilder| b.build().err().map(|e| e.field().to_owned());
    let ratio = |r| budget(RetryBudget::builder().ratio(r));
    assert_eq!(ratio(*BUDGET_RATIO_RANGE.start()), None);
    assert_eq!(ratio(*BUDGET_RATIO_RANGE.end()), None);
    assert_eq!(
        ratio(BUDGET_RATIO_RANGE.end() + 0.001).as_deref(),
        Some("budget.ratio")
    );
    assert_eq!(ratio(-0.001).as_deref(), Some("budget.ratio"));
    let floor = |n| budget(RetryBudget::builder().min_per_second(n));
    assert_eq!(floor(MAX_BUDGET_MIN_PER_SECOND), None);
    assert_eq!(
        floor(MAX_BUDGET_MIN_PER_SECOND + 1).as_deref(),
        Some("budget.min_per_second")
    );
    let window = |d| budget(RetryBudget::builder().window(d));
    assert_eq!(window(*BUDGET_WINDOW_RANGE.start()), None);
    assert_eq!(window(*BUDGET_WINDOW_RANGE.end()), None);
    assert_eq!(
        window(*BUDGET_WINDOW_RANGE.start() - MS).as_deref(),
        Some("budget.window")
    );
    assert_eq!(
        window(*BUDGET_WINDOW_RANGE.end() + MS).as_deref(),
        Some("budget.window")
    );
}

#[tokio::test(start_paused = true)]
async fn poll_ready_errors_are_classified() {
    let mut svc = builder().build().unwrap().layer(tower::service_fn(
        |_req: Request<backstop_retry::ReplayBody<Chunked>>| async {
            Ok::<_, std::io::Error>(Response::new(()))
        },
    ));
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let _ = HeaderMap::new();
}

#[tokio::test(start_paused = true)]
async fn a_failing_host_cannot_spend_the_retries_of_another() {
    let template = RetryBudget::builder().ratio(0.0).min_per_second(1);
    // Floor of 1/s over 10 s: ten retries per host.
    let layer = builder()
        .budget_per_host(template)
        .max_attempts(2)
        .build()
        .unwrap();
    let upstream = Upstream::new((0..100).map(|_| Reply::status(503)));
    let to = |host: &str| {
        Request::get(format!("http://{host}/x"))
            .body(Chunked::empty())
            .unwrap()
    };
    for _ in 0..30 {
        send(layer.clone(), &upstream, to("a.test")).await.unwrap();
    }
    assert_eq!(upstream.calls(), 30 + 10);
    let upstream = Upstream::new([Reply::status(503)]);
    let res = send(layer, &upstream, to("b.test")).await.unwrap();
    assert_eq!(res.status(), 200, "host b still has its own retries");
}

#[tokio::test(start_paused = true)]
async fn a_single_attempt_stops_because_the_attempts_ran_out() {
    let upstream = Upstream::new([Reply::Fail(Kind::Refused, Phase::Connect)]);
    let err = send(
        builder().max_attempts(1).build().unwrap(),
        &upstream,
        request(Method::GET),
    )
    .await
    .unwrap_err();
    assert_eq!(
        RetryInfo::of_error(&err).and_then(|info| info.stopped()),
        Some(StopReason::AttemptsExhausted)
    );

    // An override that forbids retrying is a judgement, not a count.
    let upstream = Upstream::new([Reply::Fail(Kind::Refused, Phase::Connect)]);
    let mut req = request(Method::GET);
    req.extensions_mut().insert(RetryOverride::NeverRetry);
    let err = send(builder().build().unwrap(), &upstream, req)
        .await
        .unwrap_err();
    assert_eq!(
        RetryInfo::of_error(&err).and_then(|info| info.stopped()),
        Some(StopReason::NotRetryable)
    );
}
