//! `axum::serve` on backstop's listener survives running out of file descriptors (EMFILE): the
//! listener backs off, counts the error, and serves again once descriptors are free — where
//! axum's own `TcpListener` sleeps a whole second after each error. In a binary of its own: the
//! descriptor limit is process-wide.
#![cfg(feature = "axum")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use backstop_server::{AxumListener, ServeConfig};
use common::{accept_errors_counted, exhaust_descriptors, get_and_close, queued_clients};
use tokio::time::{Instant, timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_survives_emfile_and_serves_once_descriptors_are_free() {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();

    // Clients connect before the server accepts: the kernel queues them.
    let mut clients = queued_clients(addr, 4);

    // No descriptor left: every accept fails with EMFILE.
    let exhausted = exhaust_descriptors();

    let config = ServeConfig::builder()
        .accept_backoff(Duration::from_millis(5))
        .build()
        .unwrap();
    let listener = AxumListener::new(tcp, config);
    let stats = listener.stats();
    let app =
        Router::new().route(
            "/",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                format!("still here, {peer}\n")
            }),
        );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(
        axum::serve(
            listener.with_connect_info(),
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .into_future(),
    );

    let waited = accept_errors_counted(&stats, 3).await;
    let accepted_while_exhausted = stats.accepted();
    // Restore the limit before asserting, so a failure cannot starve the rest of the process.
    drop(exhausted);
    assert!(waited.is_ok(), "accept errors were not counted");
    assert_eq!(accepted_while_exhausted, 0);

    // Descriptors are back: the queued clients are accepted and served.
    let client = clients.pop().unwrap();
    let me = client.local_addr().unwrap();
    let started = Instant::now();
    let answer = get_and_close(client).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(
        answer.ends_with(&format!("still here, {me}\n")),
        "{answer:?}"
    );
    // The backoff is capped at one second, so recovery is quick.
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(stats.accepted() >= 1);
    assert!(stats.accept_errors() >= 3);
    drop(clients);

    let _ = stop.send(());
    timeout(Duration::from_secs(10), running)
        .await
        .expect("axum stops on the signal")
        .unwrap()
        .unwrap();
}
