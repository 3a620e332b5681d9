//! The tour: every failure the network can throw at an HTTP client, produced on demand by the
//! in-process chaos upstream on loopback.
//!
//! Run it with `cargo run --example tour`. It needs no outside server and talks only to
//! 127.0.0.1.
//!
//! Part 1 names each fault: what failed (kind), where (phase), whether a retry is safe, and what
//! it means — using a plain hyper-util client wrapped in `ClassifyLayer`, the vocabulary every
//! other backstop layer decides from.
//!
//! Part 2 walks the full `backstop::Client` (deadline → retry → per-host breaker → classify →
//! attempt timeout, with connect and idle timeouts) through the same faults and prints what it
//! did about each: attempts, delays, breaker state, outcome, elapsed time.
//!
//! Part 3 keeps a WebSocket subscription alive with `backstop::reconnect::Supervisor` while its
//! server restarts twice: reconnections, backoff delays, and proof that the replayed
//! subscription left no gap in the feed's sequence numbers (`cargo run --example reconnect_ws`
//! for the longer version).

use std::net::SocketAddr;
use std::time::Duration;

use backstop::CallInfoExt;
use backstop::chaos::{BlackHole, ChaosServer, ConnectionFault, Fault, RetryAfter};
use backstop::classify::{BoxError, ClassifyLayer, Error, Failure, Outcome, Phase};
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
    let started = Instant::now();
    part1().await?;
    part2().await?;
    part3().await?;
    println!("\ntour finished in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn part1() -> Result<(), BoxError> {
    println!("PART 1 — what failed, where, and is a retry safe?\n");

    let chaos = ChaosServer::start().await?;
    let chaos_tls = ChaosServer::builder().tls(true).start().await?;
    let reset_listener = ConnectionFault::AcceptThenReset.start().await?;
    let tls_stall = ConnectionFault::TlsStall.start().await?;
    let black_hole = BlackHole::start().await?;
    let closed = backstop::chaos::closed_port_addr()?;

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
    let untrusting = trusting_nothing()?;
    run(
        "TLS: untrusted self-signed cert",
        send(
            &tls_client(untrusting.clone()),
            Method::GET,
            &chaos_tls.url("/"),
        )
        .await,
    );
    run(
        "TLS: handshake never answered",
        send(
            &tls_client(untrusting),
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
        send(&tls_client(trusted), Method::GET, &chaos_tls.url("/")).await,
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
                Error::new(backstop::classify::Kind::Other, Phase::Local).with_source(err)
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
        backstop::classify::Kind::TimedOut(backstop::classify::Timer::Attempt),
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

/// A TLS config trusting no certificate at all. The provider is named: `ClientConfig::builder()`
/// panics when an application compiles in both of rustls' providers (`ring` and `aws-lc-rs`).
fn trusting_nothing() -> Result<rustls::ClientConfig, rustls::Error> {
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth(),
    )
}

fn tls_client(
    config: rustls::ClientConfig,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, Body> {
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

/// What the full client did in one scenario.
struct Walk {
    scenario: &'static str,
    attempts: Option<u32>,
    delays: Vec<Duration>,
    breaker: String,
    outcome: String,
    elapsed: Duration,
}

/// Runs one call through the full client and records what it did.
async fn walk(scenario: &'static str, client: &backstop::Client, req: Request<Body>) -> Walk {
    let started = Instant::now();
    let authority = req
        .uri()
        .authority()
        .map(ToString::to_string)
        .unwrap_or_default();
    let result = client.send(req).await;
    let elapsed = started.elapsed();
    let breaker = client
        .breakers()
        .and_then(|breakers| {
            breakers
                .snapshots()
                .into_iter()
                .find(|(key, _)| key.to_string().ends_with(&authority))
                .map(|(_, snapshot)| format!("{:?}", snapshot.state).to_lowercase())
        })
        .unwrap_or_else(|| "-".into());
    // A failed call carries the same record as a successful one: attempts, the delays slept,
    // and why retrying stopped.
    let (info, outcome) = match &result {
        Ok(res) => (res.call_info(), format!("{}", res.status())),
        Err(err) => (
            err.call_info(),
            format!(
                "{} ({}, retry {})",
                err.kind(),
                err.phase(),
                err.retryable()
            ),
        ),
    };
    let outcome = match info.and_then(|info| info.retry_stopped) {
        Some(why) => format!("{outcome}; {}", why.name()),
        None => outcome,
    };
    Walk {
        scenario,
        attempts: info.map(|i| i.attempts),
        delays: info.map(|i| i.delays.clone()).unwrap_or_default(),
        breaker,
        outcome,
        elapsed,
    }
}

fn req(method: Method, url: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from_static(b"{\"amount\": 42}")))
        .unwrap_or_default()
}

async fn part2() -> Result<(), BoxError> {
    use backstop::chaos::Script;

    println!("\nPART 2 — the full backstop::Client through each fault\n");
    // One upstream per scenario: each host has its own circuit breaker, so one scenario's
    // failures do not open the breaker of the next.
    let resets = ChaosServer::start().await?;
    resets.script("/flaky", Script::fail_times(2, Fault::ResetAfterRead));
    let posts = ChaosServer::start().await?;
    let stalls = ChaosServer::start().await?;
    let polite = ChaosServer::start().await?;
    polite.script(
        "/busy",
        Script::fail_times(1, Fault::status_retry_after(503, RetryAfter::Seconds(1))),
    );
    let flapping = ChaosServer::start().await?;
    let sick = ChaosServer::start().await?;
    sick.set_fault_for("/", Fault::status(500));
    let black_hole = BlackHole::start().await?;
    let closed = backstop::chaos::closed_port_addr()?;

    let client = backstop::Client::builder()
        .deadline(Duration::from_secs(3))
        .attempt_timeout(Duration::from_millis(600))
        .connect_timeout(Duration::from_millis(250))
        .idle_timeout(Duration::from_millis(400))
        .backoff(Duration::from_millis(100), Duration::from_millis(400))
        .max_attempts(3)
        .seed(2026)
        .build()?;
    let patient = backstop::Client::builder()
        .deadline(Duration::from_millis(1500))
        .attempt_timeout(Duration::from_secs(1))
        .idle_timeout(Duration::from_secs(10))
        .max_attempts(5)
        .breaker(false)
        .seed(2026)
        .build()?;

    let mut walks = Vec::new();
    walks.push(
        walk(
            "refused (closed port), GET",
            &client,
            req(Method::GET, &format!("http://{closed}/")),
        )
        .await,
    );
    walks.push(
        walk(
            "reset after read twice, GET",
            &client,
            req(Method::GET, &resets.url("/flaky")),
        )
        .await,
    );
    walks.push(
        walk(
            "reset after read, POST: not retried",
            &client,
            req(Method::POST, &posts.fault_url(&Fault::ResetAfterRead)),
        )
        .await,
    );
    walks.push(
        walk(
            "POST answered 503: not retried",
            &client,
            req(Method::POST, &posts.fault_url(&Fault::status(503))),
        )
        .await,
    );
    walks.push(
        walk(
            "black-holed connect",
            &client,
            req(Method::GET, &format!("http://{}/", black_hole.addr())),
        )
        .await,
    );
    walks.push(
        walk(
            "stall before headers",
            &client,
            req(
                Method::GET,
                &stalls.fault_url(&Fault::StallHeaders { duration: None }),
            ),
        )
        .await,
    );
    walks.push(
        walk(
            "503 + Retry-After: 1, then 200",
            &client,
            req(Method::GET, &polite.url("/busy")),
        )
        .await,
    );
    // Flapping: the upstream refuses connections for 250 ms, then comes back on the same port.
    flapping.down_for(Duration::from_millis(250)).await;
    walks.push(
        walk(
            "flapping upstream (down 250 ms)",
            &patient,
            req(Method::GET, &flapping.url("/")),
        )
        .await,
    );
    for _ in 0..2 {
        let _ = client.send(req(Method::GET, &sick.url("/"))).await;
    }
    walks.push(
        walk(
            "sick host (500s): breaker opens",
            &client,
            req(Method::GET, &sick.url("/")),
        )
        .await,
    );
    walks.push(
        walk(
            "deadline 1.5 s over a stalled server",
            &patient,
            req(
                Method::GET,
                &stalls.fault_url(&Fault::StallHeaders { duration: None }),
            ),
        )
        .await,
    );

    println!(
        "{:<38} {:>8} {:<24} {:<8} {:<72} {:>8}",
        "scenario", "attempts", "delays", "breaker", "outcome", "elapsed"
    );
    println!("{}", "-".repeat(162));
    for w in &walks {
        let delays = if w.delays.is_empty() {
            "-".to_owned()
        } else {
            w.delays
                .iter()
                .map(|d| format!("{}ms", d.as_millis()))
                .collect::<Vec<_>>()
                .join(",")
        };
        println!(
            "{:<38} {:>8} {:<24} {:<8} {:<72} {:>6}ms",
            w.scenario,
            w.attempts.map_or("-".into(), |a| a.to_string()),
            delays,
            w.breaker,
            w.outcome,
            w.elapsed.as_millis()
        );
    }
    println!(
        "\nThe POSTs reached the server once each ({} reset, {} answered 503): a request that may have \
         been processed is never replayed unless it is idempotent or carries an Idempotency-Key.",
        posts.count("POST", "/fault/reset-after-read"),
        posts.count("POST", "/fault/status"),
    );
    Ok(())
}

async fn part3() -> Result<(), BoxError> {
    use backstop_examples::feed::{FeedConfig, FeedServer, FollowOptions, follow, print_change};

    println!("\nPART 3 — a WebSocket feed kept alive through two server restarts\n");
    let server = FeedServer::start(FeedConfig {
        up: Duration::from_millis(600),
        down: Duration::from_millis(250),
        tick: Duration::from_millis(5),
    })
    .await?;
    let report = follow(
        &server.url(),
        FollowOptions {
            run_for: Duration::from_millis(2200),
            seed: 7,
        },
        print_change,
    )
    .await?;
    println!(
        "\n{} server restart(s), {} reconnection(s), backoff: {}",
        server.restarts(),
        report.reconnections(),
        report.delays_summary()
    );
    println!("{}", report.verdict());
    report.check()?;
    Ok(())
}
