//! Every fault of the chaos upstream × every kind of method × HTTP/1.1 and HTTP/2 × plain and TLS,
//! through the default `backstop::Client` (only the trust of the chaos certificate added, the ALPN
//! list that picks HTTP/1.1 over TLS, and prior knowledge for plain HTTP/2), on tokio's paused
//! clock over real loopback sockets.
//!
//! Every cell checks the invariants, whatever its outcome:
//! - an unkeyed POST reaches the upstream at most once;
//! - the call ends within its deadline (30 s) plus 50 ms;
//! - the upstream keeps serving afterwards (a plain GET through the same client answers 200,
//!   unless the cell opened the host's breaker, in which case it is a fresh client's GET);
//!
//! and its outcome — what the caller got, how many deliveries — is written into the table in
//! `RELIABILITY.md` between its `fault-matrix` markers. The test fails when the table there differs
//! from what it measured; `BACKSTOP_BLESS=1 cargo test -p backstop-tests --test fault_matrix`
//! rewrites it.
//!
//! Plain HTTP/2 is h2c with prior knowledge (`ClientBuilder::http2_prior_knowledge`); over TLS
//! the client's default ALPN list picks HTTP/2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::time::Duration;

use backstop::{Client, Kind};
use backstop_chaos::{ChaosServer, Fault, Script};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::time::{Instant, timeout};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Wire {
    H1,
    H1Tls,
    H2,
    H2Tls,
}

impl Wire {
    fn name(self) -> &'static str {
        match self {
            Wire::H1 => "HTTP/1.1",
            Wire::H1Tls => "HTTP/1.1 + TLS",
            Wire::H2 => "HTTP/2 (h2c)",
            Wire::H2Tls => "HTTP/2 + TLS",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Call {
    Get,
    Put,
    Delete,
    Post,
    PostWithKey,
}

const CALLS: [Call; 5] = [
    Call::Get,
    Call::Put,
    Call::Delete,
    Call::Post,
    Call::PostWithKey,
];

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Get => "GET",
            Call::Put => "PUT",
            Call::Delete => "DELETE",
            Call::Post => "POST",
            Call::PostWithKey => "POST + key",
        }
    }

    fn request(self, url: &str) -> Request<Full<Bytes>> {
        let method = match self {
            Call::Get => Method::GET,
            Call::Put => Method::PUT,
            Call::Delete => Method::DELETE,
            Call::Post | Call::PostWithKey => Method::POST,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(Bytes::from_static(b"{\"amount\": 42}")))
            .unwrap();
        if self == Call::PostWithKey {
            req.headers_mut()
                .insert("idempotency-key", "matrix-key".parse().unwrap());
        }
        req
    }
}

/// What the upstream does with the cell's request: always the fault, or the fault on the first
/// request only (a transient fault, which a retry gets past).
#[derive(Debug, Clone)]
enum Upstream {
    Always(Fault),
    Once(Fault),
}

/// The path a scripted fault lives on.
const FLAKY: &str = "/flaky";

fn faults() -> Vec<(&'static str, Upstream)> {
    let always = faults_always()
        .into_iter()
        .map(|(n, f)| (n, Upstream::Always(f)));
    always
        .chain([
            // HTTP/2's "never processed" answers, transient: the retry (any method) succeeds.
            (
                "refused stream, then ok",
                Upstream::Once(Fault::RefusedStream),
            ),
            ("goaway, then ok", Upstream::Once(Fault::GoAway)),
        ])
        .collect()
}

fn faults_always() -> Vec<(&'static str, Fault)> {
    vec![
        ("ok", Fault::Ok),
        ("reset after read", Fault::ResetAfterRead),
        ("close after read", Fault::CloseAfterRead),
        ("garbage", Fault::Garbage),
        (
            "stall before headers",
            Fault::StallHeaders { duration: None },
        ),
        ("503", Fault::status(503)),
        ("429", Fault::status(429)),
        ("404", Fault::status(404)),
        (
            "body stalls after the head",
            Fault::StallBody {
                sent: 16,
                total: 1024,
                duration: None,
            },
        ),
        ("refused stream", Fault::RefusedStream),
        ("goaway", Fault::GoAway),
        ("graceful goaway", Fault::GoAwayGraceful),
    ]
}

/// What the caller got.
fn describe_error(err: &backstop::Error) -> String {
    match err.kind() {
        Kind::Status(status) => format!("error {}", status.as_u16()),
        kind => kind.name().to_owned(),
    }
}

