//! A real tonic client and server on loopback, with backstop's layers around tonic's `Channel`:
//! what gRPC's retry design (gRFC A6) asks of them, counted at the server.
//!
//! The messages are prost structs derived by hand and the service is routed by hand with
//! `tonic::server::Grpc` — what tonic's generated code does, without protoc. The server runs on
//! hyper's HTTP/2 connection directly, with backstop-deadline's `ServerDeadlineLayer` in front of
//! the router, so the deadline it enforces is backstop's (tonic's own `Server` also enforces
//! `grpc-timeout`, answering `CANCELLED`).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use backstop_breaker::CircuitBreakerLayer;
use backstop_classify::{ClassifyLayer, GrpcCode, GrpcPolicy};
use backstop_deadline::{AttemptTimeoutLayer, DeadlineLayer, Propagation, ServerDeadlineLayer};
use backstop_retry::{
    Backoff, GrpcRetryPolicy, Jitter, MethodRetry, ReplayBody, RetryInfo, RetryLayer,
};
use bytes::Bytes;
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use tower::util::MapRequest;
use tower::{Service, ServiceBuilder, service_fn};

// === the messages and the service, by hand ===

#[derive(Clone, PartialEq, prost::Message)]
struct SayRequest {
    #[prost(string, tag = "1")]
    text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SayReply {
    #[prost(string, tag = "1")]
    text: String,
}

const SAY: &str = "/backstop.test.Echo/Say";
/// A method that answers a response head, then `UNAVAILABLE` in the trailers.
const LATE: &str = "/backstop.test.Echo/Late";

/// What the server does with one delivery.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Ok,
    Fail(Code),
    /// Fail with `grpc-retry-pushback-ms` set to this value.
    Pushback(Code, &'static str),
    /// Answer OK after this long (the server's deadline may drop it first).
    Slow(Duration),
}

/// When a delivery reached the handler, and the `grpc-timeout` it carried.
type Delivery = (Instant, Option<String>);

/// The scripted server and what it saw.
#[derive(Clone, Default)]
struct Upstream {
    script: Arc<Mutex<VecDeque<Answer>>>,
    /// When each delivery reached the handler, and the `grpc-timeout` it carried.
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    /// Handlers dropped before they finished (the server stopped waiting).
    abandoned: Arc<Mutex<u32>>,
    /// Told when a handler is dropped before its end.
    dropped: Arc<Notify>,
    finished: Arc<Mutex<u32>>,
    /// The `grpc-status` of each response head the server sent (`None`: in the trailers).
    answered: Arc<Mutex<Vec<Option<http::HeaderValue>>>>,
}

impl Upstream {
    fn new(answers: impl IntoIterator<Item = Answer>) -> Upstream {
        Upstream {
            script: Arc::new(Mutex::new(answers.into_iter().collect())),
            ..Upstream::default()
        }
    }

    fn deliveries(&self) -> usize {
        self.deliveries.lock().unwrap().len()
    }

    fn times(&self) -> Vec<Instant> {
        self.deliveries
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.0)
            .collect()
    }

    async fn say(
        self,
        req: tonic::Request<SayRequest>,
    ) -> Result<tonic::Response<SayReply>, Status> {
        let timeout = req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.deliveries
            .lock()
            .unwrap()
            .push((Instant::now(), timeout));
        let answer = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Answer::Ok);
        let reply = || {
            tonic::Response::new(SayReply {
                text: req.get_ref().text.clone(),
            })
        };
        match answer {
            Answer::Ok => Ok(reply()),
            Answer::Fail(code) => Err(Status::new(code, "scripted")),
            Answer::Pushback(code, ms) => {
                let mut status = Status::new(code, "scripted, with pushback");
                status
                    .metadata_mut()
                    .insert("grpc-retry-pushback-ms", ms.parse().unwrap());
                Err(status)
            }
            Answer::Slow(delay) => {
                // Counts a handler dropped before its end: the server stopped waiting for it.
                struct Guard(Arc<Mutex<u32>>, Arc<Notify>, bool);
                impl Drop for Guard {
                    fn drop(&mut self) {
                        if !self.2 {
                            *self.0.lock().unwrap() += 1;
                            self.1.notify_one();
                        }
                    }
                }
                let mut guard = Guard(self.abandoned.clone(), self.dropped.clone(), false);
                tokio::time::sleep(delay).await;
                guard.2 = true;
                *self.finished.lock().unwrap() += 1;
                Ok(reply())
            }
        }
    }
}

