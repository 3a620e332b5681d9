//! The client side: the ceiling over the whole call, attempt timeouts, the deadline extension,
//! propagation headers and the response body, all on tokio's paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use backstop_classify::{Error, Kind, Phase, Retryable, Timer};
use backstop_deadline::Deadline;
use backstop_deadline::propagate::{DEFAULT_TIMEOUT_HEADER, Propagation};
use backstop_deadline::{AttemptTimeoutLayer, Carry, Covers, DeadlineLayer, InnerWaits, ambient};
use http::{HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use support::{Behaviour, Drip, LocalRetry, Recorder, upstream};
use tokio::time::Instant;
use tower::{Layer, ServiceBuilder, ServiceExt};

const MS: fn(u64) -> Duration = Duration::from_millis;

fn deadline(timeout: Duration) -> DeadlineLayer {
    DeadlineLayer::builder().timeout(timeout).build().unwrap()
}

/// `request-timeout-ms` on every plain HTTP request, turned on explicitly (the default writes
/// none).
fn everywhere() -> Propagation {
    Propagation::new().header(DEFAULT_TIMEOUT_HEADER)
}

fn propagating_attempt(timeout: Duration) -> AttemptTimeoutLayer {
    AttemptTimeoutLayer::builder()
        .timeout(timeout)
        .propagation(everywhere())
        .build()
        .unwrap()
}

fn propagating_deadline(timeout: Duration) -> DeadlineLayer {
    DeadlineLayer::builder()
        .timeout(timeout)
        .propagation(everywhere())
        .build()
        .unwrap()
}

fn get() -> Request<()> {
    Request::builder().method(Method::GET).body(()).unwrap()
}

fn kind_of(err: &Error) -> Kind {
    err.kind()
}

#[tokio::test(start_paused = true)]
async fn attempts_that_keep_failing_stop_at_the_deadline_not_at_attempt_n() {
    let recorder = Recorder::default();
    // Each attempt stalls until its 300 ms attempt timeout; 50 ms backoff; 10 attempts allowed
    // would take 3.45 s, but the deadline is 1 s.
    let attempt = AttemptTimeoutLayer::new(MS(300));
    let retry = LocalRetry::new(
        attempt.layer(upstream(recorder.clone(), Behaviour::Stall)),
        10,
        MS(50),
    );
    let failures = retry.failures.clone();
    let svc = deadline(Duration::from_secs(1)).layer(retry);

    let start = Instant::now();
    let err = svc.oneshot(get()).await.unwrap_err();

    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "stopped at the deadline"
    );
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline));
    assert_eq!(err.retryable(), Retryable::Never);
    // Attempts at 0, 350 and 700 ms; the third is cut by the deadline, not by its own timer.
    let starts: Vec<_> = recorder.seen().iter().map(|s| s.at - start).collect();
    assert_eq!(starts, [MS(0), MS(350), MS(700)]);
    let failures = failures.lock().unwrap();
    let kinds: Vec<_> = failures.iter().map(kind_of).collect();
    assert_eq!(
        kinds,
        [
            Kind::TimedOut(Timer::Attempt),
            Kind::TimedOut(Timer::Attempt),
            Kind::TimedOut(Timer::Deadline),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_holds_from_the_call_after_an_attempt_timer_stood_in_for_it() {
    // The attempt's timer (300 ms) fires first; once the attempt has given up and the call waits
    // on something without a timer, the deadline layer's own timer (the default,
    // `InnerWaits::Unbounded`) must still fire 1 s after the call.
    let recorder = Recorder::default();
    let attempt =
        AttemptTimeoutLayer::new(MS(300)).layer(upstream(recorder.clone(), Behaviour::Stall));
    let inner = tower::service_fn(move |req: Request<()>| {
        let first = attempt.clone().oneshot(req);
        async move {
            let failed = first.await.unwrap_err();
            assert_eq!(failed.kind(), Kind::TimedOut(Timer::Attempt));
            std::future::pending::<Result<Response<String>, Error>>().await
        }
    });
    let svc = deadline(Duration::from_secs(1)).layer(inner);

    let start = Instant::now();
    // Bounded: a deadline that never armed would otherwise leave the call pending for ever.
    let err = tokio::time::timeout(Duration::from_secs(5), svc.oneshot(get()))
        .await
        .expect("the deadline fired")
        .unwrap_err();

    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline));
    assert_eq!(recorder.count(), 1);
}

