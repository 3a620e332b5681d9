//! The tour: every failure the network can throw at an HTTP client, produced on demand by the
//! in-process chaos upstream on loopback, and named by backstop's classifier.
//!
//! Run it with `cargo run --example tour`. It needs no outside server and talks only to
//! 127.0.0.1.
//!
//! For each fault it prints what failed (kind), where (phase), whether a retry is safe, and what
//! it means. The client here is a plain hyper-util client wrapped in `ClassifyLayer` — the
//! vocabulary every other backstop layer (retry, breaker, deadline) decides from.

use std::net::SocketAddr;
use std::time::Duration;

use backstop_chaos::{BlackHole, ChaosServer, ConnectionFault, Fault, RetryAfter};
use backstop_classify::{BoxError, ClassifyLayer, Error, Failure, Outcome, Phase};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use tokio::time::{Instant, timeout};
use tower::{Layer, ServiceExt};

type Body = Full<Bytes>;

/// How long the tour waits for a stalled peer before its own timer gives up.
const PATIENCE: Duration = Duration::from_millis(400);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    println!("backstop tour: each network failure, produced on loopback and classified\n");

    let chaos = ChaosServer::start().await?;
    let chaos_tls = ChaosServer::builder().tls(true).start().await?;
    let reset_listener = ConnectionFault::AcceptThenReset.start().await?;
    let tls_stall = ConnectionFault::TlsStall.start().await?;
    let black_hole = BlackHole::start().await?;
    let closed = backstop_chaos::closed_port_addr()?;

    let plain = plain_client(None);
    let mut rows = Vec::new();

    let mut run = |name: &'static str, result: Row| rows.push((name, result));

    run(
        "refused (closed port)",
        send(&plain, Method::GET, &format!("http://{closed}/")).await,
    );
    run(
        "accept, then reset",
        send(
            &plain,
            Method::GET,
            &format!("http://{}/", reset_listener.addr()),
        )
        .await,
    );
    run(
        "POST reset after the server read it",
        send(
            &plain,
            Method::POST,
            &chaos.fault_url(&Fault::ResetAfterRead),
        )
        .await,
    );
    run(
        "close without a response",
        send(
            &plain,
            Method::GET,
            &chaos.fault_url(&Fault::CloseAfterRead),
        )
        .await,
    );
    run(
        "garbage instead of HTTP",
        send(&plain, Method::GET, &chaos.fault_url(&Fault::Garbage)).await,
    );
    run(
        "stall before headers",
        send(
            &plain,
            Method::GET,
            &chaos.fault_url(&Fault::StallHeaders { duration: None }),
        )
        .await,
    );
    run(
        "stall mid-body",
        send(
            &plain,
            Method::GET,
            &chaos.fault_url(&Fault::StallBody {
                sent: 16,
                total: 1024,
                duration: None,
            }),
        )
        .await,
    );
    run(
        "slow drip body (steady)",
        send(
            &plain,
            Method::GET,
            &chaos.fault_url(&Fault::Drip {
                chunk: 1,
                interval: Duration::from_millis(30),
                total: 5,
            }),
        )
        .await,
    );
    run(
        "503 with Retry-After: 2",
        send(
            &plain,
            Method::GET,
            &chaos.fault_url(&Fault::status_retry_after(503, RetryAfter::Seconds(2))),
        )
        .await,
    );
    run(
        "503 with a garbage Retry-After",
        send(
            &plain,
            Method::GET,
            &chaos.fault_url(&Fault::status_retry_after(
                503,
                RetryAfter::Raw("whenever".into()),
            )),
        )
        .await,
    );
    run(
        "429 Too Many Requests",
        send(&plain, Method::POST, &chaos.fault_url(&Fault::status(429))).await,
    );
    run(
        "404 Not Found",
        send(&plain, Method::GET, &chaos.fault_url(&Fault::status(404))).await,
    );
    run(
        "black-holed connect",
        send(
            &plain_client(Some(Duration::from_millis(300))),
            Method::GET,
            &format!("http://{}/", black_hole.addr()),
        )
        .await,
    );
    run(
        "DNS name not found",
        send(
            &nxdomain_client(),
            Method::GET,
            "http://no-such-host.invalid/",
        )
        .await,
    );
    run(
        "TLS: untrusted self-signed cert",
        send(&tls_client(None), Method::GET, &chaos_tls.url("/")).await,
    );
    run(
        "TLS: handshake never answered",
        send(
            &tls_client(None),
            Method::GET,
            &format!("https://{}/", tls_stall.addr()),
        )
        .await,
    );
    let trusted = chaos_tls
        .client_tls_config()
        .ok_or("the TLS server has a certificate")??;
    run(
        "TLS: trusted, healthy",
        send(&tls_client(Some(trusted)), Method::GET, &chaos_tls.url("/")).await,
    );
    run("healthy", send(&plain, Method::GET, &chaos.url("/")).await);

    print_table(&rows);
    println!(
        "\nThe POST reset after the server read it reached the server {} time(s): it may have been \
         processed, so it is retried only if idempotent.",
        chaos.count("POST", "/fault/reset-after-read")
    );
    Ok(())
}

