//! ServerIdleTimeout on the server side: a small accept loop (plain TCP and TLS) serving hyper,
//! with silent, normal and downloading clients on loopback (tokio clock paused).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use backstop_chaos::TlsIdentity;
use backstop_timeout::{ConnectionIdleTimeoutLayer, ServerIdleTimeout};
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Interval};
use tokio_rustls::TlsAcceptor;
use tower::Layer;

const PERIOD: Duration = Duration::from_secs(1);
const SLACK: Duration = Duration::from_millis(50);
const DOWNLOAD_CHUNKS: usize = 20;

/// A download of `DOWNLOAD_CHUNKS` chunks, one every half period: ten periods in all.
struct Download {
    tick: Interval,
    left: usize,
}

impl Body for Download {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        std::task::ready!(self.tick.poll_tick(cx));
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&[b'x'; 1024])))))
    }
}

type ServerBody = http_body_util::Either<Download, http_body_util::Full<Bytes>>;

async fn handle(req: Request<Incoming>) -> Result<Response<ServerBody>, Infallible> {
    Ok(Response::new(match req.uri().path() {
        "/slow" => {
            // Thinks for three periods before answering, sending nothing meanwhile.
            tokio::time::sleep(PERIOD * 3).await;
            http_body_util::Either::Right(http_body_util::Full::new(Bytes::from_static(b"slow")))
        }
        "/download" => http_body_util::Either::Left(Download {
            tick: tokio::time::interval(PERIOD / 2),
            left: DOWNLOAD_CHUNKS,
        }),
        _ => http_body_util::Either::Right(http_body_util::Full::new(Bytes::from_static(b"ok"))),
    }))
}

/// The accept loop a facade would run: wrap the accepted stream *before* TLS, so the handshake
/// is covered too; hyper's header read timeout runs alongside.
///
/// HTTP/2 keep-alive PINGs are off unless asked for: hyper's PING timer misfires on a paused
/// clock (its timeout runs out before the peer's answer is read), so the tests that use them run
/// on real time.
async fn serve(tls: Option<TlsAcceptor>) -> SocketAddr {
    serve_with(tls, PERIOD, false, false, Arc::default()).await
}

async fn serve_with(
    tls: Option<TlsAcceptor>,
    period: Duration,
    keep_alive: bool,
    tracked: bool,
    accepted: Arc<AtomicUsize>,
) -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let idle = ServerIdleTimeout::new(period);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            accepted.fetch_add(1, Ordering::Relaxed);
            let tls = tls.clone();
            tokio::spawn(async move {
                let (io, activity) = idle.wrap_tracked(tcp);
                let io = if tracked {
                    io
                } else {
                    idle.wrap(io.into_inner())
                };
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(PERIOD * 5);
                if keep_alive {
                    idle.http2_keep_alive().apply_to_server(&mut builder);
                }
                let service = activity.layer(hyper::service::service_fn(handle));
                let _ = match tls {
                    Some(acceptor) => match acceptor.accept(io).await {
                        Ok(stream) => {
                            builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                        }
                        Err(_) => return,
                    },
                    None => builder.serve_connection(TokioIo::new(io), service).await,
                };
            });
        }
    });
    addr
}

/// Waits until the server closes `stream`; returns when.
async fn closed_at(mut stream: impl tokio::io::AsyncRead + Unpin) -> Instant {
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return Instant::now(),
            Ok(_) => {}
        }
    }
}

