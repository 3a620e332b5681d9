//! `axum::serve` on backstop's listener, on real loopback sockets: handlers get
//! `ConnectInfo<SocketAddr>`, a silent client is dropped at the idle bound, a handler slower than
//! the idle period keeps its connection with `track_requests` (and, as documented, only with it)
//! while a stalled request body is still cut at the idle bound, and at the connection cap nothing
//! more is served until a connection ends. (Surviving `EMFILE` is in
//! `axum_listener_accept_errors.rs`: the descriptor limit is process-wide.)
//!
//! The idle and cap tests run on tokio's paused clock: with nothing else to do the runtime jumps
//! to the next timer, and loopback delivers connects and bytes before the syscall returns, so
//! "nothing happened within N seconds" is decided at once and without races.
#![cfg(feature = "axum")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use axum::serve::Listener;
use backstop_server::{AxumListener, ServeConfig, ServerStats, listener, track_requests};
use common::read_response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(10);

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

/// An axum app answering every request with the client's address, as `ConnectInfo` gives it.
fn app() -> Router {
    Router::new().route(
        "/",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
    )
}

/// `axum::serve` on backstop's listener until the sender is dropped or fires.
struct Serving {
    addr: SocketAddr,
    stats: ServerStats,
    _stop: oneshot::Sender<()>,
    _task: JoinHandle<std::io::Result<()>>,
}

