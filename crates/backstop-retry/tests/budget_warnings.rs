//! Budget-exhaustion warnings are rate limited. In a binary of its own: tracing caches each
//! callsite's interest process-wide, so a test counting events with a scoped subscriber must not
//! share its process with tests that hit the same callsite without one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use backstop_classify::Error;
use backstop_retry::{RetryInfo, RetryLayer, StopReason};
use bytes::Bytes;
use http::{Method, Request, Response};
use support::{Chunked, Reply, Upstream};
use tower::{Layer, ServiceExt, service_fn};

type Res = Result<Response<http_body_util::Full<Bytes>>, Error>;

async fn send(layer: RetryLayer, upstream: &Upstream, req: Request<Chunked>) -> Res {
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

fn builder() -> backstop_retry::RetryLayerBuilder {
    RetryLayer::builder().seed(1)
}

struct CountWarnings(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl tracing::Subscriber for CountWarnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_warns_at_most_once_a_second() {
    let warnings = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let _guard = tracing::subscriber::set_default(CountWarnings(warnings.clone()));
    let budget = support::spent_budget();
    let layer = builder().budget(budget).build().unwrap();
    let upstream = Upstream::new((0..100).map(|_| Reply::status(503)));
    for _ in 0..50 {
        let res = send(layer.clone(), &upstream, request(Method::GET))
            .await
            .unwrap();
        assert_eq!(
            RetryInfo::of(&res).stopped(),
            Some(StopReason::BudgetExhausted)
        );
    }
    assert_eq!(upstream.calls(), 50);
    assert_eq!(warnings.load(std::sync::atomic::Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..10 {
        send(layer.clone(), &upstream, request(Method::GET))
            .await
            .unwrap();
    }
    assert_eq!(warnings.load(std::sync::atomic::Ordering::SeqCst), 2);
}