/// Told that the attempt timeout inside bounds every wait, the deadline layer registers no timer
/// of its own: the attempt's, armed for the earlier of its bound and the deadline, ends the call
/// at the deadline with the deadline's error, whichever bound is the shorter.
#[tokio::test(start_paused = true)]
async fn with_waits_bounded_inside_the_attempt_timer_ends_the_call_at_the_deadline() {
    let cases = [
        (
            MS(300),
            vec![
                Kind::TimedOut(Timer::Attempt),
                Kind::TimedOut(Timer::Attempt),
                Kind::TimedOut(Timer::Deadline),
            ],
        ),
        (
            Duration::from_secs(5),
            vec![Kind::TimedOut(Timer::Deadline)],
        ),
    ];
    for (attempt, expected) in cases {
        let recorder = Recorder::default();
        let mut retry = LocalRetry::new(
            AttemptTimeoutLayer::new(attempt).layer(upstream(recorder.clone(), Behaviour::Stall)),
            10,
            MS(50),
        );
        // As backstop's retry: no backoff sleep past the deadline.
        retry.deadline_aware = true;
        let failures = retry.failures.clone();
        let svc = DeadlineLayer::builder()
            .timeout(Duration::from_secs(1))
            .inner_waits(InnerWaits::BoundedByAttemptTimeout)
            .build()
            .unwrap()
            .layer(retry);

        let start = Instant::now();
        let err = svc.oneshot(get()).await.unwrap_err();

        assert_eq!(start.elapsed(), Duration::from_secs(1), "{attempt:?}");
        assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline), "{attempt:?}");
        let kinds: Vec<_> = failures.lock().unwrap().iter().map(kind_of).collect();
        assert_eq!(kinds, expected, "{attempt:?}");
    }
}

