//! What the retry layer reports to `tracing`: one `http.client.attempt` span per attempt, under
//! the span the call is polled in, and the retry events. In a binary of its own: tracing caches
//! each callsite's interest process-wide, and every test here installs a capturing subscriber
//! (`backstop_testing::capture::Capture`) on its own thread.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use backstop_classify::{Error, Kind, Phase};
use backstop_retry::{RetryInfo, RetryLayer, StopReason};
use backstop_testing::capture::{Capture, Value};
use bytes::Bytes;
use http::{Request, Response};
use support::{Chunked, Reply, Upstream};
use tower::{Layer, Service, ServiceExt, service_fn};
use tracing::{Instrument, Level};

const ATTEMPT: &str = "http.client.attempt";

type Res = Result<Response<http_body_util::Full<Bytes>>, Error>;

fn get(uri: &str) -> Request<Chunked> {
    Request::get(uri).body(Chunked::empty()).unwrap()
}

/// Sends `req` through `layer` to `upstream`, polled inside a span named "test.call".
async fn call(layer: RetryLayer, upstream: &Upstream, req: Request<Chunked>) -> Res {
    let up = upstream.clone();
    let svc = layer.layer(service_fn(move |req| up.clone().handle(req)));
    svc.oneshot(req)
        .instrument(tracing::info_span!("test.call"))
        .await
}

fn u64_of(value: Option<&Value>) -> Option<u64> {
    match value {
        Some(Value::U64(n)) => Some(*n),
        other => panic!("not a u64: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_retried_twice_has_three_attempt_spans_and_two_retry_events() {
    let (capture, _guard) = Capture::install();
    let upstream = Upstream::new([Reply::status(503), Reply::status(503), Reply::status(200)]);
    let layer = RetryLayer::builder().seed(1).build().unwrap();
    let req = get("http://user:secret@127.0.0.1:8080/items?token=abc&page=2");
    let res = call(layer, &upstream, req).await.unwrap();
    assert_eq!(res.status(), 200);
    let info = RetryInfo::of(&res);
    assert_eq!(info.attempts(), 3);

    let spans = capture.spans_named(ATTEMPT);
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let resend: Vec<Option<&Value>> = spans
        .iter()
        .map(|s| s.get("http.request.resend_count"))
        .collect();
    assert_eq!(resend, [None, Some(&Value::U64(1)), Some(&Value::U64(2))]);
    let statuses: Vec<Option<u64>> = spans
        .iter()
        .map(|s| u64_of(s.get("http.response.status_code")))
        .collect();
    assert_eq!(statuses, [Some(503), Some(503), Some(200)]);
    let errors: Vec<Option<&Value>> = spans.iter().map(|s| s.get("error.type")).collect();
    let http_status = Value::Str("http_status".into());
    assert_eq!(errors, [Some(&http_status), Some(&http_status), None]);
    for span in &spans {
        assert_eq!(span.parent, Some("test.call"));
        assert_eq!(span.target, "backstop_retry");
        assert_eq!(span.get("otel.name"), Some(&Value::Str("GET".into())));
        assert_eq!(span.get("otel.kind"), Some(&Value::Str("client".into())));
        assert_eq!(
            span.get("http.request.method"),
            Some(&Value::Str("GET".into()))
        );
        assert_eq!(
            span.get("server.address"),
            Some(&Value::Str("127.0.0.1".into()))
        );
        assert_eq!(span.get("server.port"), Some(&Value::U64(8080)));
        assert_eq!(
            span.get("url.full").map(Value::text).as_deref(),
            Some("http://REDACTED:REDACTED@127.0.0.1:8080/items?token=REDACTED&page=REDACTED")
        );
    }

    let events = capture.events_with("retry scheduled");
    assert_eq!(events.len(), 2, "{events:#?}");
    // Seed 1, full jitter from 50 ms: the delays RetryInfo reports, exactly.
    let delays: Vec<u64> = info.delays().map(|d| d.as_millis() as u64).collect();
    assert_eq!(delays, [1, 83]);
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.level, Level::INFO);
        assert_eq!(event.target, "backstop_retry");
        assert_eq!(event.parent, Some("test.call"));
        assert_eq!(event.get("reason"), Some(&http_status));
        assert_eq!(event.get("delay_ms"), Some(&Value::U64(delays[i])));
        assert_eq!(event.get("resend_count"), Some(&Value::U64(i as u64 + 1)));
    }
    assert!(capture.events_with("retry stopped").is_empty());
}