async fn client_for(wire: Wire, chaos: Option<&ChaosServer>) -> Client {
    let builder = Client::builder();
    let builder = match (wire, chaos) {
        (Wire::H2, _) => builder.http2_prior_knowledge(true),
        (Wire::H1, _) | (_, None) => builder,
        (Wire::H1Tls | Wire::H2Tls, Some(chaos)) => {
            let mut tls = chaos.client_tls_config().unwrap().unwrap();
            if wire == Wire::H1Tls {
                tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            }
            builder.tls(tls)
        }
    };
    builder.build().unwrap()
}

/// One cell: the outcome ("200", "503", "reset", "body: timed out (deadline)"…) and deliveries.
async fn cell(wire: Wire, call: Call, upstream: &Upstream) -> (String, usize) {
    let chaos = ChaosServer::builder()
        .tls(matches!(wire, Wire::H1Tls | Wire::H2Tls))
        .start()
        .await
        .unwrap();
    let url = match upstream {
        Upstream::Always(fault) => chaos.fault_url(fault),
        Upstream::Once(fault) => {
            chaos.script(FLAKY, Script::fail_times(1, fault.clone()));
            chaos.url(FLAKY)
        }
    };
    let client = client_for(wire, Some(&chaos)).await;
    let started = Instant::now();
    let outcome = timeout(Duration::from_secs(120), async {
        match client.send(call.request(&url)).await {
            Err(err) => describe_error(&err),
            Ok(res) => {
                // The wire is the one the cell names.
                let http2 = matches!(wire, Wire::H2 | Wire::H2Tls);
                assert_eq!(res.version() == http::Version::HTTP_2, http2, "{wire:?}");
                let status = res.status().as_u16().to_string();
                match res.into_body().collect().await {
                    Ok(_) => status,
                    Err(err) => format!("{status}, body: {}", describe_error(&err)),
                }
            }
        }
    })
    .await
    .expect("every call ends on its own");
    let elapsed = started.elapsed();
    let deliveries = chaos.request_count();
    let cell = format!("{} / {} / {:?}", wire.name(), call.name(), upstream);

    assert!(
        elapsed <= Duration::from_secs(30) + Duration::from_millis(50),
        "{cell}: took {elapsed:?}"
    );
    if call == Call::Post {
        assert!(
            deliveries <= 1,
            "{cell}: an unkeyed POST delivered {deliveries} times"
        );
    }
    // The process keeps serving: the same client, unless this cell opened the host's breaker.
    let healthy = chaos.url("/");
    let after = match client.get(&healthy).await {
        Err(err) if err.kind() == Kind::BreakerOpen => client_for(wire, Some(&chaos))
            .await
            .get(&healthy)
            .await
            .map(|res| res.status()),
        other => other.map(|res| res.status()),
    };
    assert_eq!(
        after.ok(),
        Some(StatusCode::OK),
        "{cell}: serving afterwards"
    );
    if matches!(upstream, Upstream::Always(Fault::GoAwayGraceful)) {
        // The connection that said goodbye took no new request.
        assert_eq!(
            chaos.connection_count(),
            2,
            "{cell}: a new connection after GOAWAY"
        );
    }
    chaos.shutdown().await;
    (outcome, deliveries)
}

/// Connection-level faults: nothing listens (refused) or the connect is black-holed.
async fn connection_cells(wire: Wire, table: &mut String) {
    for call in CALLS {
        let closed = backstop_chaos::closed_port_addr().unwrap();
        let scheme = if matches!(wire, Wire::H1 | Wire::H2) {
            "http"
        } else {
            "https"
        };
        let started = Instant::now();
        let client = client_for(wire, None).await;
        let err = client
            .send(call.request(&format!("{scheme}://{closed}/")))
            .await
            .unwrap_err();
        assert!(started.elapsed() <= Duration::from_secs(30) + Duration::from_millis(50));
        row(
            table,
            wire,
            call,
            "connection refused",
            &describe_error(&err),
            0,
        );

        let hole = backstop_chaos::BlackHole::start().await.unwrap();
        let started = Instant::now();
        let err = client
            .send(call.request(&format!("{scheme}://{}/", hole.addr())))
            .await
            .unwrap_err();
        assert!(started.elapsed() <= Duration::from_secs(30) + Duration::from_millis(50));
        row(
            table,
            wire,
            call,
            "black-holed connect",
            &describe_error(&err),
            0,
        );
    }
}

fn row(table: &mut String, wire: Wire, call: Call, fault: &str, outcome: &str, deliveries: usize) {
    let _ = writeln!(
        table,
        "| {} | {} | {} | {} | {} |",
        wire.name(),
        fault,
        call.name(),
        outcome,
        deliveries
    );
}