fn assert_within(elapsed: Duration, expected: Duration) {
    assert!(
        elapsed >= expected && elapsed <= expected + SLACK,
        "took {elapsed:?}, expected {expected:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_connects_and_sends_nothing_is_dropped_after_the_period() {
    let addr = serve(None).await;
    let start = Instant::now();
    let silent = TcpStream::connect(addr).await.unwrap();
    assert_within(closed_at(silent).await - start, PERIOD);

    // One that sends half a request head, then goes silent, too.
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    assert_within(closed_at(half).await - start, PERIOD);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_silent_connections_do_not_stop_a_normal_client() {
    let addr = serve(None).await;
    let start = Instant::now();
    let mut silent = Vec::with_capacity(1000);
    for _ in 0..1000 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let res = client
        .get(format!("http://{addr}/").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
    assert!(
        start.elapsed() < PERIOD,
        "served only after {:?}",
        start.elapsed()
    );

    // And every silent one is gone one period after it connected.
    for stream in silent {
        let closed = closed_at(stream).await - start;
        assert!(
            closed <= PERIOD + SLACK,
            "a silent connection lived {closed:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_active_long_download_is_not_cut() {
    let addr = serve(None).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let start = Instant::now();
    let res = client
        .get(format!("http://{addr}/download").parse().unwrap())
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), DOWNLOAD_CHUNKS * 1024);
    assert!(start.elapsed() >= PERIOD * 9, "took {:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn on_tls_a_silent_client_is_dropped_and_a_normal_one_served() {
    let identity = TlsIdentity::generate().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(identity.server_config().unwrap()));
    let addr = serve(Some(acceptor)).await;

    // Silent before the handshake: the accept itself is bounded.
    let start = Instant::now();
    let silent = TcpStream::connect(addr).await.unwrap();
    assert_within(closed_at(silent).await - start, PERIOD);

    // Silent after the handshake.
    let connector = tokio_rustls::TlsConnector::from(Arc::new(identity.client_config().unwrap()));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let start = Instant::now();
    assert_within(closed_at(tls).await - start, PERIOD);

    // A normal HTTPS client, on HTTP/2 via ALPN.
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(identity.client_config().unwrap())
        .https_only()
        .enable_all_versions()
        .build();
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(https);
    let start = Instant::now();
    let res = client
        .get(format!("https://{addr}/download").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), DOWNLOAD_CHUNKS * 1024);
    assert!(start.elapsed() >= PERIOD * 9, "took {:?}", start.elapsed());
}

/// Real time (the PING timers need it): an HTTP/2 connection resting in the client's pool for
/// several idle periods survives, because PINGs keep bytes moving; the next request reuses it.
#[tokio::test]
async fn http2_pings_keep_a_resting_connection_alive() {
    let period = Duration::from_millis(300);
    let accepted = Arc::new(AtomicUsize::new(0));
    let addr = serve_with(None, period, true, false, accepted.clone()).await;
    let idle = ConnectionIdleTimeoutLayer::new(period);
    let mut builder = Client::builder(TokioExecutor::new());
    builder.http2_only(true);
    idle.http2_keep_alive().apply_to_client(&mut builder);
    let client =
        builder.build::<_, Empty<Bytes>>(idle.layer(backstop_timeout::TcpConnector::new()));
    for round in 0..2 {
        let res = client
            .get(format!("http://{addr}/").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "round {round}");
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
        tokio::time::sleep(period * 3).await;
    }
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        1,
        "the connection was reused"
    );
}

#[tokio::test(start_paused = true)]
async fn a_handler_thinking_longer_than_the_period_is_cut_unless_activity_is_tracked() {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();

    // Untracked: the connection is silent both ways while the handler thinks.
    let addr = serve(None).await;
    let start = Instant::now();
    let err = client
        .get(format!("http://{addr}/slow").parse().unwrap())
        .await
        .unwrap_err();
    assert_within(start.elapsed(), PERIOD);
    drop(err);

    // Tracked: the handler is known to be working; the answer arrives.
    let addr = serve_with(None, PERIOD, false, true, Arc::default()).await;
    let res = client
        .get(format!("http://{addr}/slow").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "slow");

    // Still a silent client is dropped after the period on a tracked connection.
    let start = Instant::now();
    let silent = TcpStream::connect(addr).await.unwrap();
    assert_within(closed_at(silent).await - start, PERIOD);
}
