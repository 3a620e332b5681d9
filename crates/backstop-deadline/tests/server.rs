//! The server side: reading the caller's deadline from untrusted headers, enforcing it on the
//! handler, and making it ambient for the clients the handler calls; on tokio's paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use backstop_deadline::Deadline;
use backstop_deadline::{
    Carry, DEFAULT_TIMEOUT_HEADER, DeadlineLayer, Propagation, ServerDeadlineLayer, ambient,
};
use http::{HeaderName, Request, Response, StatusCode};
use support::{Behaviour, Recorder, upstream};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const MS: fn(u64) -> Duration = Duration::from_millis;

type ExtensionAndAmbient = (Option<Deadline>, Option<Deadline>);

/// What the handler saw: the deadline in its extensions and the ambient one.
#[derive(Clone, Default)]
struct Observed {
    calls: Arc<AtomicUsize>,
    deadline: Arc<std::sync::Mutex<Option<ExtensionAndAmbient>>>,
}

fn handler(
    observed: Observed,
    work: Duration,
) -> impl Service<Request<()>, Response = Response<String>, Error = Infallible, Future: Send> + Clone
{
    tower::service_fn(move |req: Request<()>| {
        let observed = observed.clone();
        async move {
            observed.calls.fetch_add(1, Ordering::SeqCst);
            *observed.deadline.lock().unwrap() = Some((Deadline::of(&req), ambient::current()));
            tokio::time::sleep(work).await;
            Ok::<_, Infallible>(Response::new("done".to_owned()))
        }
    })
}

fn request(headers: &[(&str, &str)]) -> Request<()> {
    let mut req = Request::builder();
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(()).unwrap()
}

/// Serves one request through `layer` and returns the time left the handler saw (from both the
/// extension and the ambient deadline, which must agree), the status, and whether the handler ran.
async fn serve(
    layer: &ServerDeadlineLayer,
    req: Request<()>,
) -> (Option<Duration>, StatusCode, bool) {
    let observed = Observed::default();
    let start = Instant::now();
    let res = layer
        .layer(handler(observed.clone(), Duration::ZERO))
        .oneshot(req)
        .await
        .unwrap();
    let seen = observed.deadline.lock().unwrap().take();
    let left = seen.and_then(|(ext, amb)| {
        assert_eq!(ext, amb, "extension and ambient deadline agree");
        ext.map(|d| d.instant() - start)
    });
    (
        left,
        res.status(),
        observed.calls.load(Ordering::SeqCst) == 1,
    )
}

#[tokio::test(start_paused = true)]
async fn the_callers_budget_becomes_the_handlers_deadline() {
    let layer = ServerDeadlineLayer::new();
    let (left, status, ran) = serve(&layer, request(&[("request-timeout-ms", "1500")])).await;
    assert_eq!((left, status, ran), (Some(MS(1500)), StatusCode::OK, true));
    let (left, _, _) = serve(&layer, request(&[("grpc-timeout", "250m")])).await;
    assert_eq!(left, Some(MS(250)));
    let (left, _, _) = serve(&layer, request(&[("grpc-timeout", "3S")])).await;
    assert_eq!(left, Some(MS(3000)));
}

#[tokio::test(start_paused = true)]
async fn the_shortest_of_several_values_wins() {
    let layer = ServerDeadlineLayer::builder()
        .also_header(HeaderName::from_static("x-envoy-expected-rq-timeout-ms"))
        .build()
        .unwrap();
    let req = request(&[
        ("request-timeout-ms", "900"),
        ("request-timeout-ms", "700"),
        ("grpc-timeout", "800m"),
        ("x-envoy-expected-rq-timeout-ms", "750"),
    ]);
    assert_eq!(serve(&layer, req).await.0, Some(MS(700)));
    let req = request(&[
        ("request-timeout-ms", "900"),
        ("x-envoy-expected-rq-timeout-ms", "450"),
    ]);
    assert_eq!(serve(&layer, req).await.0, Some(MS(450)));
}

#[tokio::test(start_paused = true)]
async fn an_absent_header_gets_the_server_default_or_none() {
    let layer = ServerDeadlineLayer::builder()
        .default_timeout(MS(800))
        .build()
        .unwrap();
    assert_eq!(serve(&layer, request(&[])).await.0, Some(MS(800)));
    let layer = ServerDeadlineLayer::builder()
        .no_default_timeout()
        .build()
        .unwrap();
    let (left, status, ran) = serve(&layer, request(&[])).await;
    assert_eq!((left, status, ran), (None, StatusCode::OK, true));
    // The default stands in for a header that is only malformed.
    let layer = ServerDeadlineLayer::builder()
        .default_timeout(MS(800))
        .build()
        .unwrap();
    let req = request(&[("request-timeout-ms", "soon"), ("grpc-timeout", "5s")]);
    assert_eq!(serve(&layer, req).await.0, Some(MS(800)));
}

