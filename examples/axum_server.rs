//! An axum app behind backstop's server stack: incoming deadlines, load shedding, panic → 500,
//! response classification, and an accept loop that drops silent clients and drains on shutdown.
//!
//! `cargo run --example axum_server` runs a short demo and exits; `-- --serve` keeps it up until
//! SIGTERM or Ctrl-C, then drains in-flight requests and exits.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use backstop::ServerStack;
use backstop::server::{ServeConfig, Server, shutdown_signal};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(2)).await;
    "finally\n"
}

async fn buggy() -> &'static str {
    panic!("a bug in a handler")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let serve = std::env::args().any(|arg| arg == "--serve");
    // One line per handler panic instead of a backtrace: the stack answers 500 and goes on.
    std::panic::set_hook(Box::new(|info| eprintln!("handler panicked: {info}")));
    let stack = ServerStack::builder()
        .max_in_flight(64)
        .default_deadline(Duration::from_secs(10))
        .build()?;
    let counts = stack.counts();
    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/slow", get(slow))
        .route("/buggy", get(buggy))
        .layer(stack);

    let config = ServeConfig::builder()
        .idle_timeout(Some(Duration::from_secs(5)))
        .drain_timeout(Duration::from_secs(5))
        .build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // Serving: stop on SIGTERM or Ctrl-C (handlers installed now, before the first request).
    // The demo: stop when it is done.
    let signal = serve.then(shutdown_signal);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(Server::new(listener, config).serve_with_shutdown(
        app,
        async move {
            match signal {
                Some(signal) => signal.await,
                None => {
                    let _ = stopped.await;
                }
            }
        },
    ));
    println!("listening on http://{addr}");

    if serve {
        println!("try: curl -v http://{addr}/slow -H 'request-timeout-ms: 500'   (504)");
        println!("stop with Ctrl-C or `kill -TERM {}`", std::process::id());
        // The server returns once the signal came and the drain is over.
        let summary = running.await??;
        println!("stopped: {summary:?}");
        return Ok(());
    } else {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        for (path, deadline) in [("/", None), ("/buggy", None), ("/slow", Some("500"))] {
            let mut req = http::Request::get(format!("http://{addr}{path}"));
            if let Some(ms) = deadline {
                req = req.header("request-timeout-ms", ms);
            }
            let res = client.request(req.body(Empty::new())?).await?;
            let status = res.status();
            let body = res.into_body().collect().await?.to_bytes();
            println!(
                "GET {path:<7} deadline {:<6} -> {status} {}",
                deadline.map_or("-".to_owned(), |ms| format!("{ms}ms")),
                String::from_utf8_lossy(&body).trim()
            );
        }
        println!(
            "\nclassified: {} ok, {} server errors, {} timed out, {} shed",
            counts.success(),
            counts.server_errors(),
            counts.timed_out(),
            counts.shed()
        );
    }
    let _ = stop.send(());
    let summary = tokio::time::timeout(Duration::from_secs(10), running).await???;
    println!("stopped: {summary:?}");
    Ok(())
}
