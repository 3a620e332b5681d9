//! The server against hostile clients, on real loopback sockets: request bodies trickled a byte at
//! a time are dropped at the idle bound and give back their load-shed slots; at the connection cap
//! the server stops accepting until a connection ends; every request carries the client's
//! address; shutdown closes idle and half-sent connections at once and drains only real requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use backstop_server::{IncomingBody, PeerAddr, ServeConfig, ShedWith503Layer};
use bytes::Bytes;
use common::{read_response, start};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Barrier, Notify};
use tokio::time::{Instant, timeout};
use tower::ServiceBuilder;

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(10);

fn text(body: &'static str) -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::from_static(body.as_bytes())))
}

async fn get(addr: SocketAddr, path: &str) -> StatusCode {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let res = timeout(
        BOUND,
        client.get(format!("http://{addr}{path}").parse().unwrap()),
    )
    .await
    .expect("answered in time")
    .unwrap();
    let status = res.status();
    let _ = res.into_body().collect().await;
    status
}

/// Polls `done` until it holds, within [`BOUND`].
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    timeout(BOUND, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn a_trickled_request_body_is_dropped_at_the_idle_bound_and_frees_its_shed_slot() {
    const IDLE: Duration = Duration::from_millis(400);
    const LIMIT: usize = 4;
    const SLOW: usize = 2;
    let body_errors = Arc::new(AtomicUsize::new(0));
    // Every `/hold` request waits until a full limit's worth of them is inside the handler at
    // once: they only succeed if every load-shed slot is free.
    let hold = Arc::new(Barrier::new(LIMIT));
    let service = {
        let body_errors = Arc::clone(&body_errors);
        let hold = Arc::clone(&hold);
        tower::service_fn(move |req: Request<IncomingBody>| {
            let body_errors = Arc::clone(&body_errors);
            let hold = Arc::clone(&hold);
            async move {
                match req.uri().path() {
                    "/upload" => match req.into_body().collect().await {
                        Ok(body) => Ok::<_, Infallible>(Response::new(Full::new(body.to_bytes()))),
                        Err(_) => {
                            body_errors.fetch_add(1, Ordering::SeqCst);
                            let mut res = text("too slow\n");
                            *res.status_mut() = StatusCode::REQUEST_TIMEOUT;
                            Ok(res)
                        }
                    },
                    "/hold" => {
                        hold.wait().await;
                        Ok(text("held\n"))
                    }
                    _ => Ok(text("ok\n")),
                }
            }
        })
    };
    let shed = ShedWith503Layer::new(LIMIT);
    let app = ServiceBuilder::new().layer(shed.clone()).service(service);
    let config = ServeConfig::builder()
        .idle_timeout(Some(IDLE))
        .build()
        .unwrap();
    let server = start(config, app).await;
    let addr = server.addr;

    // Healthy clients, two at a time, for as long as the slow ones are connected.
    let slow_done = Arc::new(AtomicBool::new(false));
    let healthy: Vec<_> = (0..2)
        .map(|_| {
            let slow_done = Arc::clone(&slow_done);
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !slow_done.load(Ordering::SeqCst) {
                    statuses.push(get(addr, "/").await);
                }
                statuses
            })
        })
        .collect();

    // Slow clients: a 1000-byte body announced, then one byte every two idle periods.
    let slow: Vec<_> = (0..SLOW)
        .map(|_| {
            tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.unwrap();
                let (mut read, mut write) = stream.into_split();
                write
                    .write_all(
                        b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\nx",
                    )
                    .await
                    .unwrap();
                let started = Instant::now();
                let trickle = tokio::spawn(async move {
                    let mut ticks = tokio::time::interval(IDLE * 2);
                    ticks.tick().await;
                    for _ in 0..999 {
                        ticks.tick().await;
                        if write.write_all(b"x").await.is_err() {
                            break;
                        }
                    }
                });
                let mut answer = Vec::new();
                let read = timeout(BOUND, read.read_to_end(&mut answer)).await;
                let dropped_after = started.elapsed();
                trickle.abort();
                assert!(read.is_ok(), "the slow client must be dropped");
                (dropped_after, String::from_utf8_lossy(&answer).to_string())
            })
        })
        .collect();
    for client in slow {
        let (dropped_after, answer) = client.await.unwrap();
        assert!(
            dropped_after >= IDLE - Duration::from_millis(50) && dropped_after < IDLE * 4,
            "dropped after {dropped_after:?}, idle bound {IDLE:?}"
        );
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    }
    slow_done.store(true, Ordering::SeqCst);
    assert_eq!(body_errors.load(Ordering::SeqCst), SLOW);

    let mut served = 0;
    for client in healthy {
        let statuses = timeout(BOUND, client).await.unwrap().unwrap();
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "{statuses:?}"
        );
        served += statuses.len();
    }
    assert!(
        served >= 2,
        "healthy clients were served meanwhile: {served}"
    );

    // The slow clients' slots are free: a full limit's worth of requests is admitted at once.
    eventually("the shed slots to be released", || shed.in_flight() == 0).await;
    let full: Vec<_> = (0..LIMIT)
        .map(|_| tokio::spawn(get(addr, "/hold")))
        .collect();
    for request in full {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_steady_request_body_slower_than_one_idle_period_overall_is_not_cut() {
    const IDLE: Duration = Duration::from_millis(300);
    let service = tower::service_fn(|req: Request<IncomingBody>| async move {
        let len = match req.into_body().collect().await {
            Ok(body) => body.to_bytes().len(),
            Err(_) => 0,
        };
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(len.to_string()))))
    });
    let config = ServeConfig::builder()
        .idle_timeout(Some(IDLE))
        .build()
        .unwrap();
    let server = start(config, service).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n")
        .await
        .unwrap();
    // Ten bytes over a second, three idle periods: never idle for one.
    for _ in 0..10 {
        tokio::time::sleep(IDLE / 3).await;
        stream.write_all(b"x").await.unwrap();
    }
    let (status, body) = timeout(BOUND, read_response(&mut stream)).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "10");
    server.stop().await;
}

