//! Cost of classification: `ClassifyLayer` on a no-op service against the bare service, and
//! `classify_error` on typical error chains.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::io;

use backstop_classify::{ClassifyLayer, Phase, classify_error};
use bytes::Bytes;
use criterion::{BatchSize, Criterion, black_box, criterion_group, criterion_main};
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use tower::{Layer, Service, service_fn};

fn request() -> Request<Empty<Bytes>> {
    Request::get("http://127.0.0.1/")
        .header("accept", "*/*")
        .header("user-agent", "bench")
        .header("x-request-id", "42")
        .body(Empty::new())
        .unwrap()
}

/// Polls a future that is ready at once (the no-op services are), without a runtime's overhead.
fn now<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("the bench services are always ready"),
    }
}

fn bench_layer(c: &mut Criterion) {
    let bare = service_fn(|_req: Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    });
    let failing = service_fn(|_req: Request<Empty<Bytes>>| async {
        let mut res = Response::new(Empty::<Bytes>::new());
        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        res.headers_mut()
            .insert("retry-after", http::HeaderValue::from_static("2"));
        Ok::<_, Infallible>(res)
    });
    let mut group = c.benchmark_group("classify_layer");
    group.bench_function("bare no-op service", |b| {
        let mut svc = bare;
        b.iter_batched(request, |req| now(svc.call(req)), BatchSize::SmallInput)
    });
    group.bench_function("ClassifyLayer, 200", |b| {
        let mut svc = ClassifyLayer::new().layer(bare);
        b.iter_batched(request, |req| now(svc.call(req)), BatchSize::SmallInput)
    });
    group.bench_function("ClassifyLayer, 503 + Retry-After", |b| {
        let mut svc = ClassifyLayer::new().layer(failing);
        b.iter_batched(request, |req| now(svc.call(req)), BatchSize::SmallInput)
    });
    group.finish();
}

fn bench_errors(c: &mut Criterion) {
    let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
    let wrapped = io::Error::other(backstop_classify::Error::new(
        backstop_classify::Kind::TimedOut(backstop_classify::Timer::Connect),
        Phase::Connect,
    ));
    let mut group = c.benchmark_group("classify_error");
    group.bench_function("io ECONNREFUSED", |b| {
        b.iter(|| classify_error(black_box(&refused), Phase::Connect))
    });
    group.bench_function("backstop error inside io::Error", |b| {
        b.iter(|| classify_error(black_box(&wrapped), Phase::Connect))
    });
    group.finish();
}

criterion_group!(benches, bench_layer, bench_errors);
criterion_main!(benches);
