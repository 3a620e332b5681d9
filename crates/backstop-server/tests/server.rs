//! The server stack on real loopback sockets: silent clients are dropped, overload is shed with
//! 503 + Retry-After while admitted requests complete, a panicking handler answers 500, and
//! shutdown drains in-flight requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backstop_server::{CatchPanicLayer, IncomingBody, ServeConfig, ShedWith503Layer};
use bytes::Bytes;
use common::{Running, start};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout};
use tower::ServiceBuilder;

type Body = Full<Bytes>;

fn hello() -> impl tower::Service<
    Request<IncomingBody>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(|_req: Request<IncomingBody>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
    })
}

async fn get(addr: SocketAddr, path: &str) -> Result<(StatusCode, http::HeaderMap, Bytes), String> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let res = timeout(
        Duration::from_secs(10),
        client.get(format!("http://{addr}{path}").parse().unwrap()),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let status = res.status();
    let headers = res.headers().clone();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, headers, body))
}

#[tokio::test]
async fn a_silent_connection_is_dropped_within_the_idle_period() {
    let config = ServeConfig::builder()
        .idle_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let server = start(config, hello()).await;

    // Like `nc host port` and then nothing.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the server must drop a silent client");
    let waited = started.elapsed();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert_eq!(get(server.addr, "/").await.unwrap().0, StatusCode::OK);
    let summary = server.stop().await;
    assert!(summary.connection_errors >= 1, "{summary:?}");
}

#[tokio::test]
async fn a_thousand_silent_connections_do_not_stop_a_normal_client() {
    let config = ServeConfig::builder()
        .idle_timeout(Some(Duration::from_secs(30)))
        .build()
        .unwrap();
    let server = start(config, hello()).await;
    let mut silent = Vec::with_capacity(1000);
    for _ in 0..1000 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let (status, _, body) = get(server.addr, "/").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"hello\n");
    drop(silent);
    server.stop().await;
}

#[tokio::test]
async fn an_active_long_download_is_not_cut_by_the_idle_timeout() {
    let config = ServeConfig::builder()
        .idle_timeout(Some(Duration::from_millis(200)))
        .build()
        .unwrap();
    // 20 chunks, one every 50 ms: a second in all, five idle periods long, never idle.
    let service = tower::service_fn(|_req: Request<IncomingBody>| async {
        let stream = futures_stream(20, Duration::from_millis(50));
        Ok::<_, Infallible>(Response::new(stream))
    });
    let server = start(config, service).await;
    let (status, _, body) = get(server.addr, "/").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), 20 * 1024);
    server.stop().await;
}

/// A body yielding `chunks` chunks of 1 KiB, one every `every`.
fn futures_stream(chunks: usize, every: Duration) -> Ticks {
    Ticks {
        left: chunks,
        every,
        sleep: Box::pin(tokio::time::sleep(every)),
    }
}

/// A slow but steady body: a 1 KiB frame every period.
struct Ticks {
    left: usize,
    every: Duration,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for Ticks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        std::task::ready!(self.sleep.as_mut().poll(cx));
        self.left -= 1;
        let next = tokio::time::Instant::now() + self.every;
        self.sleep.as_mut().reset(next);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![
            b'x';
            1024
        ])))))
    }
}