#[tokio::test]
async fn at_the_connection_cap_the_server_stops_accepting_until_one_ends() {
    const CAP: usize = 3;
    let config = ServeConfig::builder().max_connections(CAP).build().unwrap();
    let server = start(
        config,
        tower::service_fn(|_req: Request<IncomingBody>| async {
            Ok::<_, Infallible>(text("ok\n"))
        }),
    )
    .await;
    let request = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

    // `CAP` keep-alive connections, each served once and left open.
    let mut open = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let (status, _) = timeout(BOUND, read_response(&mut stream)).await.unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        open.push(stream);
    }
    assert_eq!(server.stats.open_connections(), CAP as u64);

    // One more: the kernel completes the TCP handshake (the listen backlog), but the server does
    // not accept it, so its request waits.
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    extra.write_all(request).await.unwrap();
    let extra = tokio::spawn(async move {
        let answer = timeout(BOUND, read_response(&mut extra)).await;
        (answer, Instant::now())
    });
    let waited = timeout(Duration::from_millis(500), async {
        while !extra.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_err(), "served beyond the connection cap");
    assert_eq!(server.stats.accepted(), CAP as u64);
    assert_eq!(server.stats.accept_errors(), 0);

    // One of the first connections ends: the extra one is accepted and served.
    let closed_at = Instant::now();
    drop(open.remove(0));
    let (answer, answered_at) = extra.await.unwrap();
    let (status, body) = answer.expect("served once a connection ended");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "ok\n");
    assert!(answered_at >= closed_at);
    assert_eq!(server.stats.accepted(), CAP as u64 + 1);

    let summary = server.stop().await;
    assert_eq!(summary.accept_errors, 0, "{summary:?}");
    assert!(summary.drained, "{summary:?}");
}

#[tokio::test]
async fn every_request_carries_the_client_address_for_axum_connect_info() {
    use axum::Extension;
    use axum::routing::get;

    let app = axum::Router::new().route(
        "/peer-addr",
        get(|Extension(PeerAddr(peer)): Extension<PeerAddr>| async move { peer.to_string() }),
    );
    // Without the `axum` feature the server inserts only `PeerAddr`.
    #[cfg(feature = "axum")]
    let app = app.route(
        "/connect-info",
        get(
            |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>| async move {
                peer.to_string()
            },
        ),
    );
    let paths: &[&str] = if cfg!(feature = "axum") {
        &["/connect-info", "/peer-addr"]
    } else {
        &["/peer-addr"]
    };
    let server = start(ServeConfig::default(), app).await;
    for path in paths {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let me = stream.local_addr().unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let (status, body) = timeout(BOUND, read_response(&mut stream)).await.unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{path}: {status}");
        assert_eq!(body, me.to_string(), "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_and_half_sent_connections_at_once_and_drains_real_requests() {
    const SLOW: Duration = Duration::from_millis(300);
    let entered = Arc::new(Notify::new());
    let service = {
        let entered = Arc::clone(&entered);
        tower::service_fn(move |req: Request<IncomingBody>| {
            let entered = Arc::clone(&entered);
            async move {
                if req.uri().path() == "/slow" {
                    entered.notify_one();
                    tokio::time::sleep(SLOW).await;
                    return Ok::<_, Infallible>(text("slow and complete\n"));
                }
                Ok(text("ok\n"))
            }
        })
    };
    let config = ServeConfig::builder()
        .drain_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let server = start(config, service).await;
    let addr = server.addr;

    // 50 connections stopping half-way through their request head.
    let mut half_sent = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n")
            .await
            .unwrap();
        half_sent.push(stream);
    }
    // 10 keep-alive connections, served once and now idle.
    let mut idle = Vec::new();
    for _ in 0..10 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let (status, _) = timeout(BOUND, read_response(&mut stream)).await.unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        idle.push(stream);
    }
    eventually("60 connections accepted", || server.stats.accepted() == 60).await;

    // One real request in flight.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let slow = tokio::spawn(async move {
        let answer = timeout(BOUND, read_response(&mut slow)).await.unwrap();
        (answer, Instant::now())
    });
    timeout(BOUND, entered.notified()).await.unwrap();

    let stopping = Instant::now();
    let summary = server.stop().await;
    let stopped = Instant::now();
    let ((status, body), answered) = slow.await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "slow and complete\n");
    assert!(summary.drained, "{summary:?}");
    // The drain ended with the slow request, not at the 5 s drain timeout nor the 10 s header
    // read timeout of the half-sent heads.
    assert!(
        stopped.duration_since(stopping) < Duration::from_secs(2),
        "shutdown took {:?}",
        stopped.duration_since(stopping)
    );
    assert!(stopped >= answered - Duration::from_millis(50));
    // The idle and half-sent connections were closed, not left for the runtime to drop.
    for mut stream in half_sent.into_iter().chain(idle) {
        let mut buf = [0u8; 64];
        let read = timeout(BOUND, stream.read(&mut buf)).await.unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
}