/// The other side of that promise: the layer registers no timer for the head, so a wait inside
/// that no attempt timeout bounds outlives the deadline (the default layer cuts it, see
/// `a_slow_head_fails_at_the_deadline_in_either_mode`).
#[tokio::test(start_paused = true)]
async fn with_waits_bounded_inside_the_layer_registers_no_timer_of_its_own() {
    let svc = DeadlineLayer::builder()
        .timeout(Duration::from_secs(1))
        .inner_waits(InnerWaits::BoundedByAttemptTimeout)
        .build()
        .unwrap()
        .layer(upstream(
            Recorder::default(),
            Behaviour::After(Duration::from_secs(3)),
        ));
    let start = Instant::now();
    let res = svc.oneshot(get()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(res.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_backoff_sleep_crossing_the_deadline_is_cut_short_without_another_attempt() {
    let recorder = Recorder::default();
    // Attempts fail at once; 400 ms backoff: attempts at 0, 400, 800 ms, and the sleep that would
    // end at 1200 ms is cut at the 1 s deadline.
    let retry = LocalRetry::new(upstream(recorder.clone(), Behaviour::Reset), 10, MS(400));
    let svc = deadline(Duration::from_secs(1)).layer(retry);

    let start = Instant::now();
    let err = svc.oneshot(get()).await.unwrap_err();

    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline));
    assert_eq!(
        recorder.count(),
        3,
        "no attempt started after the cut sleep"
    );
    // Settle any timer that might still start an attempt: nothing more happens.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(recorder.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_retry_reading_the_deadline_fails_before_sleeping_past_it() {
    // Carried ambiently (the default) or also in the extensions: retry sees it either way.
    for carry in [Carry::TaskLocal, Carry::Extensions] {
        let recorder = Recorder::default();
        let mut retry = LocalRetry::new(upstream(recorder.clone(), Behaviour::Reset), 10, MS(400));
        retry.deadline_aware = true;
        let layer = DeadlineLayer::builder()
            .timeout(Duration::from_secs(1))
            .carry(carry)
            .build()
            .unwrap();
        let svc = layer.layer(retry);

        let start = Instant::now();
        let err = svc.oneshot(get()).await.unwrap_err();

        // It gave up right after the third attempt instead of sleeping into the deadline.
        assert_eq!(start.elapsed(), MS(800), "{carry:?}");
        assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline));
        assert_eq!(recorder.count(), 3);
        let seen = recorder.seen();
        let expected = Deadline::at(start + Duration::from_secs(1));
        assert!(
            seen.iter().all(|s| s.current == Some(expected)),
            "{carry:?}"
        );
        let in_extensions = (carry == Carry::Extensions).then_some(expected);
        assert!(
            seen.iter().all(|s| s.deadline == in_extensions),
            "{carry:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_attempt_timeout_is_the_smaller_of_its_own_and_the_time_left() {
    let recorder = Recorder::default();
    let svc = ServiceBuilder::new()
        .layer(deadline(Duration::from_secs(1)))
        .layer(propagating_attempt(Duration::from_secs(5)))
        .service(upstream(recorder.clone(), Behaviour::Stall));

    let start = Instant::now();
    let err = svc.oneshot(get()).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline));
    // The attempt told the callee about the 1 s it really had, not its own 5 s.
    let header = recorder.seen()[0].headers["request-timeout-ms"].clone();
    assert_eq!(header, "990");

    // Alone (no deadline), the attempt timer is its own.
    let err = AttemptTimeoutLayer::new(MS(250))
        .layer(upstream(Recorder::default(), Behaviour::Stall))
        .oneshot(get())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Attempt));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_timeout_is_retryable_only_for_idempotent_requests() {
    let svc =
        AttemptTimeoutLayer::new(MS(100)).layer(upstream(Recorder::default(), Behaviour::Stall));
    let start = Instant::now();
    let err = svc.oneshot(get()).await.unwrap_err();
    assert_eq!(start.elapsed(), MS(100));
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Attempt));
    assert_eq!(err.phase(), Phase::AwaitHeaders);
    assert_eq!(err.retryable(), Retryable::IfIdempotent);
    assert!(err.failure().may_retry(true));
    assert!(!err.failure().may_retry(false));
}