#[tokio::test(start_paused = true)]
async fn attempt_spans_follow_the_span_the_future_is_polled_in() {
    let (capture, _guard) = Capture::install();
    let upstream = Upstream::new([Reply::status(503), Reply::status(200)]);
    let up = upstream.clone();
    let mut svc = RetryLayer::builder()
        .seed(1)
        .build()
        .unwrap()
        .layer(service_fn(move |req| up.clone().handle(req)));
    // Called outside any span, then polled inside one.
    let future = svc.ready().await.unwrap().call(get("https://api.test/x"));
    let res = future.instrument(tracing::info_span!("test.call")).await;
    assert_eq!(res.unwrap().status(), 200);
    let spans = capture.spans_named(ATTEMPT);
    assert_eq!(spans.len(), 2);
    assert!(spans.iter().all(|s| s.parent == Some("test.call")));
    // The scheme's default port.
    assert_eq!(spans[0].get("server.port"), Some(&Value::U64(443)));
}

#[tokio::test(start_paused = true)]
async fn a_request_that_may_not_be_retried_still_gets_its_span() {
    let (capture, _guard) = Capture::install();
    let upstream = Upstream::new([Reply::status(503)]);
    let layer = RetryLayer::builder().max_attempts(1).build().unwrap();
    let res = call(layer, &upstream, get("http://127.0.0.1:9/"))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let spans = capture.spans_named(ATTEMPT);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].parent, Some("test.call"));
    assert_eq!(spans[0].get("http.request.resend_count"), None);
    assert_eq!(
        spans[0].get("http.response.status_code"),
        Some(&Value::U64(503))
    );
    // The caller gets the response: the stop is told at debug level.
    let stopped = capture.events_with("retry stopped");
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].level, Level::DEBUG);
    assert_eq!(
        stopped[0].get("stop"),
        Some(&Value::Str("attempts_exhausted".into()))
    );
    assert_eq!(
        stopped[0].get("reason"),
        Some(&Value::Str("http_status".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn errors_set_error_type_and_a_failed_call_says_why_retrying_stopped() {
    let (capture, _guard) = Capture::install();
    let refused = Reply::Fail(Kind::Refused, Phase::Connect);
    let upstream = Upstream::new([refused.clone(), refused.clone(), refused]);
    let layer = RetryLayer::builder().seed(1).build().unwrap();
    let err = call(layer, &upstream, get("http://127.0.0.1:9/"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Refused);
    let spans = capture.spans_named(ATTEMPT);
    assert_eq!(spans.len(), 3);
    for span in &spans {
        assert_eq!(span.get("error.type"), Some(&Value::Str("refused".into())));
        assert_eq!(span.get("http.response.status_code"), None);
    }
    assert_eq!(capture.events_with("retry scheduled").len(), 2);
    let stopped = capture.events_with("retry stopped");
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].level, Level::INFO);
    assert_eq!(stopped[0].parent, Some("test.call"));
    assert_eq!(
        stopped[0].get("stop"),
        Some(&Value::Str("attempts_exhausted".into()))
    );
    assert_eq!(
        stopped[0].get("reason"),
        Some(&Value::Str("refused".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_is_a_warning_naming_the_failure() {
    let (capture, _guard) = Capture::install();
    let budget = support::spent_budget();
    let layer = RetryLayer::builder().budget(budget).build().unwrap();
    let upstream = Upstream::new([Reply::status(502)]);
    let res = call(layer, &upstream, get("http://127.0.0.1:9/"))
        .await
        .unwrap();
    assert_eq!(
        RetryInfo::of(&res).stopped(),
        Some(StopReason::BudgetExhausted)
    );
    let exhausted = capture.events_with("retry budget exhausted");
    assert_eq!(exhausted.len(), 1, "{exhausted:#?}");
    assert_eq!(exhausted[0].level, Level::WARN);
    assert_eq!(exhausted[0].target, "backstop_retry");
    assert_eq!(
        exhausted[0].get("reason"),
        Some(&Value::Str("http_status".into()))
    );
    let stopped = capture.events_with("retry stopped");
    assert_eq!(
        stopped[0].get("stop"),
        Some(&Value::Str("budget_exhausted".into()))
    );
}
