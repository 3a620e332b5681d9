//! Where the deadline is written: `grpc-timeout` on gRPC requests by default, the milliseconds
//! header on plain HTTP requests only when turned on — for every destination, for listed ones,
//! or for one request — on tokio's paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use backstop_deadline::propagate::{DEFAULT_TIMEOUT_HEADER, Propagation};
use backstop_deadline::{AttemptTimeoutLayer, DeadlineLayer, PropagateDeadline};
use http::{HeaderMap, HeaderName, Request};
use support::{Behaviour, Recorder, upstream};
use tower::{Layer, ServiceExt};

const MS: fn(u64) -> Duration = Duration::from_millis;

fn plain(uri: &str) -> Request<()> {
    Request::get(uri).body(()).unwrap()
}

fn grpc(uri: &str) -> Request<()> {
    Request::post(uri)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap()
}

fn forced(mut req: Request<()>, force: PropagateDeadline) -> Request<()> {
    req.extensions_mut().insert(force);
    req
}

/// The headers `req` reaches the inner service with, through an attempt timeout of 300 ms
/// propagating as `propagation` says.
async fn through_attempt(propagation: Propagation, req: Request<()>) -> HeaderMap {
    let recorder = Recorder::default();
    let layer = AttemptTimeoutLayer::builder()
        .timeout(MS(300))
        .propagation(propagation)
        .build()
        .unwrap();
    layer
        .layer(upstream(recorder.clone(), Behaviour::Ok))
        .oneshot(req)
        .await
        .unwrap();
    recorder.seen()[0].headers.clone()
}

/// Whether `req` gets `request-timeout-ms` through an attempt timeout propagating as
/// `propagation` says.
async fn told(propagation: &Propagation, req: Request<()>) -> bool {
    through_attempt(propagation.clone(), req)
        .await
        .contains_key("request-timeout-ms")
}

#[tokio::test(start_paused = true)]
async fn by_default_plain_http_requests_carry_no_deadline_and_grpc_ones_do() {
    let recorder = Recorder::default();
    let attempt =
        AttemptTimeoutLayer::new(MS(300)).layer(upstream(recorder.clone(), Behaviour::Ok));
    attempt
        .clone()
        .oneshot(plain("https://api.example.com/"))
        .await
        .unwrap();
    attempt
        .oneshot(grpc("http://payments.internal/pay.Payments/Charge"))
        .await
        .unwrap();

    let deadline = DeadlineLayer::builder()
        .timeout(MS(2000))
        .build()
        .unwrap()
        .layer(upstream(recorder.clone(), Behaviour::Ok));
    deadline
        .clone()
        .oneshot(plain("https://api.example.com/"))
        .await
        .unwrap();
    deadline
        .oneshot(grpc("http://payments.internal/pay.Payments/Charge"))
        .await
        .unwrap();

    let seen = recorder.seen();
    // Plain HTTP: nothing at all was added.
    assert!(seen[0].headers.is_empty(), "{:?}", seen[0].headers);
    assert!(seen[2].headers.is_empty(), "{:?}", seen[2].headers);
    // gRPC: `grpc-timeout` with the time left minus the margin, and no milliseconds header.
    assert_eq!(seen[1].headers["grpc-timeout"], "290000u");
    assert_eq!(seen[3].headers["grpc-timeout"], "1990000u");
    assert!(!seen[1].headers.contains_key("request-timeout-ms"));
    assert!(!seen[3].headers.contains_key("request-timeout-ms"));
}

#[tokio::test(start_paused = true)]
async fn a_server_handlers_deadline_is_not_leaked_to_plain_http_by_default() {
    // Under an inherited deadline the headers are formatted per call: still none by default.
    let recorder = Recorder::default();
    let client = DeadlineLayer::inherit().layer(upstream(recorder.clone(), Behaviour::Ok));
    let deadline = backstop_deadline::Deadline::after(MS(700));
    backstop_deadline::ambient::scope(deadline, client.clone().oneshot(plain("http://x.test/")))
        .await
        .unwrap();
    backstop_deadline::ambient::scope(deadline, client.oneshot(grpc("http://x.test/s/M")))
        .await
        .unwrap();
    let seen = recorder.seen();
    assert!(seen[0].headers.is_empty());
    assert_eq!(seen[1].headers["grpc-timeout"], "690000u");
}