#[tokio::test(start_paused = true)]
async fn a_post_whose_attempt_times_out_is_not_retried_by_the_loop() {
    let recorder = Recorder::default();
    let attempt = AttemptTimeoutLayer::new(MS(100));
    let retry = LocalRetry::new(
        attempt.layer(upstream(recorder.clone(), Behaviour::Stall)),
        5,
        MS(10),
    );
    let post = Request::builder().method(Method::POST).body(()).unwrap();
    let err = retry.oneshot(post).await.unwrap_err();
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Attempt));
    assert_eq!(recorder.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_effective_deadline_is_the_earliest_of_own_request_and_ambient() {
    let start = Instant::now();
    let cases = [
        // (own timeout, deadline on the request, ambient) -> expected
        (Some(MS(500)), None, None, MS(500)),
        (Some(MS(500)), Some(MS(200)), None, MS(200)),
        (Some(MS(500)), Some(MS(900)), None, MS(500)),
        (Some(MS(500)), None, Some(MS(300)), MS(300)),
        (None, Some(MS(700)), Some(MS(400)), MS(400)),
        (None, None, Some(MS(400)), MS(400)),
    ];
    for carry in [Carry::TaskLocal, Carry::Extensions] {
        for (own, on_request, in_scope, expected) in cases {
            let recorder = Recorder::default();
            let layer = match own {
                Some(t) => DeadlineLayer::builder().timeout(t),
                None => DeadlineLayer::builder(),
            };
            let svc = layer
                .carry(carry)
                .propagation(everywhere())
                .build()
                .unwrap()
                .layer(upstream(recorder.clone(), Behaviour::Ok));
            let mut req = get();
            if let Some(t) = on_request {
                Deadline::at(start + t).apply(&mut req);
            }
            let call = svc.oneshot(req);
            let res = match in_scope {
                Some(t) => ambient::scope(Deadline::at(start + t), call).await,
                None => call.await,
            };
            assert!(res.is_ok());
            let seen = &recorder.seen()[0];
            let case = format!("{carry:?} {own:?} {on_request:?} {in_scope:?}");
            assert_eq!(seen.current, Some(Deadline::at(start + expected)), "{case}");
            if carry == Carry::Extensions {
                assert_eq!(
                    seen.deadline,
                    Some(Deadline::at(start + expected)),
                    "{case}"
                );
            }
            let header = format!("{}", expected.as_millis() - 10);
            assert_eq!(
                seen.headers["request-timeout-ms"],
                header.as_str(),
                "{case}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn without_any_deadline_the_layer_is_transparent() {
    let recorder = Recorder::default();
    let svc = DeadlineLayer::inherit().layer(upstream(
        recorder.clone(),
        Behaviour::After(Duration::from_secs(3600)),
    ));
    let start = Instant::now();
    let res = svc.oneshot(get()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(3600));
    assert_eq!(res.into_body().into_inner(), "ok");
    let seen = &recorder.seen()[0];
    assert_eq!(seen.deadline, None);
    assert!(seen.headers.is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_expired_deadline_fails_fast_without_calling_inner() {
    let recorder = Recorder::default();
    let svc = DeadlineLayer::inherit().layer(upstream(recorder.clone(), Behaviour::Ok));
    let mut req = get();
    Deadline::after(MS(5)).apply(&mut req);
    tokio::time::sleep(MS(10)).await;
    let err = svc.oneshot(req).await.unwrap_err();
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline));
    assert_eq!(err.phase(), Phase::Local);
    assert_eq!(recorder.count(), 0);

    // Same for the attempt timeout reading an expired ambient deadline.
    let svc = AttemptTimeoutLayer::new(MS(100)).layer(upstream(recorder.clone(), Behaviour::Ok));
    let expired = Deadline::after(MS(1));
    tokio::time::sleep(MS(2)).await;
    let err = ambient::scope(expired, svc.oneshot(get()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline));
    assert_eq!(recorder.count(), 0);
}

#[tokio::test(start_paused = true)]
async fn less_time_left_than_the_margin_fails_locally() {
    let recorder = Recorder::default();
    let layer = |propagation: Propagation| {
        DeadlineLayer::builder()
            .propagation(propagation.margin(MS(50)))
            .build()
            .unwrap()
            .layer(upstream(recorder.clone(), Behaviour::Ok))
    };
    let request = || {
        let mut req = get();
        Deadline::after(MS(50)).apply(&mut req);
        req
    };
    let err = layer(everywhere()).oneshot(request()).await.unwrap_err();
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline));
    assert_eq!(err.phase(), Phase::Local);
    assert_eq!(recorder.count(), 0);
    // The margin is for a callee that is told: a request that gets no header goes out with the
    // 50 ms it has.
    assert!(layer(Propagation::new()).oneshot(request()).await.is_ok());
    assert_eq!(recorder.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn every_attempt_carries_the_time_left_minus_the_margin() {
    let recorder = Recorder::default();
    let attempt = AttemptTimeoutLayer::builder()
        .timeout(Duration::from_secs(10))
        .propagation(everywhere().margin(MS(25)))
        .build()
        .unwrap();
    let retry = LocalRetry::new(
        attempt.layer(upstream(recorder.clone(), Behaviour::Reset)),
        3,
        MS(300),
    );
    let svc = deadline(Duration::from_secs(2)).layer(retry);
    let _ = svc.oneshot(get()).await.unwrap_err();
    let headers: Vec<_> = recorder
        .seen()
        .iter()
        .map(|s| s.headers["request-timeout-ms"].to_str().unwrap().to_owned())
        .collect();
    // 2000 ms left at 0, 300 and 600 ms, minus 25 ms.
    assert_eq!(headers, ["1975", "1675", "1375"]);
}

#[tokio::test(start_paused = true)]
async fn grpc_requests_carry_grpc_timeout_and_a_custom_header_name_is_used() {
    let recorder = Recorder::default();
    let svc = DeadlineLayer::builder()
        .timeout(MS(2000))
        .propagation(Propagation::new().header(http::HeaderName::from_static(
            "x-envoy-expected-rq-timeout-ms",
        )))
        .build()
        .unwrap()
        .layer(upstream(recorder.clone(), Behaviour::Ok));
    let grpc = Request::builder()
        .header("content-type", "application/grpc+proto")
        .body(())
        .unwrap();
    svc.clone().oneshot(grpc).await.unwrap();
    svc.oneshot(get()).await.unwrap();
    let seen = recorder.seen();
    assert_eq!(seen[0].headers["grpc-timeout"], "1990000u");
    assert!(
        !seen[0]
            .headers
            .contains_key("x-envoy-expected-rq-timeout-ms")
    );
    assert_eq!(seen[1].headers["x-envoy-expected-rq-timeout-ms"], "1990");
    assert!(!seen[1].headers.contains_key("grpc-timeout"));
    assert!(!seen[1].headers.contains_key("request-timeout-ms"));
}

#[tokio::test(start_paused = true)]
async fn a_shorter_budget_already_on_the_request_is_kept() {
    let recorder = Recorder::default();
    let svc = propagating_deadline(Duration::from_secs(2))
        .layer(upstream(recorder.clone(), Behaviour::Ok));
    let mut req = get();
    req.headers_mut()
        .insert("request-timeout-ms", HeaderValue::from_static("300"));
    svc.clone().oneshot(req).await.unwrap();
    let mut longer = get();
    longer
        .headers_mut()
        .insert("request-timeout-ms", HeaderValue::from_static("99999"));
    svc.oneshot(longer).await.unwrap();
    let seen = recorder.seen();
    assert_eq!(seen[0].headers["request-timeout-ms"], "300");
    assert_eq!(seen[1].headers["request-timeout-ms"], "1990");
}

#[tokio::test(start_paused = true)]
async fn a_streaming_body_outliving_the_deadline_fails_mid_stream_when_covered() {
    let svc =
        deadline(Duration::from_secs(1)).layer(tower::service_fn(|_req: Request<()>| async {
            // Head at once; a frame every 300 ms, five of them: the body would end at 1.5 s.
            Ok::<_, Error>(Response::new(Drip::new(5, MS(300))))
        }));
    let start = Instant::now();
    let mut body = svc.oneshot(get()).await.unwrap().into_body();
    assert!(body.deadline().is_some());
    let mut frames = 0;
    let err = loop {
        match body.frame().await {
            Some(Ok(_)) => frames += 1,
            Some(Err(err)) => break err,
            None => panic!("the body ended instead of failing at the deadline"),
        }
    };
    assert_eq!(frames, 3, "frames at 300, 600 and 900 ms got through");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline));
    assert_eq!(err.phase(), Phase::ReadBody);
    assert!(body.frame().await.is_none(), "nothing after the failure");
}

#[tokio::test(start_paused = true)]
async fn a_streaming_body_is_untouched_when_the_deadline_covers_only_the_head() {
    let layer = DeadlineLayer::builder()
        .timeout(Duration::from_secs(1))
        .covers(Covers::Head)
        .build()
        .unwrap();
    let svc = layer.layer(tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Error>(Response::new(Drip::new(5, MS(300))))
    }));
    let start = Instant::now();
    let body = svc.oneshot(get()).await.unwrap().into_body();
    let bytes = body.collect().await.unwrap().to_bytes();
    assert_eq!(&bytes[..], b"xxxxx");
    assert_eq!(start.elapsed(), MS(1500));
}

