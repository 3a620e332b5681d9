//! Real loopback sockets produce each failure, and the classifier names it exactly.
//!
//! The TLS and chaos-upstream cases live in the workspace `tests/` crate; these need nothing but
//! the OS and hyper-util.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use backstop_classify::{
    ClassifyLayer, Error, Kind, Outcome, Phase, ProtocolFailure, Retryable, Timer,
};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

type TestClient = Client<HttpConnector, Empty<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn get(
    client: &TestClient,
    url: String,
) -> Result<http::Response<hyper::body::Incoming>, Error> {
    let req = Request::get(url).body(Empty::new()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .expect("the request must end on its own")
        .map_err(Error::from)
}

async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// A server on loopback that reads one request head, writes `reply` and closes the connection.
async fn answer_once_then_close(reply: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await;
        stream.write_all(reply).await.unwrap();
        stream.shutdown().await.unwrap();
    });
    addr
}

/// Reads one request head (up to the blank line) so the peer knows we got it.
async fn read_head(stream: &mut TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            return;
        }
        seen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn closed_port_is_refused_while_connecting_and_safe() {
    let err = get(&client(), format!("http://{}/", closed_port().await))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Refused, "{err:?}");
    assert_eq!(err.phase(), Phase::Connect);
    assert_eq!(err.retryable(), Retryable::Safe);
}

#[tokio::test]
async fn linger_zero_close_after_reading_is_reset_and_if_idempotent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await;
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(stream);
    });
    let err = get(&client(), format!("http://{addr}/")).await.unwrap_err();
    server.await.unwrap();
    assert_eq!(err.kind(), Kind::Reset, "{err:?}");
    assert_eq!(err.phase(), Phase::AwaitHeaders);
    assert_eq!(err.retryable(), Retryable::IfIdempotent);
}

#[tokio::test]
async fn close_mid_response_is_an_incomplete_message() {
    let addr = answer_once_then_close(b"HTTP/1.1 200 OK\r\ncontent-le").await;
    let err = get(&client(), format!("http://{addr}/")).await.unwrap_err();
    assert_eq!(
        err.kind(),
        Kind::Protocol(ProtocolFailure::Incomplete),
        "{err:?}"
    );
    assert_eq!(err.phase(), Phase::AwaitHeaders);
    assert_eq!(err.retryable(), Retryable::IfIdempotent);
}