/// The router tonic's generated code would be: one `tonic::server::Grpc` per method.
#[derive(Clone)]
struct Router(Upstream);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<http::Request<Incoming>> for Router {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
        let upstream = self.0.clone();
        Box::pin(async move {
            Ok(match req.uri().path() {
                SAY => {
                    let method = service_fn(move |r| upstream.clone().say(r));
                    let mut grpc =
                        tonic::server::Grpc::new(ProstCodec::<SayReply, SayRequest>::default());
                    grpc.unary(method, req).await
                }
                LATE => {
                    upstream
                        .deliveries
                        .lock()
                        .unwrap()
                        .push((Instant::now(), None));
                    // A response head without a status, then the status in the trailers: by
                    // then the call is committed (A6), whatever the status says.
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "14".parse().unwrap());
                    let body =
                        Empty::<Bytes>::new().with_trailers(async move { Some(Ok(trailers)) });
                    let mut res = http::Response::new(tonic::body::Body::new(body));
                    res.headers_mut()
                        .insert("content-type", "application/grpc".parse().unwrap());
                    res
                }
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// Serves the router on a loopback port, HTTP/2 only, behind the server deadline layer.
async fn serve(upstream: &Upstream) -> SocketAddr {
    serve_dropping(upstream, 0).await
}

/// Like [`serve`], but closes the first `drop_first` connections as soon as they are accepted,
/// before reading a byte: calls sent on them never reach the server.
async fn serve_dropping(upstream: &Upstream, mut drop_first: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = upstream.answered.clone();
    let svc = ServiceBuilder::new()
        // What left the server, whoever wrote it: the handler or the deadline layer.
        .map_response(move |res: http::Response<TonicBody>| {
            let status = res.headers().get("grpc-status").cloned();
            answered.lock().unwrap().push(status);
            res
        })
        .layer(ServerDeadlineLayer::new())
        .service(Router(upstream.clone()));
    tokio::spawn(async move {
        loop {
            let Ok((io, _)) = listener.accept().await else {
                return;
            };
            if drop_first > 0 {
                drop_first -= 1;
                drop(io);
                continue;
            }
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(io), svc)
                    .await;
            });
        }
    });
    addr
}

// === the client: backstop's layers around tonic's Channel ===

/// tonic's `Channel` takes `tonic::body::Body` only; the retry layer hands down a
/// `ReplayBody<tonic::body::Body>`, which `Body::new` boxes back (one allocation per attempt).
fn channel(addr: SocketAddr) -> MapRequest<Channel, fn(ReplayRequest) -> http::Request<TonicBody>> {
    ServiceBuilder::new()
        .map_request((|req: ReplayRequest| req.map(TonicBody::new)) as fn(_) -> _)
        .service(plain_channel(addr))
}

type TonicBody = tonic::body::Body;
type ReplayRequest = http::Request<ReplayBody<TonicBody>>;

fn plain_channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

/// Calls `path` once through the whole stack, outermost first: deadline → retry → breaker →
/// classify → attempt timeout → tonic's channel.
async fn call(
    addr: SocketAddr,
    path: &'static str,
    retry: RetryLayer<GrpcPolicy>,
    deadline: Duration,
) -> Result<tonic::Response<SayReply>, Status> {
    let stack = ServiceBuilder::new()
        .map_err(to_status)
        .layer(DeadlineLayer::new(deadline))
        .layer(retry)
        .layer(CircuitBreakerLayer::new())
        .layer(ClassifyLayer::with_policy(GrpcPolicy::new()))
        .layer(AttemptTimeoutLayer::new(Duration::from_secs(10)))
        .service(channel(addr));
    let mut client = tonic::client::Grpc::new(stack);
    client
        .ready()
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    client
        .unary(
            tonic::Request::new(SayRequest {
                text: "hello".into(),
            }),
            PathAndQuery::from_static(path),
            ProstCodec::<SayRequest, SayReply>::default(),
        )
        .await
}

/// What a tonic caller should get for a failure of backstop's layers: the status a gRPC client
/// reports for it (tonic alone makes every error it cannot downcast `UNKNOWN`).
fn to_status(err: backstop_classify::Error) -> Status {
    Status::new(
        Code::from_i32(err.kind().grpc_code().as_i32()),
        err.to_string(),
    )
}

fn retry(methods: Option<GrpcRetryPolicy>) -> RetryLayer<GrpcPolicy> {
    let builder = RetryLayer::builder()
        .max_attempts(5)
        .seed(7)
        .no_budget()
        .policy(GrpcPolicy::new());
    match methods {
        Some(methods) => builder.grpc_methods(methods),
        None => builder,
    }
    .build()
    .unwrap()
}

/// The service config of the tests: `Say` retried on `UNAVAILABLE`, up to 3 attempts.
fn say_policy() -> GrpcRetryPolicy {
    GrpcRetryPolicy::new().method(
        "backstop.test.Echo",
        "Say",
        MethodRetry::new(3, [GrpcCode::Unavailable]),
    )
}

const LONG: Duration = Duration::from_secs(30);

// === (a) (b) (c): what is retried, per method ===

#[tokio::test(start_paused = true)]
async fn unavailable_then_ok_is_retried_under_the_method_policy() {
    let upstream = Upstream::new([Answer::Fail(Code::Unavailable), Answer::Ok]);
    let addr = serve(&upstream).await;
    let res = call(addr, SAY, retry(Some(say_policy())), LONG)
        .await
        .unwrap();
    assert_eq!(res.get_ref().text, "hello");
    assert_eq!(upstream.deliveries(), 2);
    // The layer's record travels in tonic's response extensions.
    let info = res.extensions().get::<RetryInfo>().copied().unwrap();
    assert_eq!(info.attempts(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_status_the_policy_does_not_list_is_not_retried() {
    let upstream = Upstream::new([Answer::Fail(Code::InvalidArgument), Answer::Ok]);
    let addr = serve(&upstream).await;
    let status = call(addr, SAY, retry(Some(say_policy())), LONG)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(upstream.deliveries(), 1);
}

#[tokio::test(start_paused = true)]
async fn without_a_policy_for_the_method_a_processed_call_is_not_retried() {
    // Every gRPC call is a POST: UNAVAILABLE after the server saw the call is final unless the
    // service owner said otherwise, for this method.
    for methods in [
        None,
        Some(GrpcRetryPolicy::new().method(
            "backstop.test.Echo",
            "Other",
            MethodRetry::new(3, [GrpcCode::Unavailable]),
        )),
    ] {
        let upstream = Upstream::new([Answer::Fail(Code::Unavailable), Answer::Ok]);
        let addr = serve(&upstream).await;
        let status = call(addr, SAY, retry(methods), LONG).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(upstream.deliveries(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn the_methods_max_attempts_replaces_the_layers() {
    // The layer allows 5; the method 3.
    let upstream = Upstream::new([Answer::Fail(Code::Unavailable); 5]);
    let addr = serve(&upstream).await;
    let status = call(addr, SAY, retry(Some(say_policy())), LONG)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(upstream.deliveries(), 3);
    // A whole-service entry covers the method too, with its own limit.
    let upstream = Upstream::new([Answer::Fail(Code::Unavailable); 5]);
    let addr = serve(&upstream).await;
    let service = GrpcRetryPolicy::new().service(
        "backstop.test.Echo",
        MethodRetry::new(4, [GrpcCode::Unavailable]),
    );
    call(addr, SAY, retry(Some(service)), LONG)
        .await
        .unwrap_err();
    assert_eq!(upstream.deliveries(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_call_that_never_reached_the_server_is_retried_without_a_policy() {
    // A6's transparent retry: the connection closed before the call went out, so even a method
    // no policy covers is sent again.
    let upstream = Upstream::new([Answer::Ok]);
    let addr = serve_dropping(&upstream, 1).await;
    let res = call(addr, SAY, retry(None), LONG).await.unwrap();
    assert_eq!(res.get_ref().text, "hello");
    assert_eq!(upstream.deliveries(), 1);
    let info = res.extensions().get::<RetryInfo>().copied().unwrap();
    assert_eq!(info.attempts(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_counts_unavailable_and_not_invalid_argument() {
    // One stack for every call, so one breaker (5 consecutive failures open it by default).
    async fn calls(upstream: &Upstream, n: usize) -> Vec<Code> {
        let addr = serve(upstream).await;
        let stack = ServiceBuilder::new()
            .map_err(to_status)
            .layer(retry(None))
            .layer(CircuitBreakerLayer::new())
            .layer(ClassifyLayer::with_policy(GrpcPolicy::new()))
            .service(channel(addr));
        let client = tonic::client::Grpc::new(stack);
        let mut codes = Vec::new();
        for _ in 0..n {
            let mut client = client.clone();
            client.ready().await.unwrap();
            let result = client
                .unary(
                    tonic::Request::new(SayRequest::default()),
                    PathAndQuery::from_static(SAY),
                    ProstCodec::<SayRequest, SayReply>::default(),
                )
                .await;
            codes.push(result.map_or_else(|status| status.code(), |_| Code::Ok));
        }
        codes
    }
    // A wrong request is an answer: the server is healthy, every call reaches it.
    let upstream = Upstream::new([Answer::Fail(Code::InvalidArgument); 8]);
    let codes = calls(&upstream, 9).await;
    assert_eq!(codes[..8], [Code::InvalidArgument; 8]);
    assert_eq!(codes[8], Code::Ok);
    assert_eq!(upstream.deliveries(), 9);
    // UNAVAILABLE five times opens it: the sixth call is refused locally, as UNAVAILABLE, and
    // never reaches the server.
    let upstream = Upstream::new([Answer::Fail(Code::Unavailable); 5]);
    let codes = calls(&upstream, 6).await;
    assert_eq!(codes, [Code::Unavailable; 6]);
    assert_eq!(upstream.deliveries(), 5);
}

// === (d) the deadline travels as grpc-timeout and the server enforces it ===

/// The `grpc-timeout` the server saw on its first delivery, in milliseconds.
fn sent_timeout_ms(upstream: &Upstream) -> u64 {
    let sent = upstream.deliveries.lock().unwrap()[0].1.clone().unwrap();
    let (digits, unit) = sent.split_at(sent.len() - 1);
    let value: u64 = digits.parse().unwrap();
    match unit {
        "m" => value,
        "u" => value / 1_000,
        "n" => value / 1_000_000,
        _ => panic!("grpc-timeout: {sent}"),
    }
}

/// Waits for the server to drop the slow handler (bounded: a test that hangs is a failure).
async fn handler_dropped(upstream: &Upstream) {
    tokio::time::timeout(Duration::from_secs(60), upstream.dropped.notified())
        .await
        .expect("the server never dropped the handler");
    assert_eq!(*upstream.abandoned.lock().unwrap(), 1);
    assert_eq!(*upstream.finished.lock().unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_handler_slower_than_the_propagated_deadline_ends_in_deadline_exceeded() {
    // The client's deadline travels as `grpc-timeout`; the server's deadline layer drops the
    // handler when it runs out and answers DEADLINE_EXCEEDED. tonic's `Channel` also enforces
    // each request's `grpc-timeout` itself, at the same instant, and says `CANCELLED` ("Timeout
    // expired"): backstop classifies that as the deadline, which `to_status` turns into
    // DEADLINE_EXCEEDED, so the caller hears the same either way.
    let upstream = Upstream::new([Answer::Slow(Duration::from_secs(5))]);
    let addr = serve(&upstream).await;
    let start = Instant::now();
    let status = call(
        addr,
        SAY,
        retry(Some(say_policy())),
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let ms = sent_timeout_ms(&upstream);
    assert!((280..=290).contains(&ms), "grpc-timeout: {ms}m");
    assert!(
        elapsed >= Duration::from_millis(ms) && elapsed < Duration::from_millis(300),
        "{elapsed:?}"
    );
    handler_dropped(&upstream).await;
    // The server's deadline layer, not the handler, answered: DEADLINE_EXCEEDED in the head.
    let answered = upstream.answered.lock().unwrap().clone();
    assert_eq!(answered, [Some(http::HeaderValue::from_static("4"))]);
    // DEADLINE_EXCEEDED is not in the policy: one delivery.
    assert_eq!(upstream.deliveries(), 1);
}

#[tokio::test]
async fn the_server_enforces_the_propagated_deadline_under_a_hyper_util_client() {
    // A hyper-util client enforces no `grpc-timeout` of its own, so what the caller hears is the
    // server's deadline layer. Real time (hyper-util's pooled HTTP/2 client stalls under tokio's
    // paused clock), so the margin is wide: the server is told 200 ms, the caller waits 300.
    let upstream = Upstream::new([Answer::Slow(Duration::from_secs(5))]);
    let addr = serve(&upstream).await;
    let hyper_client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<ReplayBody<TonicBody>>();
    let deadline = DeadlineLayer::builder()
        .timeout(Duration::from_millis(300))
        .propagation(Propagation::new().margin(Duration::from_millis(100)))
        .build()
        .unwrap();
    let stack = ServiceBuilder::new()
        .map_err(to_status)
        .layer(deadline)
        .layer(retry(Some(say_policy())))
        .layer(CircuitBreakerLayer::new())
        .layer(ClassifyLayer::with_policy(GrpcPolicy::new()))
        .service(hyper_client);
    let origin = format!("http://{addr}").parse().unwrap();
    let mut client = tonic::client::Grpc::with_origin(stack, origin);
    client.ready().await.unwrap();
    let start = Instant::now();
    let status = client
        .unary(
            tonic::Request::new(SayRequest::default()),
            PathAndQuery::from_static(SAY),
            ProstCodec::<SayRequest, SayReply>::default(),
        )
        .await
        .unwrap_err();
    let elapsed = start.elapsed();
    let ms = sent_timeout_ms(&upstream);
    assert!((150..=200).contains(&ms), "grpc-timeout: {ms}m");
    // The server's answer, not the client's timer (which would say "timed out (deadline)…").
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "Deadline exceeded");
    assert!(
        elapsed >= Duration::from_millis(ms) && elapsed < Duration::from_millis(300),
        "{elapsed:?}"
    );
    handler_dropped(&upstream).await;
    assert_eq!(
        *upstream.answered.lock().unwrap(),
        [Some(http::HeaderValue::from_static("4"))]
    );
    assert_eq!(upstream.deliveries(), 1);
}

// === (e) trailers-only, committed responses, pushback ===

#[tokio::test(start_paused = true)]
async fn a_status_in_the_trailers_after_a_head_is_committed() {
    // The policy lists UNAVAILABLE, but the response head came first: A6's committed call.
    let policy = GrpcRetryPolicy::new().service(
        "backstop.test.Echo",
        MethodRetry::new(3, [GrpcCode::Unavailable]),
    );
    let upstream = Upstream::new([]);
    let addr = serve(&upstream).await;
    let status = call(addr, LATE, retry(Some(policy)), LONG)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(upstream.deliveries(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_error_is_trailers_only_and_classified_from_its_head() {
    // What tonic's server sends for an error, read below the classifier: the status in the head
    // and no body, judged at once.
    let upstream = Upstream::new([Answer::Fail(Code::Unavailable)]);
    let addr = serve(&upstream).await;
    let seen = Arc::new(Mutex::new(None));
    let record = {
        let seen = seen.clone();
        move |res: http::Response<_>| {
            *seen.lock().unwrap() = Some((
                res.headers().get("grpc-status").cloned(),
                res.extensions()
                    .get::<backstop_classify::Outcome>()
                    .copied(),
                res.extensions()
                    .get::<backstop_classify::TrailerOutcome>()
                    .is_some(),
            ));
            res
        }
    };
    let stack = ServiceBuilder::new()
        .map_response(record)
        .layer(ClassifyLayer::with_policy(GrpcPolicy::new()))
        .service(plain_channel(addr));
    let mut client = tonic::client::Grpc::new(stack);
    client.ready().await.unwrap();
    let status = client
        .unary(
            tonic::Request::new(SayRequest::default()),
            PathAndQuery::from_static(SAY),
            ProstCodec::<SayRequest, SayReply>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let (grpc_status, outcome, waits_for_trailers) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(grpc_status.unwrap(), "14");
    let failure = outcome.unwrap().failure().copied().unwrap();
    assert_eq!(
        failure.kind(),
        backstop_classify::Kind::Grpc(GrpcCode::Unavailable)
    );
    assert_eq!(failure.phase(), backstop_classify::Phase::AwaitHeaders);
    assert!(!waits_for_trailers);
}

#[tokio::test(start_paused = true)]
async fn pushback_replaces_the_backoff() {
    let upstream = Upstream::new([Answer::Pushback(Code::Unavailable, "700"), Answer::Ok]);
    let addr = serve(&upstream).await;
    let res = call(addr, SAY, retry(Some(say_policy())), LONG)
        .await
        .unwrap();
    let times = upstream.times();
    assert_eq!(times.len(), 2);
    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_millis(700) && gap < Duration::from_millis(710),
        "{gap:?}"
    );
    let info = res.extensions().get::<RetryInfo>().copied().unwrap();
    assert_eq!(info.delay(0), Some(Duration::from_millis(700)));
}

#[tokio::test(start_paused = true)]
async fn after_a_pushback_the_methods_backoff_starts_over() {
    // The method's own backoff (no jitter: 100 ms, 200 ms, 400 ms…); A6 restarts it from the
    // initial delay after a retry the server timed.
    let backoff = Backoff::new(
        Duration::from_millis(100),
        Duration::from_secs(10),
        Jitter::None,
    )
    .unwrap();
    let policy = GrpcRetryPolicy::new().method(
        "backstop.test.Echo",
        "Say",
        MethodRetry::new(4, [GrpcCode::Unavailable]).backoff(backoff),
    );
    let upstream = Upstream::new([
        Answer::Fail(Code::Unavailable),
        Answer::Pushback(Code::Unavailable, "500"),
        Answer::Fail(Code::Unavailable),
        Answer::Ok,
    ]);
    let addr = serve(&upstream).await;
    let res = call(addr, SAY, retry(Some(policy)), LONG).await.unwrap();
    let info = res.extensions().get::<RetryInfo>().copied().unwrap();
    let delays: Vec<_> = info.delays().map(|d| d.as_millis()).collect();
    // Without the restart the third would be 400 ms.
    assert_eq!(delays, [100, 500, 100]);
    let times = upstream.times();
    let gaps: Vec<_> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert_eq!(gaps.len(), 3);
    for (gap, delay) in gaps.iter().zip(&delays) {
        assert!(
            gap >= delay && *gap < delay + 10,
            "{gaps:?} against {delays:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn negative_or_garbage_pushback_stops_the_retries() {
    for value in ["-1", "soon"] {
        let upstream = Upstream::new([Answer::Pushback(Code::Unavailable, value), Answer::Ok]);
        let addr = serve(&upstream).await;
        let status = call(addr, SAY, retry(Some(say_policy())), LONG)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(upstream.deliveries(), 1, "pushback {value}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_request_message_is_replayed_intact() {
    let upstream = Upstream::new([
        Answer::Fail(Code::Unavailable),
        Answer::Fail(Code::Unavailable),
    ]);
    let addr = serve(&upstream).await;
    let res = call(addr, SAY, retry(Some(say_policy())), LONG)
        .await
        .unwrap();
    // The third delivery decoded the same message the first did.
    assert_eq!(res.get_ref().text, "hello");
    assert_eq!(upstream.deliveries(), 3);
}