#[tokio::test(start_paused = true)]
async fn malformed_values_are_ignored_but_valid_ones_beside_them_count() {
    let layer = ServerDeadlineLayer::new();
    for bad in ["", "1.5", "+10", "10ms", "0x10", "١٢", "1 0"] {
        let req = request(&[("request-timeout-ms", bad), ("grpc-timeout", "400m")]);
        assert_eq!(serve(&layer, req).await.0, Some(MS(400)), "{bad:?}");
    }
    for bad in ["", "m", "400", "400ms", "123456789m", "4 m", "-m", "40x"] {
        let req = request(&[("grpc-timeout", bad), ("request-timeout-ms", "600")]);
        assert_eq!(serve(&layer, req).await.0, Some(MS(600)), "{bad:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn absurd_values_are_clamped_to_the_server_maximum() {
    let layer = ServerDeadlineLayer::builder()
        .max_timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    for absurd in [
        ("request-timeout-ms", "99999999999999999999999999999"),
        ("request-timeout-ms", "86400000"),
        ("grpc-timeout", "99999999H"),
    ] {
        assert_eq!(
            serve(&layer, request(&[absurd])).await.0,
            Some(Duration::from_secs(20)),
            "{absurd:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_caller_can_shorten_the_server_deadline_but_never_extend_it() {
    // Server maximum 2 s (the default follows it down): nothing a caller sends goes beyond.
    let capped = ServerDeadlineLayer::builder()
        .max_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    // Server default 2 s under a 120 s maximum: the default is the server's own deadline, and a
    // caller asking for the maximum or more still gets 2 s.
    let defaulted = ServerDeadlineLayer::builder()
        .default_timeout(Duration::from_secs(2))
        .max_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    for layer in [&capped, &defaulted] {
        for longer in [
            ("request-timeout-ms", "120000"),
            ("request-timeout-ms", "2001"),
            ("grpc-timeout", "99999S"),
            ("grpc-timeout", "120S"),
            ("grpc-timeout", "3000m"),
            ("grpc-timeout", "99999999H"),
        ] {
            assert_eq!(
                serve(layer, request(&[longer])).await.0,
                Some(Duration::from_secs(2)),
                "{longer:?}"
            );
        }
        // Shorter is honoured, from either header.
        assert_eq!(
            serve(layer, request(&[("request-timeout-ms", "500")]))
                .await
                .0,
            Some(MS(500))
        );
        assert_eq!(
            serve(layer, request(&[("grpc-timeout", "700m")])).await.0,
            Some(MS(700))
        );
        assert_eq!(
            serve(layer, request(&[])).await.0,
            Some(Duration::from_secs(2))
        );
    }
    // The default server: 30 s of its own, so 120 s asked is 30 s given.
    let default = ServerDeadlineLayer::new();
    for longer in [("request-timeout-ms", "120000"), ("grpc-timeout", "120S")] {
        assert_eq!(
            serve(&default, request(&[longer])).await.0,
            Some(Duration::from_secs(30)),
            "{longer:?}"
        );
    }
    // No deadline of its own: the maximum is the ceiling.
    let open = ServerDeadlineLayer::builder()
        .no_default_timeout()
        .max_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert_eq!(serve(&open, request(&[])).await.0, None);
    assert_eq!(
        serve(&open, request(&[("grpc-timeout", "99999S")])).await.0,
        Some(Duration::from_secs(5))
    );
}

#[tokio::test(start_paused = true)]
async fn zero_or_negative_fails_fast_without_calling_the_handler() {
    let layer = ServerDeadlineLayer::new();
    for expired in [
        ("request-timeout-ms", "0"),
        ("request-timeout-ms", "-250"),
        ("grpc-timeout", "0n"),
        ("grpc-timeout", "-5S"),
    ] {
        let start = Instant::now();
        // A valid, generous value beside it does not rescue it: the caller has given up.
        let req = request(&[expired, ("x-other", "1"), ("grpc-timeout", "10S")]);
        let (left, status, ran) = serve(&layer, req).await;
        assert_eq!(
            (left, status, ran),
            (None, StatusCode::GATEWAY_TIMEOUT, false),
            "{expired:?}"
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}

#[tokio::test(start_paused = true)]
async fn at_expiry_the_handler_is_dropped_and_the_caller_gets_504() {
    struct DropFlag(Arc<AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (d, f) = (dropped.clone(), finished.clone());
    let svc = ServerDeadlineLayer::new().layer(tower::service_fn(move |_req: Request<()>| {
        let (flag, finished) = (DropFlag(d.clone()), f.clone());
        async move {
            let _flag = flag;
            tokio::time::sleep(Duration::from_secs(10)).await;
            finished.store(true, Ordering::SeqCst);
            Ok::<_, Infallible>(Response::new(String::from("late")))
        }
    }));
    let start = Instant::now();
    let res = svc
        .oneshot(request(&[("request-timeout-ms", "300")]))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), MS(300));
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(res.body(), "");
    assert!(
        dropped.load(Ordering::SeqCst),
        "the handler future was dropped at the deadline"
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(!finished.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn grpc_requests_get_deadline_exceeded_and_the_status_is_configurable() {
    let slow = || handler(Observed::default(), Duration::from_secs(5));
    let grpc = || {
        request(&[
            ("content-type", "application/grpc"),
            ("grpc-timeout", "100m"),
        ])
    };
    let res = ServerDeadlineLayer::new()
        .layer(slow())
        .oneshot(grpc())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["grpc-status"], "4");
    assert_eq!(res.headers()["content-type"], "application/grpc");

    let layer = ServerDeadlineLayer::builder()
        .expired_status(StatusCode::SERVICE_UNAVAILABLE)
        .grpc_aware(false)
        .build()
        .unwrap();
    let res = layer.layer(slow()).oneshot(grpc()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!res.headers().contains_key("grpc-status"));
    // Fail-fast answers follow the same rule.
    let req = request(&[("content-type", "application/grpc"), ("grpc-timeout", "0m")]);
    let res = ServerDeadlineLayer::new()
        .layer(slow())
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(res.headers()["grpc-status"], "4");
}

#[tokio::test(start_paused = true)]
async fn a_client_called_inside_the_handler_inherits_the_time_left() {
    // Server A's handler calls B through a client stack with no deadline of its own and no
    // deadline code in the handler.
    let b = Recorder::default();
    let client = DeadlineLayer::builder()
        .propagation(Propagation::new().header(DEFAULT_TIMEOUT_HEADER))
        .build()
        .unwrap()
        .layer(upstream(b.clone(), Behaviour::Ok));
    let a = ServerDeadlineLayer::new().layer(tower::service_fn(move |_req: Request<()>| {
        let client = client.clone();
        async move {
            tokio::time::sleep(MS(100)).await;
            let res = client.oneshot(Request::new(())).await.unwrap();
            Ok::<_, Infallible>(Response::new(res.into_body().into_inner()))
        }
    }));
    let start = Instant::now();
    let res = a
        .oneshot(request(&[("request-timeout-ms", "1000")]))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seen = &b.seen()[0];
    // Carried ambiently by the client layer (its default), as retry would read it.
    assert_eq!(seen.current, Some(Deadline::at(start + MS(1000))));
    // 1000 ms minus the 100 ms A spent, minus the 10 ms margin.
    assert_eq!(seen.headers["request-timeout-ms"], "890");
}

#[tokio::test(start_paused = true)]
async fn the_ambient_carry_skips_the_extension() {
    let layer = ServerDeadlineLayer::builder()
        .carry(Carry::TaskLocal)
        .build()
        .unwrap();
    let observed = Observed::default();
    let start = Instant::now();
    layer
        .layer(handler(observed.clone(), Duration::ZERO))
        .oneshot(request(&[("request-timeout-ms", "700")]))
        .await
        .unwrap();
    let (ext, amb) = observed.deadline.lock().unwrap().take().unwrap();
    assert_eq!(ext, None);
    assert_eq!(amb, Some(Deadline::at(start + MS(700))));
}

#[test]
fn invalid_configurations_are_rejected_naming_field_and_rule() {
    let err = ServerDeadlineLayer::builder()
        .max_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(
        (err.field(), err.rule()),
        ("max_timeout", "must be greater than zero")
    );
    let err = ServerDeadlineLayer::builder()
        .default_timeout(Duration::from_secs(60))
        .max_timeout(Duration::from_secs(10))
        .build()
        .unwrap_err();
    assert_eq!(
        (err.field(), err.rule()),
        ("default_timeout", "must not exceed max_timeout")
    );
    let err = ServerDeadlineLayer::builder()
        .default_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "default_timeout");
    let err = ServerDeadlineLayer::builder()
        .expired_status(StatusCode::OK)
        .build()
        .unwrap_err();
    assert_eq!(
        (err.field(), err.rule()),
        ("expired_status", "must be a 4xx or 5xx status")
    );
}
