//! Per-route server rules: a `ServerStack` given to axum's `Router::route_layer` governs only the
//! routes added before it, another given to `MethodRouter::layer` only its own route, and a
//! route added later is under neither. Served by `axum::serve` on backstop's listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use backstop::ServerStack;
use backstop::server::{ServeConfig, listener};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// Every wait in this test is bounded by this.
const BOUND: Duration = Duration::from_secs(10);

/// Stack A's deadline: /a's held request is answered 504 after it, while /b's and /none's,
/// held at least as long, are answered 200.
const DEADLINE_A: Duration = Duration::from_secs(1);

fn get_status(addr: SocketAddr, path: &'static str) -> JoinHandle<StatusCode> {
    tokio::spawn(async move {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let req = Request::get(format!("http://{addr}{path}"))
            .body(Empty::new())
            .unwrap();
        let res = timeout(BOUND, client.request(req))
            .await
            .expect("answered in time")
            .unwrap();
        let status = res.status();
        let _ = res.into_body().collect().await;
        status
    })
}

/// Polls `done` until it holds, within [`BOUND`]: the stacks' in-flight counts have no hook to
/// wait on.
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
async fn a_route_layered_server_stack_governs_only_its_routes() {
    let stack_a = ServerStack::builder()
        .max_in_flight(1)
        .default_deadline(DEADLINE_A)
        .build()
        .unwrap();
    let stack_b = ServerStack::builder()
        .max_in_flight(64)
        .default_deadline(Duration::from_secs(30))
        .build()
        .unwrap();
    // Every handler waits for the gate.
    let gate = Arc::new(Semaphore::new(0));
    let held = {
        let gate = Arc::clone(&gate);
        move || {
            let gate = Arc::clone(&gate);
            async move {
                let _permit = gate.acquire().await;
                "done\n"
            }
        }
    };
    let app = Router::new()
        .route("/a", get(held.clone()))
        .route_layer(stack_a.clone())
        .route("/b", get(held.clone()).layer(stack_b.clone()))
        .route("/none", get(held));

    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(
            listener(tcp, ServeConfig::default()),
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .into_future(),
    );

    // /a admits one request at a time: a second one is shed at once.
    let started = Instant::now();
    let first_a = get_status(addr, "/a");
    eventually("/a in flight", || stack_a.in_flight() == 1).await;
    assert_eq!(
        get_status(addr, "/a").await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // /b and /none are not under A's limit of one.
    let b: Vec<_> = (0..3).map(|_| get_status(addr, "/b")).collect();
    let none: Vec<_> = (0..3).map(|_| get_status(addr, "/none")).collect();
    eventually("/b in flight", || stack_b.in_flight() == 3).await;
    assert_eq!(stack_a.in_flight(), 1);

    // /a's deadline ends its request with 504; /b's and /none's requests, held as long, are not
    // under it.
    assert_eq!(first_a.await.unwrap(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() >= DEADLINE_A);
    assert_eq!(stack_a.in_flight(), 0);
    assert_eq!(stack_b.in_flight(), 3);
    gate.add_permits(64);
    for task in b.into_iter().chain(none) {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }

    // Each stack counted its own route's answers, and /none is in neither.
    let (a, b) = (stack_a.counts(), stack_b.counts());
    assert_eq!(
        (a.success(), a.shed(), a.timed_out()),
        (0, 1, 1),
        "stack A's counts"
    );
    assert_eq!(
        (b.success(), b.shed(), b.timed_out()),
        (3, 0, 0),
        "stack B's counts"
    );

    let _ = stop.send(());
    timeout(BOUND, server)
        .await
        .expect("axum stops on the signal")
        .unwrap()
        .unwrap();
}
