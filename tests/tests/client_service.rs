//! `backstop::Client` where users already are: as a tower `Service` (in a `ServiceBuilder` stack
//! of their own, with `oneshot`), with streaming request bodies (replayed under the replay limit,
//! not over it), the `put` / `delete` / JSON conveniences, and the TCP options of its builder —
//! all against real loopback servers (`backstop-chaos` counts what it received).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use backstop::retry::StopReason;
use backstop::{CallInfo, Client, JsonBodyExt, Kind, Phase, RequestBody};
use backstop_chaos::{ChaosServer, Fault, Script, digest};
use bytes::Bytes;
use common::bounded;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;
use tower::{ServiceBuilder, ServiceExt};

/// A request body fed through a channel, as an upload relayed chunk by chunk would be: its
/// length is unknown until the sender is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// A channel body that will carry `chunks` chunks of `size` bytes (chunk `i` filled with byte
/// `i`), and the bytes it carries in all.
fn channel_body(chunks: u8, size: usize) -> (ChannelBody, Vec<u8>) {
    let (tx, rx) = mpsc::channel(1);
    let mut all = Vec::new();
    let parts: Vec<Bytes> = (0..chunks)
        .map(|i| Bytes::from(vec![b'a' + i; size]))
        .collect();
    for part in &parts {
        all.extend_from_slice(part);
    }
    tokio::spawn(async move {
        for part in parts {
            if tx.send(part).await.is_err() {
                return;
            }
        }
    });
    (ChannelBody(rx), all)
}

fn client(replay_limit: usize) -> Client {
    Client::builder()
        .replay_limit(replay_limit)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .seed(7)
        .build()
        .unwrap()
}

/// Reset once after the request was read, then answered: the replayed stream must arrive whole.
#[tokio::test]
async fn a_streamed_body_under_the_replay_limit_is_replayed_whole_after_a_reset() {
    let chaos = ChaosServer::start().await.unwrap();
    chaos.script("/upload", Script::fail_times(1, Fault::ResetAfterRead));
    let (body, sent) = channel_body(3, 1000);
    let req = Request::put(chaos.url("/upload")).body(body).unwrap();

    let res = bounded(client(4096).oneshot(req)).await.unwrap();

    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(CallInfo::of(&res).unwrap().attempts, 2);
    let deliveries = chaos.deliveries();
    assert_eq!(deliveries.len(), 2, "sent, reset, sent again");
    for (n, d) in deliveries.iter().enumerate() {
        assert_eq!(d.body_len, 3000, "delivery {n} has the whole body");
        assert_eq!(
            d.body_digest,
            digest(&sent),
            "delivery {n} has the same bytes"
        );
    }
}

/// Over the limit, the bytes already sent are gone: the reset is the answer, and the call info
/// says why it was not retried.
#[tokio::test]
async fn a_streamed_body_over_the_replay_limit_is_sent_once_and_says_why() {
    let chaos = ChaosServer::start().await.unwrap();
    chaos.script("/upload", Script::fail_times(1, Fault::ResetAfterRead));
    let (body, sent) = channel_body(4, 1000);
    let req = Request::put(chaos.url("/upload")).body(body).unwrap();

    let err = bounded(client(1024).oneshot(req)).await.unwrap_err();

    assert_ne!(
        err.kind(),
        Kind::BodyNotReplayable,
        "the real failure, not the stop reason"
    );
    let info = CallInfo::of_error(&err).expect("an error carries its call info");
    assert_eq!(info.attempts, 1);
    assert_eq!(info.retry_stopped, Some(StopReason::BodyNotReplayable));
    let deliveries = chaos.deliveries();
    assert_eq!(deliveries.len(), 1, "never sent again");
    assert_eq!(deliveries[0].body_len, sent.len() as u64);
}

/// The header a user's own layer adds, so the test sees the request went through it.
fn stack(
    client: &Client,
) -> impl tower::Service<
    Request<RequestBody>,
    Response = http::Response<backstop::ResponseBody>,
    Error = backstop::Error,
> + Clone {
    ServiceBuilder::new()
        .map_request(|mut req: Request<RequestBody>| {
            req.headers_mut()
                .insert("x-team", HeaderValue::from_static("checkout"));
            req
        })
        .service(client.clone())
}