#[tokio::test(start_paused = true)]
async fn a_slow_head_fails_at_the_deadline_in_either_mode() {
    for covers in [Covers::Body, Covers::Head] {
        let layer = DeadlineLayer::builder()
            .timeout(MS(700))
            .covers(covers)
            .build()
            .unwrap();
        let svc = layer.layer(upstream(Recorder::default(), Behaviour::After(MS(900))));
        let start = Instant::now();
        let err = svc.oneshot(get()).await.unwrap_err();
        assert_eq!(start.elapsed(), MS(700));
        assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline));
        assert_eq!(err.phase(), Phase::AwaitHeaders);
    }
}

#[tokio::test(start_paused = true)]
async fn the_task_local_carry_reaches_the_attempt_timeout_without_extensions() {
    let recorder = Recorder::default();
    let svc = ServiceBuilder::new()
        .layer(
            DeadlineLayer::builder()
                .timeout(MS(400))
                .carry(Carry::TaskLocal)
                .propagation(Propagation::disabled())
                .build()
                .unwrap(),
        )
        .layer(propagating_attempt(Duration::from_secs(5)))
        .service(upstream(recorder.clone(), Behaviour::Stall));
    let start = Instant::now();
    let err = svc.oneshot(get()).await.unwrap_err();
    assert_eq!(start.elapsed(), MS(400));
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline));
    let seen = &recorder.seen()[0];
    assert_eq!(seen.deadline, None, "nothing was put in the extensions");
    assert_eq!(seen.ambient, Some(Deadline::at(start + MS(400))));
    assert_eq!(
        seen.headers["request-timeout-ms"], "390",
        "the attempt layer still propagates"
    );
}

