//! The ready server stack (`ServerStack` + `Server`) against hostile clients on loopback: a
//! client cannot raise the server's deadline with `request-timeout-ms` or `grpc-timeout`, and a
//! client trickling its request body — while asking for a two-minute deadline — is dropped at the
//! idle bound and gives its load-shed slot back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use backstop::ServerStack;
use backstop::deadline::Deadline;
use backstop::server::{IncomingBody, ServeConfig, Server};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout};
use tower::Layer;

const BOUND: Duration = Duration::from_secs(10);

async fn serve<S, B>(config: ServeConfig, app: S) -> (SocketAddr, oneshot::Sender<()>)
where
    S: tower::Service<Request<IncomingBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<backstop::server::BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<backstop::server::BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Server::new(listener, config).serve_with_shutdown(app, async {
            let _ = stopped.await;
        }),
    );
    (addr, stop)
}

/// Sends `head` (and `Connection: close`) on a raw connection and returns everything answered.
async fn raw(addr: SocketAddr, head: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    timeout(BOUND, stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&answer).to_string()
}

#[tokio::test]
async fn deadline_headers_only_shorten_the_servers_own_deadline() {
    let stack = ServerStack::builder()
        .default_deadline(Duration::from_secs(2))
        .max_deadline(Duration::from_secs(120))
        .build()
        .unwrap();
    // The handler answers with the milliseconds its deadline leaves it.
    let app = stack.layer(tower::service_fn(|req: Request<IncomingBody>| async move {
        let left = Deadline::of(&req).map_or(0, |d| d.remaining().as_millis());
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(left.to_string()))))
    }));
    let (addr, stop) = serve(ServeConfig::default(), app).await;
    for (header, ceiling_ms) in [
        ("request-timeout-ms: 120000", 2000),
        ("grpc-timeout: 99999S", 2000),
        ("grpc-timeout: 99999999H", 2000),
        ("request-timeout-ms: 800", 800),
        ("grpc-timeout: 900m", 900),
    ] {
        let answer = raw(
            addr,
            &format!("GET / HTTP/1.1\r\nHost: test\r\n{header}\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{header}: {answer:?}");
        let left: u128 = answer.rsplit("\r\n").next().unwrap().parse().unwrap();
        assert!(
            left <= ceiling_ms && left + 500 > ceiling_ms,
            "{header}: {left} ms left, expected about {ceiling_ms}"
        );
    }
    let _ = stop.send(());
}

#[tokio::test]
async fn a_trickled_body_asking_for_two_minutes_is_dropped_at_the_idle_bound() {
    const IDLE: Duration = Duration::from_millis(400);
    let stack = ServerStack::builder().max_in_flight(2).build().unwrap();
    let shed_view = stack.clone();
    let app = axum::Router::new()
        .route(
            "/upload",
            axum::routing::post(|body: Bytes| async move { body.len().to_string() }),
        )
        .route("/", axum::routing::get(|| async { "ok" }))
        .layer(stack);
    let config = ServeConfig::builder()
        .idle_timeout(Some(IDLE))
        .build()
        .unwrap();
    let (addr, stop) = serve(config, app).await;

    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                b"POST /upload HTTP/1.1\r\nHost: test\r\nrequest-timeout-ms: 120000\r\n\
                  Content-Length: 1000\r\n\r\nx",
            )
            .await
            .unwrap();
        slow.push(stream);
    }
    timeout(BOUND, async {
        while shed_view.in_flight() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the slow requests reach their handler");
    let started = Instant::now();
    // Both slots are taken while the slow clients are connected: the server sheds.
    let answer = raw(addr, "GET / HTTP/1.1\r\nHost: test\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    // The slow clients never send another byte; each is answered and closed at the idle bound.
    for mut stream in slow {
        let mut answer = Vec::new();
        timeout(BOUND, stream.read_to_end(&mut answer))
            .await
            .expect("dropped long before the two-minute deadline")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer:?}");
    }
    let dropped_after = started.elapsed();
    assert!(dropped_after < IDLE * 4, "{dropped_after:?}");
    assert_eq!(shed_view.in_flight(), 0);
    let answer = raw(addr, "GET / HTTP/1.1\r\nHost: test\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let _ = stop.send(());
}