#[tokio::test]
async fn oneshot_through_a_users_service_builder_stack_with_full_and_streamed_bodies() {
    let chaos = ChaosServer::start().await.unwrap();
    chaos.script("/full", Script::fail_times(1, Fault::ResetAfterRead));
    chaos.script("/stream", Script::fail_times(1, Fault::ResetAfterRead));
    let client = client(64 * 1024);

    // `Full<Bytes>` straight into the client's `Service` impl, in a stack over any body type.
    let full = ServiceBuilder::new()
        .map_request(|mut req: Request<Full<Bytes>>| {
            req.headers_mut()
                .insert("x-team", HeaderValue::from_static("checkout"));
            req
        })
        .service(client.clone());
    let req = Request::put(chaos.url("/full"))
        .body(Full::new(Bytes::from_static(b"{\"amount\": 42}")))
        .unwrap();
    let res = bounded(full.oneshot(req)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "ok\n");

    // A streamed body, made a `RequestBody` by the user before their stack.
    let (body, sent) = channel_body(2, 500);
    let req = Request::put(chaos.url("/stream"))
        .body(RequestBody::stream(body.map_err(|never| match never {})))
        .unwrap();
    let res = bounded(stack(&client).oneshot(req)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // A streamed body of the user's own type, straight into the client's `Service` impl.
    chaos.script("/channel", Script::fail_times(1, Fault::ResetAfterRead));
    let channel = ServiceBuilder::new()
        .map_request(|mut req: Request<ChannelBody>| {
            req.headers_mut()
                .insert("x-team", HeaderValue::from_static("checkout"));
            req
        })
        .service(client.clone());
    let (body, channel_sent) = channel_body(3, 700);
    let req = Request::put(chaos.url("/channel")).body(body).unwrap();
    let res = bounded(channel.oneshot(req)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let deliveries = chaos.deliveries();
    assert_eq!(deliveries.len(), 6, "each was reset once and replayed");
    for d in &deliveries {
        assert_eq!(d.headers.get("x-team").unwrap(), "checkout", "{}", d.path);
    }
    for d in &deliveries {
        let want = match d.path.as_str() {
            "/full" => digest(b"{\"amount\": 42}"),
            "/stream" => digest(&sent),
            _ => digest(&channel_sent),
        };
        assert_eq!(
            d.body_digest, want,
            "{}: the whole body, every time",
            d.path
        );
    }
}

#[tokio::test]
async fn a_client_is_always_ready_even_with_an_open_breaker() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = Client::builder()
        .max_attempts(1)
        .consecutive_failures(2)
        .build()
        .unwrap();
    let url = chaos.fault_url(&Fault::status(503));
    for _ in 0..2 {
        let res = bounded(client.get(&url)).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    // The breaker of that host is open now; the client is still ready, and the call is refused.
    let mut service = client.clone();
    let ready = std::future::poll_fn(|cx| {
        tower::Service::<Request<Full<Bytes>>>::poll_ready(&mut service, cx)
    });
    bounded(ready).await.unwrap();
    let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
    let err = bounded(service.oneshot(req)).await.unwrap_err();
    assert_eq!(err.kind(), Kind::BreakerOpen);
    assert_eq!(chaos.request_count(), 2, "the refused call sent nothing");
}

#[tokio::test]
async fn put_and_delete_send_their_methods() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = client(1024);
    let res = client.put(&chaos.url("/item"), "v2").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = client.delete(&chaos.url("/item")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let d = chaos.deliveries();
    assert_eq!(
        d.iter()
            .map(|d| (d.method.clone(), d.body_len))
            .collect::<Vec<_>>(),
        [(Method::PUT, 2), (Method::DELETE, 0)]
    );
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Order {
    id: u64,
    items: Vec<String>,
}

#[tokio::test]
async fn json_goes_out_with_its_content_type_and_comes_back_typed() {
    // Echoes a JSON body, and refuses any other content type.
    let app = axum::Router::new().route(
        "/echo",
        axum::routing::post(|headers: http::HeaderMap, body: Bytes| async move {
            match headers.get(http::header::CONTENT_TYPE) {
                Some(ct) if ct == "application/json" => (StatusCode::OK, body),
                _ => (StatusCode::UNSUPPORTED_MEDIA_TYPE, Bytes::new()),
            }
        }),
    );
    let addr = common::serve_axum(app).await;
    let client = client(1024);
    let order = Order {
        id: 7,
        items: vec!["tea".into(), "scone".into()],
    };
    let res = bounded(client.post_json(&format!("http://{addr}/echo"), &order))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let back: Order = res.json().await.unwrap();
    assert_eq!(back, order);

    // Over the read bound: refused while reading, not parsed.
    let res = client
        .post_json(&format!("http://{addr}/echo"), &order)
        .await
        .unwrap();
    let err = res.json_limited::<Order>(8).await.unwrap_err();
    assert_eq!((err.kind(), err.phase()), (Kind::Other, Phase::ReadBody));
}

/// Accepts one connection on 127.0.0.1, answers one HTTP/1.1 request with `200`, and says which
/// address the connection came from.
async fn one_answer_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<IpAddr>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(async move {
        let (mut stream, peer) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client closed before its request head ended");
            head.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        peer.ip()
    });
    (addr, served)
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn local_address_and_tcp_options_reach_the_connection() {
    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let client = Client::builder()
        .local_address(from)
        .tcp_keepalive(Duration::from_secs(30))
        .tcp_keepalive_interval(Duration::from_secs(5))
        .tcp_keepalive_retries(3)
        .tcp_user_timeout(Duration::from_secs(20))
        .tcp_nodelay(true)
        .happy_eyeballs_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let (addr, served) = one_answer_server().await;
    let res = bounded(client.get(&format!("http://{addr}/")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        served.await.unwrap(),
        from,
        "the server saw the local address"
    );
}

#[test]
fn tcp_options_out_of_range_are_named_as_the_builder_names_them() {
    let field = |b: backstop::ClientBuilder| b.build().unwrap_err().field().to_owned();
    let b = Client::builder;
    assert_eq!(field(b().tcp_keepalive(Duration::ZERO)), "tcp_keepalive");
    assert_eq!(
        field(b().tcp_keepalive_interval(Duration::from_secs(5))),
        "tcp_keepalive_interval"
    );
    assert_eq!(
        field(
            b().tcp_keepalive(Duration::from_secs(5))
                .tcp_keepalive_retries(0)
        ),
        "tcp_keepalive_retries"
    );
    assert_eq!(
        field(b().happy_eyeballs_timeout(Duration::from_secs(60))),
        "happy_eyeballs_timeout"
    );
    assert_eq!(field(b().tcp_send_buffer_size(0)), "tcp_send_buffer_size");
    #[cfg(target_os = "linux")]
    {
        assert_eq!(
            field(b().tcp_user_timeout(Duration::ZERO)),
            "tcp_user_timeout"
        );
        assert_eq!(field(b().interface("")), "interface");
    }
}