#[tokio::test]
async fn close_mid_body_fails_the_body_in_phase_reading_body() {
    let addr =
        answer_once_then_close(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b").await;
    let svc = ClassifyLayer::new().layer_service(client());
    let req = Request::get(format!("http://{addr}/"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.extensions().get::<Outcome>(), Some(&Outcome::Success));
    let err = res.into_body().collect().await.unwrap_err();
    assert_eq!(err.phase(), Phase::ReadBody, "{err:?}");
    assert_eq!(err.kind(), Kind::Protocol(ProtocolFailure::Incomplete));
}

#[tokio::test]
async fn garbage_instead_of_http_is_malformed() {
    let addr = answer_once_then_close(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
    let err = get(&client(), format!("http://{addr}/")).await.unwrap_err();
    assert_eq!(
        err.kind(),
        Kind::Protocol(ProtocolFailure::Malformed),
        "{err:?}"
    );
    assert_eq!(err.retryable(), Retryable::IfIdempotent);
}

#[tokio::test]
async fn writing_after_the_peer_closed_is_a_broken_pipe() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = TcpStream::connect(addr).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    drop(server);
    // The peer is gone: a write is answered with a RST, which the kernel reports once as
    // ECONNRESET; every write after that fails with EPIPE.
    let mut first = None;
    for _ in 0..1000 {
        match client.write_all(&[0u8; 1024]).await {
            Ok(()) => tokio::task::yield_now().await,
            Err(err) => {
                first = Some(err);
                break;
            }
        }
    }
    let first = Error::from_io(
        first.expect("writes must fail once the peer is gone"),
        Phase::Send,
    );
    assert!(
        matches!(first.kind(), Kind::Reset | Kind::BrokenPipe),
        "{first:?}"
    );
    let err = client.write_all(b"more").await.unwrap_err();
    let err = Error::from_io(err, Phase::Send);
    assert_eq!(err.kind(), Kind::BrokenPipe, "{err:?}");
    assert_eq!(err.phase(), Phase::Send);
    assert_eq!(err.retryable(), Retryable::IfIdempotent);
    assert!(
        err.kind()
            .explanation()
            .contains("after the peer had closed")
    );
}

#[tokio::test]
async fn binding_a_taken_port_is_address_in_use() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let err = TcpListener::bind(addr).await.unwrap_err();
    let err = Error::from_io(err, Phase::Connect);
    assert_eq!(err.kind(), Kind::AddrInUse, "{err:?}");
    assert_eq!(err.retryable(), Retryable::Never);
    assert!(err.kind().explanation().contains("another socket"));
}

#[tokio::test]
async fn injected_resolver_failures_are_resolve_phase() {
    // NXDOMAIN as glibc's getaddrinfo reports it.
    let not_found = tower::service_fn(|_name: Name| async {
        Err::<std::vec::IntoIter<SocketAddr>, _>(io::Error::other(
            "failed to lookup address information: Name or service not known",
        ))
    });
    let client: Client<_, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new_with_resolver(not_found));
    let req = Request::get("http://no-such-host.invalid/")
        .body(Empty::new())
        .unwrap();
    let err = Error::from(client.request(req).await.unwrap_err());
    assert_eq!(err.kind(), Kind::DnsNotFound, "{err:?}");
    assert_eq!(err.phase(), Phase::Resolve);
    assert_eq!(err.retryable(), Retryable::Never);

    // A resolver that is down for now.
    let temporary = tower::service_fn(|_name: Name| async {
        Err::<std::vec::IntoIter<SocketAddr>, _>(io::Error::other(
            "failed to lookup address information: Temporary failure in name resolution",
        ))
    });
    let client: Client<_, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new_with_resolver(temporary));
    let req = Request::get("http://flaky.invalid/")
        .body(Empty::new())
        .unwrap();
    let err = Error::from(client.request(req).await.unwrap_err());
    assert_eq!(err.kind(), Kind::DnsTemporary, "{err:?}");
    assert_eq!(err.phase(), Phase::Resolve);
    assert_eq!(err.retryable(), Retryable::Safe);

    // A resolver that speaks backstop's vocabulary is taken at its word.
    let ours = tower::service_fn(|_name: Name| async {
        Err::<std::vec::IntoIter<SocketAddr>, _>(Error::new(Kind::DnsNotFound, Phase::Resolve))
    });
    let client: Client<_, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new_with_resolver(ours));
    let req = Request::get("http://typo.invalid/")
        .body(Empty::new())
        .unwrap();
    let err = Error::from(client.request(req).await.unwrap_err());
    assert_eq!(err.kind(), Kind::DnsNotFound, "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn a_timer_around_a_stalled_server_is_an_attempt_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await;
        std::future::pending::<()>().await;
    });
    let client = client();
    let req = Request::get(format!("http://{addr}/"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let elapsed = tokio::time::timeout(Duration::from_millis(200), client.request(req))
        .await
        .unwrap_err();
    let err = Error::from(elapsed);
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Attempt));
    assert_eq!(err.retryable(), Retryable::IfIdempotent);
}

#[tokio::test]
async fn classify_layer_marks_status_failures_and_keeps_errors_typed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await;
        stream
            .write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 2\r\ncontent-length: 0\r\n\r\n",
            )
            .await
            .unwrap();
    });
    let svc = ClassifyLayer::new().layer_service(client());
    let req = Request::get(format!("http://{addr}/"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let failure = res
        .extensions()
        .get::<Outcome>()
        .and_then(|o| o.failure().copied())
        .expect("a 503 is a failure");
    assert_eq!(
        failure.kind(),
        Kind::Status(StatusCode::SERVICE_UNAVAILABLE)
    );
    assert_eq!(failure.retry_after(), Some(Duration::from_secs(2)));

    let req = Request::get(format!("http://{}/", closed_port().await))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let err = svc.oneshot(req).await.unwrap_err();
    assert_eq!(err.kind(), Kind::Refused);
    assert!(
        std::error::Error::source(&err).is_some(),
        "the original error is kept"
    );
}

trait LayerServiceExt: Sized {
    fn layer_service<S>(self, inner: S) -> <Self as tower::Layer<S>>::Service
    where
        Self: tower::Layer<S>,
    {
        tower::Layer::layer(&self, inner)
    }
}

impl<P> LayerServiceExt for ClassifyLayer<P> {}