/// `new` never fails, as tower-http's layers: what the builders reject is accepted, clamped or
/// failed per call, as documented on each `new`.
#[tokio::test(start_paused = true)]
async fn the_infallible_constructors_take_any_duration_as_documented() {
    let grpc = || {
        Request::builder()
            .header("content-type", "application/grpc")
            .body(())
            .unwrap()
    };
    // A zero deadline fails every call at once, without calling the inner service.
    let recorder = Recorder::default();
    let err = DeadlineLayer::new(Duration::ZERO)
        .layer(upstream(recorder.clone(), Behaviour::Ok))
        .oneshot(get())
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.phase()),
        (Kind::TimedOut(Timer::Deadline), Phase::Local)
    );
    assert_eq!(recorder.count(), 0);
    // A zero attempt timeout fails an attempt that has to wait, at once.
    let start = Instant::now();
    let err = AttemptTimeoutLayer::new(Duration::ZERO)
        .layer(upstream(Recorder::default(), Behaviour::Stall))
        .oneshot(get())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Attempt));
    assert_eq!(start.elapsed(), Duration::ZERO);
    // Durations too long for the clock are clamped, not a panic: the deadline's to about 30
    // years, the attempt's to a day.
    let res = DeadlineLayer::new(Duration::MAX)
        .layer(upstream(Recorder::default(), Behaviour::After(MS(5))))
        .oneshot(get())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let start = Instant::now();
    let err = AttemptTimeoutLayer::new(Duration::MAX)
        .layer(upstream(Recorder::default(), Behaviour::Stall))
        .oneshot(get())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Attempt));
    assert_eq!(start.elapsed(), backstop_deadline::MAX_ATTEMPT_TIMEOUT);
    // A timeout shorter than the margin (10 ms) plus 1 ms cannot be told to a callee: requests
    // that are to carry a header (gRPC ones, by default) fail locally, the others are sent.
    let attempt =
        AttemptTimeoutLayer::new(MS(5)).layer(upstream(Recorder::default(), Behaviour::Ok));
    let err = attempt.clone().oneshot(grpc()).await.unwrap_err();
    assert_eq!(
        (err.kind(), err.phase()),
        (Kind::TimedOut(Timer::Deadline), Phase::Local)
    );
    assert!(attempt.oneshot(get()).await.is_ok());
    let deadline = DeadlineLayer::new(MS(5)).layer(upstream(Recorder::default(), Behaviour::Ok));
    let err = deadline.clone().oneshot(grpc()).await.unwrap_err();
    assert_eq!(
        (err.kind(), err.phase()),
        (Kind::TimedOut(Timer::Deadline), Phase::Local)
    );
    assert!(deadline.oneshot(get()).await.is_ok());
}

