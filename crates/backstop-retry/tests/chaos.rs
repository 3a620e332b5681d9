//! The retry layer in front of a real hyper client, against the fault-injecting chaos upstream
//! on loopback, in paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backstop_chaos::{ChaosServer, Fault, RetryAfter, Script, closed_port_addr, digest};
use backstop_classify::{ClassifiedBody, ClassifyLayer, Error, HttpPolicy, Kind};
use backstop_retry::{
    Jitter, ReplayBody, RetryBudget, RetryInfo, RetryLayer, RetryLayerBuilder, StopReason,
};
use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use support::{Chunked, MS};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

type HttpClient = Client<HttpConnector, ReplayBody<Chunked>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn builder() -> RetryLayerBuilder {
    RetryLayer::builder().seed(5).no_budget()
}

/// RetryLayer → ClassifyLayer → hyper client, counting the attempts that leave.
#[derive(Clone)]
struct Stack {
    attempts: Arc<AtomicUsize>,
    client: HttpClient,
}

impl Stack {
    fn new() -> Stack {
        Stack {
            attempts: Arc::default(),
            client: client(),
        }
    }

    fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    async fn send(
        &self,
        layer: RetryLayer,
        req: Request<Chunked>,
    ) -> Result<Response<ClassifiedBody<Incoming, HttpPolicy>>, Error> {
        let attempts = self.attempts.clone();
        let client = self.client.clone();
        let counted = tower::service_fn(move |req: Request<ReplayBody<Chunked>>| {
            attempts.fetch_add(1, Ordering::SeqCst);
            let mut client = client.clone();
            async move { client.call(req).await }
        });
        let svc = layer.layer(ClassifyLayer::new().layer(counted));
        svc.oneshot(req).await
    }
}

fn request(method: Method, url: String, body: Chunked) -> Request<Chunked> {
    Request::builder()
        .method(method)
        .uri(url)
        .body(body)
        .unwrap()
}