#[tokio::test]
async fn overload_is_shed_with_503_and_retry_after_while_admitted_requests_complete() {
    const LIMIT: usize = 16;
    const EXTRA: usize = 1000;
    let gate = Arc::new(Semaphore::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let service = {
        let gate = Arc::clone(&gate);
        let entered = Arc::clone(&entered);
        tower::service_fn(move |_req: Request<IncomingBody>| {
            let gate = Arc::clone(&gate);
            let entered = Arc::clone(&entered);
            async move {
                entered.fetch_add(1, Ordering::SeqCst);
                // A slow handler: it finishes only when the test opens the gate.
                let _permit = gate.acquire().await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"done\n"))))
            }
        })
    };
    let shed = ShedWith503Layer::new(LIMIT).retry_after(Duration::from_secs(2));
    let app = ServiceBuilder::new().layer(shed.clone()).service(service);
    let server = start(ServeConfig::default(), app).await;

    let admitted: Vec<_> = (0..LIMIT)
        .map(|_| tokio::spawn(get(server.addr, "/slow")))
        .collect();
    // Wait until every admitted request is inside the handler.
    timeout(Duration::from_secs(10), async {
        while entered.load(Ordering::SeqCst) < LIMIT {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the admitted requests reach the handler");
    assert_eq!(shed.in_flight(), LIMIT);

    let started = Instant::now();
    let extra: Vec<_> = (0..EXTRA)
        .map(|_| tokio::spawn(get(server.addr, "/slow")))
        .collect();
    let mut shed_count = 0;
    for task in extra {
        let (status, headers, _) = task.await.unwrap().unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers.get("retry-after").unwrap(), "2");
        shed_count += 1;
    }
    let shedding_took = started.elapsed();
    assert_eq!(shed_count, EXTRA);
    // Shed requests never waited for the slow ones: the handler still holds all of them.
    assert_eq!(entered.load(Ordering::SeqCst), LIMIT);
    assert!(shedding_took < Duration::from_secs(10), "{shedding_took:?}");

    gate.add_permits(LIMIT);
    for task in admitted {
        let (status, _, body) = task.await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"done\n");
    }
    assert_eq!(shed.in_flight(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_yields_500_and_the_server_keeps_serving() {
    let service = tower::service_fn(|req: Request<IncomingBody>| async move {
        if req.uri().path() == "/panic" {
            panic!("handler bug");
        }
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"fine\n"))))
    });
    let app = ServiceBuilder::new()
        .layer(CatchPanicLayer::new())
        .service(service);
    let server = start(ServeConfig::default(), app).await;
    for _ in 0..3 {
        assert_eq!(
            get(server.addr, "/panic").await.unwrap().0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(get(server.addr, "/").await.unwrap().0, StatusCode::OK);
    }
    server.stop().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let gate = Arc::new(Semaphore::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let service = {
        let gate = Arc::clone(&gate);
        let entered = Arc::clone(&entered);
        tower::service_fn(move |_req: Request<IncomingBody>| {
            let gate = Arc::clone(&gate);
            let entered = Arc::clone(&entered);
            async move {
                entered.fetch_add(1, Ordering::SeqCst);
                let _permit = gate.acquire().await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"drained\n"))))
            }
        })
    };
    let server = start(ServeConfig::default(), service).await;
    let addr = server.addr;
    let in_flight: Vec<_> = (0..4).map(|_| tokio::spawn(get(addr, "/"))).collect();
    timeout(Duration::from_secs(10), async {
        while entered.load(Ordering::SeqCst) < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();

    let stop = server.stop.as_ref().map(|_| ());
    assert!(stop.is_some());
    let Running {
        stop, task, stats, ..
    } = server;
    let _ = stop.map(|s| s.send(()));
    // New connections are refused once the listener is closed.
    timeout(Duration::from_secs(5), async {
        loop {
            if TcpStream::connect(addr).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the listener closes on shutdown");
    // The in-flight requests are still being served; let them finish.
    gate.add_permits(4);
    for request in in_flight {
        let (status, _, body) = request.await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"drained\n");
    }
    let summary = timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(summary.drained, "{summary:?}");
    assert_eq!(summary.accepted, stats.accepted());
}

#[tokio::test]
async fn a_drain_that_outlives_its_timeout_is_abandoned() {
    let service = tower::service_fn(|_req: Request<IncomingBody>| async {
        std::future::pending::<()>().await;
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    });
    let config = ServeConfig::builder()
        .drain_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let server = start(config, service).await;
    let addr = server.addr;
    let _stuck = tokio::spawn(get(addr, "/"));
    timeout(Duration::from_secs(5), async {
        while server.stats.accepted() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    let summary = server.stop().await;
    assert!(!summary.drained);
}

#[tokio::test]
async fn malformed_requests_are_a_connection_error_not_a_server_error() {
    let server = start(ServeConfig::default(), hello()).await;
    let mut garbage = TcpStream::connect(server.addr).await.unwrap();
    garbage
        .write_all(b"\x16\x03\x01 not http at all\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = timeout(Duration::from_secs(5), garbage.read_to_end(&mut buf)).await;
    assert_eq!(get(server.addr, "/").await.unwrap().0, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn serves_an_axum_router() {
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "axum\n" }))
        .layer(ShedWith503Layer::new(8));
    let server = start(ServeConfig::default(), app).await;
    let (status, _, body) = get(server.addr, "/").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"axum\n");
    server.stop().await;
}

#[tokio::test]
async fn a_handler_thinking_longer_than_the_idle_period_is_not_cut() {
    let config = ServeConfig::builder()
        .idle_timeout(Some(Duration::from_millis(150)))
        .build()
        .unwrap();
    let service = tower::service_fn(|_req: Request<IncomingBody>| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"thought\n"))))
    });
    let server = start(config, service).await;
    let (status, _, body) = get(server.addr, "/").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"thought\n");
    server.stop().await;
}

#[test]
fn the_shed_layer_clamps_when_built_infallibly_and_rejects_when_checked() {
    use backstop_server::{MAX_IN_FLIGHT, RETRY_AFTER_RANGE};
    assert_eq!(ShedWith503Layer::new(0).max_in_flight(), 1);
    assert_eq!(
        ShedWith503Layer::new(usize::MAX).max_in_flight(),
        MAX_IN_FLIGHT
    );
    assert_eq!(ShedWith503Layer::new(7).max_in_flight(), 7);
    let err = ShedWith503Layer::try_new(0).unwrap_err();
    assert_eq!(err.field(), "max_in_flight");
    assert!(ShedWith503Layer::try_new(MAX_IN_FLIGHT).is_ok());
    assert!(ShedWith503Layer::try_new(MAX_IN_FLIGHT + 1).is_err());
    let shed = ShedWith503Layer::new(1);
    assert!(
        shed.clone()
            .try_retry_after(*RETRY_AFTER_RANGE.start())
            .is_ok()
    );
    assert!(
        shed.clone()
            .try_retry_after(*RETRY_AFTER_RANGE.end())
            .is_ok()
    );
    let err = shed
        .clone()
        .try_retry_after(Duration::from_millis(999))
        .unwrap_err();
    assert_eq!(err.field(), "shed_retry_after");
    assert!(shed.try_retry_after(Duration::from_secs(3601)).is_err());
}