#[tokio::test(start_paused = true)]
async fn opting_in_writes_the_header_for_every_destination() {
    let everywhere = Propagation::new().header(DEFAULT_TIMEOUT_HEADER);
    let headers = through_attempt(everywhere.clone(), plain("https://api.example.com/")).await;
    assert_eq!(headers["request-timeout-ms"], "290");
    // gRPC requests still get their own header, not this one.
    let headers = through_attempt(everywhere, grpc("http://payments.internal/s/M")).await;
    assert_eq!(headers["grpc-timeout"], "290000u");
    assert!(!headers.contains_key("request-timeout-ms"));
    // With gRPC propagation off, a gRPC request is treated as plain HTTP.
    let no_grpc = Propagation::new()
        .header(DEFAULT_TIMEOUT_HEADER)
        .grpc(false);
    let headers = through_attempt(no_grpc, grpc("http://payments.internal/s/M")).await;
    assert_eq!(headers["request-timeout-ms"], "290");
    assert!(!headers.contains_key("grpc-timeout"));
}

#[tokio::test(start_paused = true)]
async fn the_destination_list_decides_which_plain_requests_are_told() {
    let to = Propagation::new()
        .only_to([
            "payments.internal",
            "127.0.0.1:8080",
            "*.svc.internal",
            "[::1]:9000",
        ])
        .unwrap();
    let told_to = |uri: &'static str| told(&to, plain(uri));

    // An exact host, on any port, in any case, with or without a trailing dot.
    assert!(told_to("http://payments.internal/charge").await);
    assert!(told_to("https://payments.internal:8443/charge").await);
    assert!(told_to("http://Payments.INTERNAL/charge").await);
    assert!(told_to("http://payments.internal./charge").await);
    assert!(told_to("http://user@payments.internal/charge").await);
    assert!(!told_to("http://payments.internal.evil.com/").await);
    assert!(!told_to("http://payments.internal@evil.com/").await);
    assert!(!told_to("http://x.payments.internal/").await);
    // A host and port; a URI without a port has its scheme's.
    assert!(told_to("http://127.0.0.1:8080/").await);
    assert!(!told_to("http://127.0.0.1:8081/").await);
    assert!(!told_to("http://127.0.0.1/").await);
    // A suffix: any name below it, not the suffix itself nor a name merely ending the same.
    assert!(told_to("http://orders.svc.internal/").await);
    assert!(told_to("http://a.b.SVC.internal:1234/").await);
    assert!(!told_to("http://svc.internal/").await);
    assert!(!told_to("http://evilsvc.internal/").await);
    // IPv6 in brackets.
    assert!(told_to("http://[::1]:9000/").await);
    assert!(!told_to("http://[::1]:9001/").await);
    // Anybody else.
    assert!(!told_to("https://api.example.com/").await);
    // No authority in the URI: the `Host` header says where the request goes.
    let by_host = |host: &'static str| {
        Request::get("/charge")
            .header("host", host)
            .body(())
            .unwrap()
    };
    assert!(told(&to, by_host("payments.internal")).await);
    assert!(told(&to, by_host("127.0.0.1:8080")).await);
    assert!(!told(&to, by_host("127.0.0.1:9090")).await);
    assert!(!told(&to, by_host("api.example.com")).await);
    assert!(!told(&to, Request::new(())).await, "nowhere to match");

    // A port in the pattern and a scheme's default port.
    let https = Propagation::new().only_to(["api.partner.com:443"]).unwrap();
    assert!(told(&https, plain("https://api.partner.com/")).await);
    assert!(!told(&https, plain("http://api.partner.com/")).await);
}