async fn chaos() -> ChaosServer {
    ChaosServer::builder().tls(false).start().await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn get_503_503_200_succeeds_on_the_third_attempt_with_jittered_delays_inside_bounds() {
    let chaos = chaos().await;
    chaos.script("/flaky", Script::fail_times(2, Fault::status(503)));
    let base = 100 * MS;
    let layer = builder()
        .base_delay(base)
        .max_delay(10 * base)
        .build()
        .unwrap();
    let res = Stack::new()
        .send(
            layer,
            request(Method::GET, chaos.url("/flaky"), Chunked::empty()),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let info = RetryInfo::of(&res);
    assert_eq!(info.attempts(), 3);
    let delays: Vec<_> = info.delays().collect();
    assert!(delays[0] <= base && delays[1] <= 2 * base, "{delays:?}");
    let deliveries = chaos.deliveries();
    assert_eq!(deliveries.len(), 3);
    // The upstream saw the attempts spaced by the delays (virtual time; I/O takes none).
    let gap = |i: usize| deliveries[i + 1].at - deliveries[i].at;
    assert!(
        gap(0) >= delays[0] && gap(0) < delays[0] + 5 * MS,
        "{:?}",
        gap(0)
    );
    assert!(
        gap(1) >= delays[1] && gap(1) < delays[1] + 5 * MS,
        "{:?}",
        gap(1)
    );
    chaos.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn post_reset_after_the_server_read_it_is_delivered_exactly_once() {
    let chaos = chaos().await;
    chaos.script("/charge", Script::always(Fault::ResetAfterRead));
    let stack = Stack::new();
    let (body, _) = Chunked::pattern(512, 128);
    let err = stack
        .send(
            builder().build().unwrap(),
            request(Method::POST, chaos.url("/charge"), body),
        )
        .await
        .unwrap_err();
    println!("{err}");
    assert!(!err.kind().is_connect_failure(), "{err:?}");
    assert_eq!(chaos.count("POST", "/charge"), 1, "{err:?}");
    assert_eq!(stack.attempts(), 1);
    chaos.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn post_to_a_closed_port_is_retried() {
    let addr = closed_port_addr().unwrap();
    let stack = Stack::new();
    let (body, _) = Chunked::pattern(512, 128);
    let err = stack
        .send(
            builder().max_attempts(3).build().unwrap(),
            request(Method::POST, format!("http://{addr}/charge"), body),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Refused);
    assert_eq!(stack.attempts(), 3);

    // And once the port answers again, the retried POST gets through, delivered once, whole.
    let chaos = chaos().await;
    chaos.down_for(Duration::from_millis(150)).await;
    let (body, all) = Chunked::pattern(512, 128);
    let layer = builder()
        .base_delay(Duration::from_millis(200))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let res = Stack::new()
        .send(layer, request(Method::POST, chaos.url("/charge"), body))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let deliveries = chaos.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].body_digest, digest(&all));
    chaos.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn post_with_an_idempotency_key_on_503_is_retried_with_the_same_key() {
    let chaos = chaos().await;
    chaos.script("/orders", Script::fail_times(2, Fault::status(503)));
    let (body, all) = Chunked::pattern(2048, 256);
    let mut req = request(Method::POST, chaos.url("/orders"), body);
    req.headers_mut()
        .insert("idempotency-key", HeaderValue::from_static("order-42"));
    let res = Stack::new()
        .send(builder().build().unwrap(), req)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(chaos.count_key("order-42"), 3);
    for delivery in chaos.deliveries() {
        assert_eq!(delivery.idempotency_key.as_deref(), Some("order-42"));
        assert_eq!(delivery.body_digest, digest(&all));
    }
    chaos.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn retry_after_seconds_and_http_date_both_wait_about_two_seconds() {
    let chaos = chaos().await;
    chaos.script(
        "/seconds",
        Script::fail_times(1, Fault::status_retry_after(503, RetryAfter::Seconds(2))),
    );
    chaos.script(
        "/date",
        Script::fail_times(1, Fault::status_retry_after(503, RetryAfter::DateIn(2))),
    );
    for (path, low, high) in [
        (
            "/seconds",
            Duration::from_secs(2),
            Duration::from_secs(2) + 5 * MS,
        ),
        // The date has whole-second resolution: 2 s ahead is 1–2 s away.
        (
            "/date",
            Duration::from_secs(1),
            Duration::from_secs(2) + 5 * MS,
        ),
    ] {
        let start = Instant::now();
        let res = Stack::new()
            .send(
                builder().build().unwrap(),
                request(Method::GET, chaos.url(path), Chunked::empty()),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let waited = start.elapsed();
        assert!(waited >= low && waited <= high, "{path}: {waited:?}");
        assert_eq!(chaos.count_path(path), 2);
    }
    chaos.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn retry_after_99999_ends_the_retries_and_garbage_falls_back_to_the_backoff() {
    let chaos = chaos().await;
    chaos.script(
        "/huge",
        Script::fail_times(
            1,
            Fault::status_retry_after(503, RetryAfter::Seconds(99_999)),
        ),
    );
    chaos.script(
        "/garbage",
        Script::fail_times(
            1,
            Fault::status_retry_after(503, RetryAfter::Raw("soon-ish".into())),
        ),
    );
    let layer = builder()
        .retry_after_max(Duration::from_secs(3))
        .base_delay(20 * MS)
        .build()
        .unwrap();
    let start = Instant::now();
    let res = Stack::new()
        .send(
            layer.clone(),
            request(Method::GET, chaos.url("/huge"), Chunked::empty()),
        )
        .await
        .unwrap();
    // Asked to wait a day, allowed 3 s: no retry goes out early; the 503 comes back at once
    // with the server's header.
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "99999");
    assert!(start.elapsed() < 5 * MS, "{:?}", start.elapsed());
    assert_eq!(chaos.count_path("/huge"), 1);

    let start = Instant::now();
    let res = Stack::new()
        .send(
            layer,
            request(Method::GET, chaos.url("/garbage"), Chunked::empty()),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(start.elapsed() <= 25 * MS, "{:?}", start.elapsed());
    assert_eq!(chaos.count_path("/garbage"), 2);
    chaos.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn under_total_failure_retries_stay_within_the_budget() {
    // 50 requests/s for 60 s of virtual time against an upstream answering only 503.
    const RATE: u32 = 50;
    const SECONDS: u32 = 60;
    let chaos = chaos().await;
    chaos.script("/down", Script::always(Fault::status(503)));
    let budget = RetryBudget::builder()
        .ratio(0.2)
        .min_per_second(10)
        .build()
        .unwrap();
    let layer = RetryLayer::builder()
        .seed(3)
        .budget(budget)
        .max_attempts(3)
        .base_delay(10 * MS)
        .max_delay(100 * MS)
        .build()
        .unwrap();
    let stack = Stack::new();
    let url = chaos.url("/down");
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
    for _ in 0..RATE * SECONDS {
        tick.tick().await;
        let (stack, layer, url) = (stack.clone(), layer.clone(), url.clone());
        tasks.spawn(async move {
            let res = stack
                .send(layer, request(Method::GET, url, Chunked::empty()))
                .await;
            res.map(|r| r.status().as_u16()).unwrap_or(0)
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 503);
    }
    let requests = f64::from(RATE * SECONDS);
    let retries = chaos.count("GET", "/down") as f64 - requests;
    println!("{requests} requests, {retries} retries");
    // 20 % of requests, plus 10/s over the run and the reserve of one window.
    let bound = 0.2 * requests + 10.0 * f64::from(SECONDS + 10);
    assert!(retries <= bound, "{retries} retries > bound {bound}");
    // Without a budget, every request would have retried twice.
    assert!(
        retries >= 0.2 * requests,
        "{retries} retries: the budget starved"
    );
    chaos.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_1_mib_streaming_body_is_sent_once_and_not_retried() {
    let chaos = chaos().await;
    chaos.script("/upload", Script::always(Fault::status(503)));
    let (body, all) = Chunked::pattern(1024 * 1024, 64 * 1024);
    let res = Stack::new()
        .send(
            builder().build().unwrap(),
            request(Method::PUT, chaos.url("/upload"), body),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        RetryInfo::of(&res).stopped(),
        Some(StopReason::BodyNotReplayable)
    );
    let deliveries = chaos.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].body_len, all.len() as u64);
    assert_eq!(deliveries[0].body_digest, digest(&all));
    chaos.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_10_kib_streaming_body_that_fails_is_replayed_byte_identical() {
    let chaos = chaos().await;
    chaos.script(
        "/upload",
        Script::sequence(vec![Fault::status(503), Fault::ResetAfterRead, Fault::Echo]),
    );
    let (body, all) = Chunked::pattern(10 * 1024, 1000);
    let res = Stack::new()
        .send(
            builder().build().unwrap(),
            request(Method::PUT, chaos.url("/upload"), body),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(RetryInfo::of(&res).attempts(), 3);
    use http_body_util::BodyExt;
    let echoed = res.into_body().collect().await.ok().map(|b| b.to_bytes());
    assert_eq!(echoed.as_deref(), Some(&all[..]));
    let deliveries = chaos.deliveries();
    assert_eq!(deliveries.len(), 3);
    for delivery in &deliveries {
        assert!(delivery.body_complete);
        assert_eq!(delivery.body_len, all.len() as u64);
        assert_eq!(delivery.body_digest, digest(&all));
    }
    chaos.shutdown().await;
}