#[test]
fn invalid_configurations_are_rejected_naming_field_and_rule() {
    let err = DeadlineLayer::builder()
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(
        (err.field(), err.rule()),
        ("timeout", "must be greater than zero")
    );
    let err = DeadlineLayer::builder()
        .timeout(MS(10))
        .propagation(Propagation::new().margin(MS(10)))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "propagation.margin");
    assert!(err.to_string().contains("shorter than timeout"), "{err}");
    // A margin that would eat the timeout is fine when nothing is propagated.
    assert!(
        DeadlineLayer::builder()
            .timeout(MS(10))
            .propagation(Propagation::disabled().margin(MS(10)))
            .build()
            .is_ok()
    );
    let err = AttemptTimeoutLayer::builder().build().unwrap_err();
    assert_eq!(
        (err.field(), err.rule()),
        ("attempt_timeout", "must be set")
    );
    let attempt = |t| AttemptTimeoutLayer::builder().timeout(t).build();
    let err = attempt(Duration::ZERO).unwrap_err();
    assert_eq!(err.field(), "attempt_timeout");
    let err = attempt(Duration::from_secs(86_401)).unwrap_err();
    assert_eq!(err.rule(), "must be at most one day");
    let err = attempt(MS(5)).unwrap_err();
    assert_eq!(err.field(), "propagation.margin");
}

/// How the deadline reaches the attempt timeout in the bound tests.
#[derive(Debug, Clone, Copy)]
enum DeadlineFrom {
    /// A client `DeadlineLayer` outside, carrying it ambiently (its clock not yet started).
    LayerTaskLocal,
    /// A client `DeadlineLayer` outside, also in the extensions (its clock started in `call`).
    LayerExtensions,
    /// A server handler's ambient deadline.
    Ambient,
    /// A deadline put on the request by the caller.
    Request,
}

const DEADLINE_SOURCES: [DeadlineFrom; 4] = [
    DeadlineFrom::LayerTaskLocal,
    DeadlineFrom::LayerExtensions,
    DeadlineFrom::Ambient,
    DeadlineFrom::Request,
];

/// What a GET under a `deadline` (from `from`) and an `attempt` timeout, through a retry loop of
/// up to 3 attempts with no backoff, against a service that never answers, fails with; how long
/// it took; and each attempt's failure.
async fn bounded(
    from: DeadlineFrom,
    deadline: Duration,
    attempt: Duration,
) -> (Error, Duration, Vec<Kind>) {
    let attempt = AttemptTimeoutLayer::new(attempt);
    let retry = LocalRetry::new(
        attempt.layer(upstream(Recorder::default(), Behaviour::Stall)),
        3,
        Duration::ZERO,
    );
    let failures = retry.failures.clone();
    let start = Instant::now();
    let err = match from {
        DeadlineFrom::LayerTaskLocal | DeadlineFrom::LayerExtensions => {
            let carry = match from {
                DeadlineFrom::LayerTaskLocal => Carry::TaskLocal,
                _ => Carry::Extensions,
            };
            let layer = DeadlineLayer::builder()
                .timeout(deadline)
                .carry(carry)
                .build()
                .unwrap();
            layer.layer(retry).oneshot(get()).await.unwrap_err()
        }
        DeadlineFrom::Ambient => ambient::scope(Deadline::after(deadline), retry.oneshot(get()))
            .await
            .unwrap_err(),
        DeadlineFrom::Request => {
            let mut req = get();
            Deadline::after(deadline).apply(&mut req);
            retry.oneshot(req).await.unwrap_err()
        }
    };
    let kinds = failures.lock().unwrap().iter().map(kind_of).collect();
    (err, start.elapsed(), kinds)
}

