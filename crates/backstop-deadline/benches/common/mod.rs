//! The cases shared by both bench binaries: each runs `iters` calls of one service stack on a
//! no-op inner service and returns the time taken.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::Duration;

use backstop_deadline::propagate::{DEFAULT_TIMEOUT_HEADER, Propagation};
use backstop_deadline::{AttemptTimeoutLayer, Carry, DeadlineLayer, ServerDeadlineLayer};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Empty, Full};
use tower::{Layer, Service, ServiceExt};

/// Answers at once, allocating nothing.
#[derive(Clone, Copy)]
pub struct NoOp;

impl Service<Request<()>> for NoOp {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Empty<Bytes>>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<()>) -> Self::Future {
        ready(Ok(Response::new(Empty::new())))
    }
}

/// Answers at once with a body that has not ended (so a deadline covering the body must start
/// its clock for it), allocating nothing.
#[derive(Clone, Copy)]
pub struct NoOpBody;

impl Service<Request<()>> for NoOpBody {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Full<Bytes>>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<()>) -> Self::Future {
        ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
    }
}

/// A GET with three headers, built per call in every case (the baseline includes it).
pub fn request() -> Request<()> {
    Request::builder()
        .uri("http://127.0.0.1/")
        .header("host", "127.0.0.1")
        .header("user-agent", "bench")
        .header("accept", "*/*")
        .body(())
        .unwrap()
}

/// The same with a caller's budget, for the server layer.
pub fn request_with_budget() -> Request<()> {
    let mut req = request();
    req.headers_mut()
        .insert("request-timeout-ms", http::HeaderValue::from_static("1500"));
    req
}

/// One case: a name and a runner of `iters` calls.
pub struct Case {
    pub name: &'static str,
    pub run: Box<dyn FnMut(u64) -> Duration>,
}

fn case<S>(name: &'static str, svc: S, make: fn() -> Request<()>) -> Case
where
    S: Service<Request<()>> + Clone + 'static,
    S::Error: std::fmt::Debug,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    Case {
        name,
        run: Box::new(move |iters| {
            let mut svc = svc.clone();
            rt.block_on(async {
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    let ready = svc.ready().await.unwrap();
                    black_box(ready.call(black_box(make())).await.unwrap());
                }
                start.elapsed()
            })
        }),
    }
}

pub fn cases() -> Vec<Case> {
    let secs = Duration::from_secs;
    let quiet = Propagation::disabled;
    let deadline_default = DeadlineLayer::builder().timeout(secs(5)).build().unwrap();
    let deadline_quiet = DeadlineLayer::builder()
        .timeout(secs(5))
        .propagation(quiet())
        .build()
        .unwrap();
    let deadline_ext_quiet = DeadlineLayer::builder()
        .timeout(secs(5))
        .carry(Carry::Extensions)
        .propagation(quiet())
        .build()
        .unwrap();
    let attempt_default = AttemptTimeoutLayer::new(secs(1));
    let attempt_quiet = AttemptTimeoutLayer::builder()
        .timeout(secs(1))
        .propagation(quiet())
        .build()
        .unwrap();
    // The header turned on for plain HTTP: for every destination, or for a list the request's
    // authority (127.0.0.1) matches last.
    let everywhere = || Propagation::new().header(DEFAULT_TIMEOUT_HEADER);
    let listed = || {
        Propagation::new()
            .only_to(["*.internal", "payments.example.com", "127.0.0.1"])
            .unwrap()
    };
    let deadline_everywhere = DeadlineLayer::builder()
        .timeout(secs(5))
        .propagation(everywhere())
        .build()
        .unwrap();
    let attempt_everywhere = AttemptTimeoutLayer::builder()
        .timeout(secs(1))
        .propagation(everywhere())
        .build()
        .unwrap();
    let attempt_listed = AttemptTimeoutLayer::builder()
        .timeout(secs(1))
        .propagation(listed())
        .build()
        .unwrap();
    let tower_timeout = tower::timeout::TimeoutLayer::new(secs(1));
    let server_lean = ServerDeadlineLayer::builder()
        .carry(Carry::TaskLocal)
        .build()
        .unwrap();

    vec![
        case("bare no-op", NoOp, request),
        case("tower Timeout", tower_timeout.layer(NoOp), request),
        case(
            "tower Timeout x2",
            tower_timeout.layer(tower_timeout.layer(NoOp)),
            request,
        ),
        case(
            "AttemptTimeout, no propagation",
            attempt_quiet.layer(NoOp),
            request,
        ),
        case(
            "AttemptTimeout default",
            attempt_default.layer(NoOp),
            request,
        ),
        case(
            "AttemptTimeout, header everywhere",
            attempt_everywhere.layer(NoOp),
            request,
        ),
        case(
            "AttemptTimeout, header to a list",
            attempt_listed.layer(NoOp),
            request,
        ),
        case(
            "DeadlineLayer, no propagation",
            deadline_quiet.layer(NoOp),
            request,
        ),
        case(
            "DeadlineLayer Carry::Extensions, no propagation",
            deadline_ext_quiet.layer(NoOp),
            request,
        ),
        case(
            "DeadlineLayer default",
            deadline_default.layer(NoOp),
            request,
        ),
        case(
            "DeadlineLayer + AttemptTimeout, no propagation",
            deadline_quiet.layer(attempt_quiet.layer(NoOp)),
            request,
        ),
        case(
            "DeadlineLayer + AttemptTimeout default",
            deadline_default.layer(attempt_default.layer(NoOp)),
            request,
        ),
        case(
            "DeadlineLayer + AttemptTimeout, header everywhere",
            deadline_everywhere.layer(attempt_everywhere.layer(NoOp)),
            request,
        ),
        // As the facade composes them: only the attempt layer would write a header (for plain
        // HTTP, none by default).
        case(
            "DeadlineLayer (no propagation) + AttemptTimeout default",
            deadline_quiet.layer(attempt_default.layer(NoOp)),
            request,
        ),
        case(
            "DeadlineLayer (no propagation) + AttemptTimeout, header everywhere",
            deadline_quiet.layer(attempt_everywhere.layer(NoOp)),
            request,
        ),
        case("bare no-op, body", NoOpBody, request),
        case(
            "DeadlineLayer + AttemptTimeout, no propagation, body",
            deadline_quiet.layer(attempt_quiet.layer(NoOpBody)),
            request,
        ),
        case("bare no-op, budget header", NoOp, request_with_budget),
        case(
            "server DeadlineLayer lean",
            server_lean.layer(NoOp),
            request_with_budget,
        ),
        case(
            "server DeadlineLayer default",
            ServerDeadlineLayer::new().layer(NoOp),
            request_with_budget,
        ),
    ]
}
