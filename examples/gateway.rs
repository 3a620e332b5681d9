//! An axum gateway with per-route policies loaded from `examples/gateway.toml`, proxying to chaos
//! upstreams on loopback.
//!
//! `cargo run --example gateway` runs a short demo and exits; `-- --serve` keeps the gateway up
//! (SIGTERM or Ctrl-C drains and stops it) so you can `curl` it (`--port 8080` for a port of your
//! choice; a free one otherwise). The gateway's metrics — its clients' calls, retries and
//! breakers, its server stack's requests — are served at `GET /metrics` for Prometheus
//! (`backstop_examples::prometheus`). Either way its status page (breakers, budgets, in flight,
//! shed) is served on a loopback admin listener: `--admin-port N` (or `BACKSTOP_ADMIN_PORT`;
//! default 9901 with `--serve`, any free port for the demo).

use std::time::Duration;

use backstop::admin::Status;
use backstop::chaos::{ChaosServer, Fault, Script};
use backstop::server::{ServeConfig, Server, shutdown_signal};
use backstop::{Gateway, ServerStack};
use backstop_examples::{admin, prometheus};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let serve = std::env::args().any(|arg| arg == "--serve");
    let port = prometheus::port_arg()?;
    // Before the first call: what backstop records goes to Prometheus from then on.
    let metrics = prometheus::install()?;

    // Two upstreams that fail twice on every path before answering.
    let payments = ChaosServer::start().await?;
    payments.script("/payments", Script::fail_times(2, Fault::status(503)));
    let catalog = ChaosServer::start().await?;
    catalog.script("/catalog", Script::fail_times(2, Fault::status(503)));

    let config = include_str!("gateway.toml")
        .replace("${PAYMENTS}", &payments.addr().to_string())
        .replace("${CATALOG}", &catalog.addr().to_string());
    let gateway = Gateway::from_toml(&config)?;
    println!("routes: {:?}", gateway.prefixes().collect::<Vec<_>>());

    let stack = ServerStack::builder().build()?;
    let status = Status::new()
        .gateway("edge", &gateway)
        .server("gateway", &stack);
    let app = axum::Router::new()
        .fallback_service(gateway)
        .layer(stack)
        // Added after the stack: scrapes are neither shed nor counted, and never proxied.
        .merge(prometheus::route(metrics));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let server = Server::new(listener, ServeConfig::default());
    // Serving: stop on SIGTERM or Ctrl-C; the demo: stop when it is done.
    let signal = serve.then(shutdown_signal);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.serve_with_shutdown(app, async move {
        match signal {
            Some(signal) => signal.await,
            None => {
                let _ = stopped.await;
            }
        }
    }));
    println!("gateway listening on http://{addr}");
    let admin = admin::start(status, serve).await?;

    if serve {
        println!("try: curl -v -X POST http://{addr}/payments/charge   (no retries: 503)");
        println!("     curl -v http://{addr}/catalog/items             (retried: 200)");
        println!("     curl http://{addr}/metrics                      (Prometheus)");
        let summary = running.await??;
        println!("gateway stopped: {summary:?}");
        return Ok(());
    } else {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        for (method, path) in [
            ("POST", "/payments/charge"),
            ("GET", "/catalog/items"),
            ("GET", "/nowhere"),
        ] {
            let req = http::Request::builder()
                .method(method)
                .uri(format!("http://{addr}{path}"))
                .body(Full::new(Bytes::from_static(b"{}")))?;
            let res = client.request(req).await?;
            let status = res.status();
            // The gateway's own answers say why in a short code (`NR`: no route, `UO`: breaker
            // open, …); the upstream's answers carry none.
            let reason = res
                .headers()
                .get(backstop::REASON_HEADER)
                .and_then(|v| v.to_str().ok())
                .map_or_else(String::new, |code| format!(" [{code}]"));
            let body = res.into_body().collect().await?.to_bytes();
            let first_line = String::from_utf8_lossy(&body)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            println!("{method:<5} {path:<18} -> {status}{reason}  {first_line}");
        }
        println!(
            "\nupstream deliveries: payments {} (POST, no retries), catalog {} (GET, retried until it answered)",
            payments.count("POST", "/payments/charge"),
            catalog.count("GET", "/catalog/items"),
        );
        let req = http::Request::get(format!("http://{admin}/status.json"))
            .body(Full::new(Bytes::new()))?;
        let json = client.request(req).await?.into_body().collect().await?;
        println!(
            "\n/status.json: {}",
            String::from_utf8_lossy(&json.to_bytes())
        );
    }
    let _ = stop.send(());
    let summary = tokio::time::timeout(Duration::from_secs(10), running).await???;
    println!("gateway stopped: {summary:?}");
    Ok(())
}