#[tokio::test(start_paused = true)]
async fn an_attempt_bound_equal_to_the_deadline_times_out_as_the_deadline() {
    for from in DEADLINE_SOURCES {
        let (err, elapsed, failures) = bounded(from, MS(300), MS(300)).await;
        assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline), "{from:?}");
        assert_eq!(err.retryable(), Retryable::Never, "{from:?}");
        assert_eq!(elapsed, MS(300), "{from:?}");
        assert_eq!(
            failures,
            [Kind::TimedOut(Timer::Deadline)],
            "nothing is left to retry with: {from:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_attempt_bound_earlier_than_the_deadline_times_out_as_the_attempt() {
    for from in DEADLINE_SOURCES {
        let (err, elapsed, failures) = bounded(from, MS(300), MS(100)).await;
        // The attempts at 0 and 100 ms end at their own bound, and are retried; the one at 200 ms
        // ends at the deadline, exactly where its own bound lies too.
        assert_eq!(
            failures,
            [
                Kind::TimedOut(Timer::Attempt),
                Kind::TimedOut(Timer::Attempt),
                Kind::TimedOut(Timer::Deadline),
            ],
            "{from:?}"
        );
        assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline), "{from:?}");
        assert_eq!(elapsed, MS(300), "{from:?}");
    }
    // Alone, the first attempt's failure is the attempt's, and retryable if idempotent.
    let err =
        AttemptTimeoutLayer::new(MS(100)).layer(upstream(Recorder::default(), Behaviour::Stall));
    let err = ambient::scope(Deadline::after(MS(300)), err.oneshot(get()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Attempt));
    assert_eq!(err.retryable(), Retryable::IfIdempotent);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_bound_later_than_the_deadline_times_out_as_the_deadline() {
    for from in DEADLINE_SOURCES {
        let (err, elapsed, failures) = bounded(from, MS(300), MS(500)).await;
        assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline), "{from:?}");
        assert_eq!(err.retryable(), Retryable::Never, "{from:?}");
        assert_eq!(elapsed, MS(300), "{from:?}");
        assert_eq!(failures, [Kind::TimedOut(Timer::Deadline)], "{from:?}");
    }
}

/// On the real clock, time passes between any two readings of it: the deadline that starts with
/// the attempt must still count as the earlier bound when the two are equal.
///
/// Both timers are set for the same instant, so which layer notices first is the scheduler's
/// choice on a loaded machine (about one run in 25 with two busy threads beside it, the attempt
/// still waiting when the deadline's own timer has fired): the attempt may report the deadline
/// or not report at all, but never its own bound, and the call's error is the deadline's.
#[tokio::test]
async fn an_equal_bound_is_the_deadline_on_the_real_clock_too() {
    for _ in 0..5 {
        for from in DEADLINE_SOURCES {
            let (err, _, failures) = bounded(from, MS(20), MS(20)).await;
            assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline), "{from:?}");
            assert!(
                failures.is_empty() || failures == [Kind::TimedOut(Timer::Deadline)],
                "the attempt reported {failures:?}: {from:?}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_attempt_timeout_alone_and_the_deadline_layer_alone_name_their_own_timer() {
    let stall = || upstream(Recorder::default(), Behaviour::Stall);
    let err = AttemptTimeoutLayer::new(MS(300))
        .layer(stall())
        .oneshot(get())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Attempt));
    let err = deadline(MS(300))
        .layer(stall())
        .oneshot(get())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline));
    assert_eq!(err.retryable(), Retryable::Never);
}