/// What one scenario produced.
struct Row {
    outcome: Result<(), Failure>,
    elapsed: Duration,
}

/// One classified request, bounded by [`PATIENCE`] for the head and again for the body.
async fn send<C>(client: &C, method: Method, url: &str) -> Row
where
    C: tower::Service<Request<Body>, Response = http::Response<hyper::body::Incoming>>
        + Clone
        + Send
        + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send,
{
    let started = Instant::now();
    let outcome = async {
        let req = Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(Bytes::from_static(b"tour")))
            .map_err(|err| {
                Error::new(backstop_classify::Kind::Other, Phase::Local).with_source(err)
            })?;
        let svc = ClassifyLayer::new().layer(client.clone());
        let res = timeout(PATIENCE, svc.oneshot(req))
            .await
            .map_err(Error::from)??;
        if let Some(Outcome::Failure(failure)) = res.extensions().get::<Outcome>() {
            return Err(Error::from_failure(*failure));
        }
        timeout(PATIENCE, res.into_body().collect())
            .await
            .map_err(|elapsed| Error::from(elapsed).with_failure(stalled_body()))??;
        Ok::<(), Error>(())
    }
    .await;
    Row {
        outcome: outcome.map_err(|err| err.failure()),
        elapsed: started.elapsed(),
    }
}

/// A body that stops moving is a failure while reading the body, whichever timer noticed.
fn stalled_body() -> Failure {
    Failure::new(
        backstop_classify::Kind::TimedOut(backstop_classify::Timer::Attempt),
        Phase::ReadBody,
    )
}

fn plain_client(connect_timeout: Option<Duration>) -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(connect_timeout);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A resolver that answers "no such name" for everything, as getaddrinfo would for a typo: the
/// tour never looks up a real name.
#[derive(Clone)]
struct NxDomain;

impl tower::Service<Name> for NxDomain {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _name: Name) -> Self::Future {
        std::future::ready(Err(std::io::Error::other(
            "failed to lookup address information: Name or service not known",
        )))
    }
}

fn nxdomain_client() -> Client<HttpConnector<NxDomain>, Body> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new_with_resolver(NxDomain))
}

fn tls_client(
    config: Option<rustls::ClientConfig>,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, Body> {
    let config = config.unwrap_or_else(|| {
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    });
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}

fn print_table(rows: &[(&str, Row)]) {
    println!(
        "{:<34} {:<30} {:<17} {:<14} {:>8}",
        "fault", "kind", "phase", "retryable", "elapsed"
    );
    println!("{}", "-".repeat(107));
    for (name, row) in rows {
        match &row.outcome {
            Ok(()) => println!(
                "{:<34} {:<30} {:<17} {:<14} {:>6}ms",
                name,
                "success",
                "-",
                "-",
                row.elapsed.as_millis()
            ),
            Err(failure) => {
                let kind = match failure.retry_after() {
                    Some(after) => format!("{} (after {}s)", failure.kind(), after.as_secs()),
                    None => failure.kind().to_string(),
                };
                println!(
                    "{:<34} {:<30} {:<17} {:<14} {:>6}ms",
                    name,
                    kind,
                    failure.phase().name(),
                    failure.retryable().to_string(),
                    row.elapsed.as_millis()
                );
                println!("{:<34}   why:  {}", "", failure.kind().explanation());
                println!("{:<34}   next: {}", "", failure.kind().next_step());
            }
        }
    }
}
