//! The accept loop survives running out of file descriptors (EMFILE): it backs off, counts the
//! error, and serves again once descriptors are free. In a binary of its own: the descriptor limit
//! is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::time::Duration;

use backstop_server::{IncomingBody, ServeConfig, Server};
use bytes::Bytes;
use common::{accept_errors_counted, exhaust_descriptors, get_and_close, queued_clients};
use http::{Request, Response};
use http_body_util::Full;
use tokio::time::{Instant, timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_survives_emfile_and_serves_once_descriptors_are_free() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    // Clients connect before the server accepts: the kernel queues them.
    let mut clients = queued_clients(addr, 4);

    // No descriptor left: every accept fails with EMFILE.
    let exhausted = exhaust_descriptors();

    let config = ServeConfig::builder()
        .accept_backoff(Duration::from_millis(5))
        .build()
        .unwrap();
    let server = Server::new(listener, config);
    let stats = server.stats();
    let service = tower::service_fn(|_req: Request<IncomingBody>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
            b"still here\n",
        ))))
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.serve_with_shutdown(service, async {
        let _ = stopped.await;
    }));

    let waited = accept_errors_counted(&stats, 3).await;
    let accepted_while_exhausted = stats.accepted();
    // Restore the limit before asserting, so a failure cannot starve the rest of the process.
    drop(exhausted);
    assert!(waited.is_ok(), "accept errors were not counted");
    assert_eq!(accepted_while_exhausted, 0);

    // Descriptors are back: the queued clients are accepted and served.
    let client = clients.pop().unwrap();
    let started = Instant::now();
    let answer = get_and_close(client).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("still here\n"), "{answer:?}");
    // The backoff is capped at one second, so recovery is quick.
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(stats.accepted() >= 1);
    drop(clients);

    let _ = stop.send(());
    let summary = timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(summary.accept_errors >= 3, "{summary:?}");
}