#[tokio::test(start_paused = true)]
async fn the_destination_list_keeps_its_header_name_and_leaves_grpc_alone() {
    let envoy = HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
    // In either order: renaming keeps the list, listing keeps the name.
    for propagation in [
        Propagation::new()
            .header(envoy.clone())
            .only_to(["*.internal"])
            .unwrap(),
        Propagation::new()
            .only_to(["*.internal"])
            .unwrap()
            .header(envoy.clone()),
    ] {
        assert_eq!(propagation.header_name(), Some(&envoy));
        let headers = through_attempt(propagation.clone(), plain("http://a.internal/")).await;
        assert_eq!(headers[&envoy], "290");
        let headers = through_attempt(propagation.clone(), plain("http://a.example/")).await;
        assert!(headers.is_empty());
        // gRPC servers expect `grpc-timeout`, listed or not.
        let headers = through_attempt(propagation, grpc("http://a.example/s/M")).await;
        assert_eq!(headers["grpc-timeout"], "290000u");
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_can_force_propagation_on_or_off() {
    let default = Propagation::new();
    let listed = Propagation::new().only_to(["payments.internal"]).unwrap();
    let everywhere = Propagation::new().header(DEFAULT_TIMEOUT_HEADER);
    let outside = || plain("https://api.example.com/");
    let inside = || plain("http://payments.internal/");

    // On, against the default and against a list that does not match.
    assert!(told(&default, forced(outside(), PropagateDeadline::Always)).await);
    assert!(told(&listed, forced(outside(), PropagateDeadline::Always)).await);
    // Off, against a list that matches and against every destination.
    assert!(!told(&listed, forced(inside(), PropagateDeadline::Never)).await);
    assert!(!told(&everywhere, forced(outside(), PropagateDeadline::Never)).await);
    // Unmarked, the configuration decides.
    assert!(told(&listed, inside()).await);
    assert!(!told(&listed, outside()).await);

    // Off holds for gRPC too: nothing at all is written.
    let headers = through_attempt(
        default.clone(),
        forced(
            grpc("https://api.example.com/s/M"),
            PropagateDeadline::Never,
        ),
    )
    .await;
    assert!(!headers.contains_key("grpc-timeout"), "{headers:?}");
    assert!(!headers.contains_key("request-timeout-ms"), "{headers:?}");

    // It adds no header a layer is not configured to write.
    assert!(
        !told(
            &default.clone().no_header(),
            forced(outside(), PropagateDeadline::Always)
        )
        .await
    );
    let recorder = Recorder::default();
    DeadlineLayer::builder()
        .timeout(MS(2000))
        .propagation(Propagation::disabled())
        .build()
        .unwrap()
        .layer(upstream(recorder.clone(), Behaviour::Ok))
        .oneshot(forced(outside(), PropagateDeadline::Always))
        .await
        .unwrap();
    assert!(recorder.seen()[0].headers.is_empty());

    // Through a deadline layer as well as an attempt timeout.
    let recorder = Recorder::default();
    let svc = DeadlineLayer::builder()
        .timeout(MS(2000))
        .propagation(listed)
        .build()
        .unwrap()
        .layer(upstream(recorder.clone(), Behaviour::Ok));
    svc.clone()
        .oneshot(forced(outside(), PropagateDeadline::Always))
        .await
        .unwrap();
    svc.oneshot(forced(inside(), PropagateDeadline::Never))
        .await
        .unwrap();
    let seen = recorder.seen();
    assert_eq!(seen[0].headers["request-timeout-ms"], "1990");
    assert!(seen[1].headers.is_empty());
}

#[test]
fn invalid_destinations_are_rejected_naming_the_field() {
    for bad in [
        "",
        "*",
        "*.",
        "http://payments.internal",
        "payments.internal/",
        "payments internal",
        "pay*.internal",
        "a.*.internal",
        "payments..internal",
        "payments.internal:",
        "payments.internal:0",
        "payments.internal:65536",
        "payments.internal:80a",
        "::1",
        "[::1",
        "[::1]8080",
        "[not-v6]",
        "user@payments.internal",
    ] {
        let err = Propagation::new().only_to([bad]).unwrap_err();
        assert_eq!(err.field(), "propagation.only_to", "{bad:?}");
        assert!(err.rule().contains(&format!("`{bad}`")), "{bad:?}: {err}");
    }
    let err = Propagation::new()
        .only_to(Vec::<String>::new())
        .unwrap_err();
    assert_eq!(err.field(), "propagation.only_to");
    for good in [
        "payments.internal",
        "PAYMENTS.internal.",
        "127.0.0.1:8080",
        "*.internal",
        "*.internal:8443",
        "[::1]",
        "[2001:DB8::1]:443",
        "localhost:65535",
    ] {
        assert!(Propagation::new().only_to([good]).is_ok(), "{good:?}");
    }
    // Patterns are compared case-insensitively, so these configure the same list.
    assert_eq!(
        Propagation::new().only_to(["A.Internal"]).unwrap(),
        Propagation::new().only_to(["a.internal"]).unwrap()
    );
}