const BEGIN: &str = "<!-- fault-matrix:begin (generated by tests/tests/fault_matrix.rs) -->";
const END: &str = "<!-- fault-matrix:end -->";

#[tokio::test(start_paused = true)]
async fn every_fault_every_method_every_wire_keeps_the_invariants() {
    let mut table = String::from(
        "| wire | fault | method | the caller gets | deliveries |\n|---|---|---|---|---:|\n",
    );
    for wire in [Wire::H1, Wire::H1Tls, Wire::H2, Wire::H2Tls] {
        connection_cells(wire, &mut table).await;
        for (name, upstream) in faults() {
            for call in CALLS {
                let (outcome, deliveries) = cell(wire, call, &upstream).await;
                row(&mut table, wire, call, name, &outcome, deliveries);
            }
        }
    }

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../RELIABILITY.md");
    let record = std::fs::read_to_string(path).unwrap_or_default();
    let generated = format!("{BEGIN}\n{table}{END}");
    let current = match (record.find(BEGIN), record.find(END)) {
        (Some(begin), Some(end)) if begin < end => &record[begin..end + END.len()],
        _ => "",
    };
    if current == generated {
        return;
    }
    if std::env::var_os("BACKSTOP_BLESS").is_some() {
        let updated = if current.is_empty() {
            format!("{record}\n{generated}\n")
        } else {
            record.replace(current, &generated)
        };
        std::fs::write(path, updated).unwrap();
        return;
    }
    panic!(
        "RELIABILITY.md's fault matrix differs from what this run measured; if the change is \
         intended, rerun with BACKSTOP_BLESS=1.\nmeasured:\n{generated}"
    );
}

/// `REFUSED_STREAM` and a `GOAWAY` above the request's stream are never-processed failures:
/// retryable for any method. A plain POST is retried too when the client has its body to send
/// again (an empty body), and ends with the upstream's answer, delivered once. A plain POST
/// with a body is not: the client keeps no copy of a non-idempotent request's body (its
/// replay is for requests that may be retried after being sent), so it gets the error, which
/// still says "safe", after one attempt and no delivery.
#[tokio::test(start_paused = true)]
async fn never_processed_http2_failures_are_retried_for_a_post_with_a_replayable_body() {
    use backstop::CallInfoExt;
    use backstop::retry::StopReason;

    for wire in [Wire::H2, Wire::H2Tls] {
        for (fault, kind) in [
            (
                Fault::RefusedStream,
                backstop::ProtocolFailure::RefusedStream,
            ),
            (Fault::GoAway, backstop::ProtocolFailure::GoAway),
        ] {
            let chaos = ChaosServer::builder()
                .tls(wire == Wire::H2Tls)
                .start()
                .await
                .unwrap();
            let client = client_for(wire, Some(&chaos)).await;
            let cell = format!("{} / {fault:?}", wire.name());

            chaos.script(FLAKY, Script::fail_times(1, fault.clone()));
            let empty = Request::post(chaos.url(FLAKY))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let res = client.send(empty).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{cell}");
            assert_eq!(res.version(), http::Version::HTTP_2, "{cell}");
            assert_eq!(res.call_info().unwrap().attempts, 2, "{cell}");
            assert_eq!(chaos.count("POST", FLAKY), 1, "{cell}");

            // With a body: the bytes sent with the refused attempt are kept and sent again.
            chaos.reset_counts();
            chaos.script(FLAKY, Script::fail_times(1, fault.clone()));
            let res = client
                .send(Call::Post.request(&chaos.url(FLAKY)))
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{cell}");
            assert_eq!(res.call_info().unwrap().attempts, 2, "{cell}");
            assert_eq!(chaos.count("POST", FLAKY), 1, "{cell}: delivered once");

            // Always refused: the real failure after every attempt, never delivered.
            chaos.reset_counts();
            chaos.script(FLAKY, Script::always(fault.clone()));
            let err = client
                .send(Call::Post.request(&chaos.url(FLAKY)))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), Kind::Protocol(kind), "{cell}: {err:?}");
            assert_eq!(err.retryable(), backstop::Retryable::Safe, "{cell}");
            let info = err.call_info().unwrap();
            assert_eq!(info.attempts, 3, "{cell}");
            assert_eq!(
                info.retry_stopped,
                Some(StopReason::AttemptsExhausted),
                "{cell}"
            );
            assert_eq!(chaos.request_count(), 0, "{cell}");
            chaos.shutdown().await;
        }
    }
}