async fn serve(config: ServeConfig) -> Serving {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = AxumListener::new(tcp, config);
    let addr = listener.local_addr().unwrap();
    let stats = listener.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(
        axum::serve(
            listener.with_connect_info(),
            app().into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .into_future(),
    );
    Serving {
        addr,
        stats,
        _stop: stop,
        _task: task,
    }
}

/// Sends one request on `stream` and returns the status line and the body.
async fn ask(stream: &mut TcpStream) -> (String, String) {
    stream.write_all(REQUEST).await.unwrap();
    timeout(BOUND, read_response(stream))
        .await
        .expect("answered in time")
}

#[tokio::test]
async fn handlers_get_the_client_address_from_connect_info() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bound = tcp.local_addr().unwrap();
    let listener = listener(tcp, ServeConfig::default());
    // axum's trait method, on what `listener` returns.
    assert_eq!(Listener::local_addr(&listener).unwrap(), bound);
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(
        axum::serve(
            listener,
            app().into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .into_future(),
    );

    for _ in 0..2 {
        let mut stream = TcpStream::connect(bound).await.unwrap();
        let me = stream.local_addr().unwrap();
        let (status, body) = ask(&mut stream).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert_eq!(body, me.to_string());
    }

    let _ = stop.send(());
    timeout(BOUND, running)
        .await
        .expect("axum stops on the signal")
        .unwrap()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_dropped_at_the_idle_bound() {
    const IDLE: Duration = Duration::from_secs(30);
    let config = ServeConfig::builder()
        .idle_timeout(Some(IDLE))
        .build()
        .unwrap();
    let server = serve(config).await;

    // Like `nc host port` and then nothing.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = timeout(BOUND * 10, silent.read(&mut buf))
        .await
        .expect("the listener must drop a silent client");
    let waited = started.elapsed();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        waited >= IDLE && waited <= IDLE + Duration::from_millis(5),
        "{waited:?}"
    );
    // Its place under the cap is given back, and the next client is served.
    assert_eq!(server.stats.open_connections(), 0);
    let mut next = TcpStream::connect(server.addr).await.unwrap();
    let (status, _) = ask(&mut next).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(server.stats.accepted(), 2);
}

#[tokio::test(start_paused = true)]
async fn at_the_connection_cap_nothing_more_is_served_until_a_connection_ends() {
    const CAP: usize = 2;
    let config = ServeConfig::builder().max_connections(CAP).build().unwrap();
    let server = serve(config).await;

    // `CAP` keep-alive connections, each served once and left open.
    let mut open = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let (status, _) = ask(&mut stream).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        open.push(stream);
    }
    assert_eq!(server.stats.open_connections(), CAP as u64);

    // One more: the kernel completes the handshake (the listen backlog) and takes the request,
    // but the listener does not accept it.
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    let me = extra.local_addr().unwrap();
    extra.write_all(REQUEST).await.unwrap();
    let waited = timeout(Duration::from_secs(5), read_response(&mut extra)).await;
    assert!(waited.is_err(), "served beyond the connection cap");
    assert_eq!(server.stats.accepted(), CAP as u64);

    // One of the first connections ends: the extra one is accepted and served.
    drop(open.remove(0));
    let (status, body) = timeout(BOUND, read_response(&mut extra))
        .await
        .expect("served once a connection ended");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, me.to_string());
    assert_eq!(server.stats.accepted(), CAP as u64 + 1);
    assert_eq!(server.stats.open_connections(), CAP as u64);
    assert_eq!(server.stats.accept_errors(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_handler_slower_than_the_idle_period_keeps_its_connection_with_track_requests() {
    const IDLE: Duration = Duration::from_secs(5);
    let config = || {
        ServeConfig::builder()
            .idle_timeout(Some(IDLE))
            .build()
            .unwrap()
    };
    let app = || {
        Router::new().route(
            "/",
            get(|| async {
                tokio::time::sleep(IDLE * 3).await;
                "late\n"
            }),
        )
    };
    let bind = || async {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        (listener(tcp, config()), addr)
    };
    let (untracked, untracked_addr) = bind().await;
    tokio::spawn(axum::serve(untracked, app()).into_future());
    let (tracked, tracked_addr) = bind().await;
    tokio::spawn(axum::serve(tracked, track_requests(app().into_make_service())).into_future());

    async fn slow_request(addr: SocketAddr) -> (String, Duration) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = timeout(BOUND * 10, stream.read_to_end(&mut answer))
            .await
            .expect("the connection ends");
        (
            String::from_utf8_lossy(&answer).into_owned(),
            started.elapsed(),
        )
    }

    // Untracked: the read hyper keeps pending while the handler thinks is timed, and the
    // connection is cut at the idle bound (the difference from `Server` that `AxumListener`'s
    // docs state).
    let (answer, waited) = slow_request(untracked_addr).await;
    assert_eq!(answer, "");
    assert!(waited >= IDLE && waited < IDLE * 2, "{waited:?}");

    // Tracked: the handler is answered.
    let (answer, waited) = slow_request(tracked_addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("late\n"), "{answer:?}");
    assert!(waited >= IDLE * 3, "{waited:?}");

    // Tracked, a silent client is still dropped at the idle bound.
    let mut silent = TcpStream::connect(tracked_addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = timeout(BOUND * 10, silent.read(&mut buf))
        .await
        .expect("the listener must drop a silent client");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= IDLE && started.elapsed() < IDLE * 2);
}

#[tokio::test(start_paused = true)]
async fn with_track_requests_a_stalled_request_body_still_fails_at_the_idle_bound() {
    const IDLE: Duration = Duration::from_secs(5);
    let config = ServeConfig::builder()
        .idle_timeout(Some(IDLE))
        .build()
        .unwrap();
    let app = Router::new().route(
        "/upload",
        post(|body: String| async move { body.len().to_string() }),
    );
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(
        axum::serve(
            listener(tcp, config),
            track_requests(app.into_make_service()),
        )
        .into_future(),
    );

    // A whole body, to show the rule lets one through.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc")
        .await
        .unwrap();
    let (status, body) = timeout(BOUND, read_response(&mut stream)).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "3");

    // 1000 bytes announced, one sent: the request is in progress, so the stream's read timer is
    // paused, and the body's own idle rule must end the wait.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\nx")
        .await
        .unwrap();
    let started = Instant::now();
    let (status, _) = timeout(BOUND * 10, read_response(&mut stream))
        .await
        .expect("the handler gets an error at the idle bound and answers");
    let waited = started.elapsed();
    // axum's `String` extractor answers a body error with 400.
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    assert!(waited >= IDLE && waited < IDLE * 2, "{waited:?}");
}
