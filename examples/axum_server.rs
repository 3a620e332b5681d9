//! An axum app served by `axum::serve` on backstop's listener, behind backstop's server stack:
//! incoming deadlines, load shedding, panic → 500, response classification for every route, a
//! tighter stack of its own on one expensive route (`Router::route_layer`), and a listener that
//! survives accept errors, caps connections, drops silent clients (but not slow handlers:
//! `track_requests`) and gives handlers `ConnectInfo<SocketAddr>`.
//!
//! `cargo run --example axum_server` runs a short demo and exits; `-- --serve` keeps it up until
//! SIGTERM or Ctrl-C, then drains in-flight requests and exits (`-- --serve --port 8080` on a
//! port of your choice; a free one otherwise). The server stack's metrics are served at
//! `GET /metrics` for Prometheus (`backstop_examples::prometheus`). Either way the stacks'
//! status page (in flight, shed) is served on loopback: `--admin-port N` (or
//! `BACKSTOP_ADMIN_PORT`; default 9901 with `--serve`, any free port for the demo).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use backstop::ServerStack;
use backstop::admin::Status;
use backstop::server::{ServeConfig, listener, shutdown_signal, track_requests};
use backstop_examples::{admin, prometheus};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How long shutdown waits for in-flight requests (axum's own graceful shutdown has no bound).
const DRAIN: Duration = Duration::from_secs(5);

async fn hello(ConnectInfo(peer): ConnectInfo<SocketAddr>) -> String {
    format!("hello {peer}\n")
}

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
    let port = prometheus::port_arg()?;
    // Before the first request: what backstop records goes to Prometheus from then on.
    let metrics = prometheus::install()?;
    // One line per handler panic instead of a backtrace: the stack answers 500 and goes on.
    std::panic::set_hook(Box::new(|info| eprintln!("handler panicked: {info}")));
    // Every route: 64 requests at once, 10 s each.
    let stack = ServerStack::builder()
        .max_in_flight(64)
        .default_deadline(Duration::from_secs(10))
        .build()?;
    // The expensive route, within those: 2 at once, 1 s each.
    let slow_stack = ServerStack::builder()
        .max_in_flight(2)
        .default_deadline(Duration::from_secs(1))
        .build()?;
    let counts = stack.counts();
    let status = Status::new()
        .server("every route", &stack)
        .server("/slow", &slow_stack);
    let app = Router::new()
        .route("/slow", get(slow))
        // Only the routes added above.
        .route_layer(slow_stack)
        .route("/", get(hello))
        .route("/buggy", get(buggy))
        // Every route.
        .layer(stack)
        // Added after the stack: scrapes are neither shed nor counted.
        .merge(prometheus::route(metrics));

    let config = ServeConfig::builder()
        .idle_timeout(Some(Duration::from_secs(5)))
        .max_connections(1_000)
        .build()?;
    let tcp = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = tcp.local_addr()?;
    // Serving: stop on SIGTERM or Ctrl-C (handlers installed now, before the first request).
    // The demo: stop when it is done.
    let signal = serve.then(shutdown_signal);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (stopping, mut stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let mut running = tokio::spawn(
        axum::serve(
            listener(tcp, config),
            // The idle timer pauses while a handler runs (without it, one slower than the idle
            // period would lose its connection).
            track_requests(app.into_make_service_with_connect_info::<SocketAddr>()),
        )
        .with_graceful_shutdown(async move {
            match signal {
                Some(signal) => signal.await,
                None => {
                    let _ = stopped.await;
                }
            }
            let _ = stopping.send(());
        })
        .into_future(),
    );
    println!("listening on http://{addr}");
    let admin = admin::start(status, serve).await?;

    if serve {
        println!("try: curl -v http://{addr}/slow   (504: the route's own 1 s deadline)");
        println!("     curl http://{addr}/metrics   (Prometheus)");
        println!("stop with Ctrl-C or `kill -TERM {}`", std::process::id());
    } else {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let calls = [
            ("/", None),
            ("/buggy", None),
            ("/slow", Some("500")),
            ("/slow", None),
        ];
        for (path, deadline) in calls {
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
        let req = http::Request::get(format!("http://{admin}/status.json")).body(Empty::new())?;
        let json = client.request(req).await?.into_body().collect().await?;
        println!(
            "/status.json: {}",
            String::from_utf8_lossy(&json.to_bytes())
        );
        let _ = stop.send(());
    }
    // Once the shutdown has begun, the drain is bounded.
    let drained = tokio::select! {
        result = &mut running => Some(result),
        _ = &mut stopping_rx => tokio::time::timeout(DRAIN, &mut running).await.ok(),
    };
    match drained {
        Some(result) => {
            result??;
            println!("stopped: every connection drained");
        }
        None => println!("stopped: connections still open after {DRAIN:?}, abandoned"),
    }
    Ok(())
}
