//! The documented outcome of the full `backstop::Client` for each chaos fault and each kind of
//! method: the table in README.md ("What the client does with each fault"), row by row, with
//! the client that table describes — every default — on tokio's paused clock, so the 5 s, 10 s
//! and 30 s bounds pass in virtual time over real loopback sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backstop::classify::TlsFailure;
use backstop::{Client, FnResolver, Kind, ProtocolFailure, Timer};
use backstop_chaos::{ChaosServer, Fault};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::time::timeout;

/// The method column of the table.
#[derive(Debug, Clone, Copy)]
enum Call {
    Get,
    Put,
    Post,
    PostWithKey,
}

const CALLS: [Call; 4] = [Call::Get, Call::Put, Call::Post, Call::PostWithKey];

impl Call {
    fn may_be_replayed(self) -> bool {
        !matches!(self, Call::Post)
    }

    fn request(self, url: &str, n: usize) -> Request<Full<Bytes>> {
        let method = match self {
            Call::Get => Method::GET,
            Call::Put => Method::PUT,
            Call::Post | Call::PostWithKey => Method::POST,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(Bytes::from_static(b"{\"amount\": 42}")))
            .unwrap();
        if matches!(self, Call::PostWithKey) {
            req.headers_mut()
                .insert("idempotency-key", format!("key-{n}").parse().unwrap());
        }
        req
    }
}

/// What the caller gets back.
#[derive(Debug, PartialEq)]
enum Got {
    Response(StatusCode),
    Error(Kind),
    BodyError(Kind),
}

const ATTEMPTS: usize = 3;

/// The client the README's table describes: every default.
fn client() -> Client {
    Client::new().unwrap()
}

async fn run(client: &Client, req: Request<Full<Bytes>>) -> Got {
    let outcome = timeout(Duration::from_secs(120), async {
        match client.send(req).await {
            Err(err) => Got::Error(err.kind()),
            Ok(res) => {
                let status = res.status();
                match res.into_body().collect().await {
                    Ok(_) => Got::Response(status),
                    Err(err) => Got::BodyError(err.kind()),
                }
            }
        }
    })
    .await;
    outcome.expect("every call ends on its own")
}

/// One row: a fault, what each call gets, and how many times the upstream received it.
async fn row(fault: Fault, expect: impl Fn(Call) -> (Got, usize)) {
    for (n, call) in CALLS.into_iter().enumerate() {
        // A fresh upstream (and so a fresh breaker) per call: rows do not influence each other.
        let chaos = ChaosServer::start().await.unwrap();
        let got = run(&client(), call.request(&chaos.fault_url(&fault), n)).await;
        let (want, deliveries) = expect(call);
        assert_eq!(got, want, "{fault:?} with {call:?}");
        assert_eq!(
            chaos.request_count(),
            deliveries,
            "{fault:?} with {call:?}: deliveries"
        );
    }
}

/// Retried until the attempts run out when the method allows replaying it; sent once otherwise.
fn replayed_if_allowed(got: Got) -> impl Fn(Call) -> (Got, usize) {
    move |call| {
        let got = match &got {
            Got::Response(s) => Got::Response(*s),
            Got::Error(k) => Got::Error(*k),
            Got::BodyError(k) => Got::BodyError(*k),
        };
        (got, if call.may_be_replayed() { ATTEMPTS } else { 1 })
    }
}

#[tokio::test(start_paused = true)]
async fn ok_is_answered_once() {
    row(Fault::Ok, |_| (Got::Response(StatusCode::OK), 1)).await;
}

#[tokio::test(start_paused = true)]
async fn reset_after_read_is_replayed_only_when_allowed() {
    row(
        Fault::ResetAfterRead,
        replayed_if_allowed(Got::Error(Kind::Reset)),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn close_after_read_is_replayed_only_when_allowed() {
    row(
        Fault::CloseAfterRead,
        replayed_if_allowed(Got::Error(Kind::Protocol(ProtocolFailure::Incomplete))),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn garbage_is_replayed_only_when_allowed() {
    row(
        Fault::Garbage,
        replayed_if_allowed(Got::Error(Kind::Protocol(ProtocolFailure::Malformed))),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_stall_before_headers_is_replayed_only_when_allowed() {
    // Each attempt is bounded at 10 s; the third starts after 20 s and the 30 s deadline cuts it
    // short, so the call ends on the deadline. A plain POST ends on its only attempt's bound.
    row(Fault::StallHeaders { duration: None }, |call| {
        if call.may_be_replayed() {
            (Got::Error(Kind::TimedOut(Timer::Deadline)), ATTEMPTS)
        } else {
            (Got::Error(Kind::TimedOut(Timer::Attempt)), 1)
        }
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_503_is_replayed_only_when_allowed_and_the_last_answer_returned() {
    row(
        Fault::status(503),
        replayed_if_allowed(Got::Response(StatusCode::SERVICE_UNAVAILABLE)),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_429_is_replayed_only_when_allowed() {
    // Nothing promises that a 429 was answered before any processing: like a 503, it is replayed
    // only for idempotent or keyed requests.
    row(
        Fault::status(429),
        replayed_if_allowed(Got::Response(StatusCode::TOO_MANY_REQUESTS)),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_404_is_final_for_every_method() {
    row(Fault::status(404), |_| {
        (Got::Response(StatusCode::NOT_FOUND), 1)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_body_stalling_after_the_head_is_never_retried() {
    row(
        Fault::StallBody {
            sent: 16,
            total: 1024,
            duration: None,
        },
        // The deadline (30 s, covering the body) started before the body's idle bound (30 s
        // from the head) and so ends first.
        |_| (Got::BodyError(Kind::TimedOut(Timer::Deadline)), 1),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_steady_drip_succeeds() {
    row(
        Fault::Drip {
            chunk: 1,
            interval: Duration::from_millis(100),
            total: 5,
        },
        |_| (Got::Response(StatusCode::OK), 1),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn refused_and_black_holed_connects_were_never_sent_so_every_method_is_retried() {
    for call in CALLS {
        let closed = backstop_chaos::closed_port_addr().unwrap();
        let got = run(&client(), call.request(&format!("http://{closed}/"), 0)).await;
        assert_eq!(got, Got::Error(Kind::Refused), "{call:?}");

        let hole = backstop_chaos::BlackHole::start().await.unwrap();
        let started = tokio::time::Instant::now();
        let got = run(
            &client(),
            call.request(&format!("http://{}/", hole.addr()), 0),
        )
        .await;
        assert_eq!(got, Got::Error(Kind::TimedOut(Timer::Connect)), "{call:?}");
        // Three connect attempts of 5 s each, plus the backoff between them.
        assert!(started.elapsed() >= Duration::from_secs(15), "{call:?}");
        assert!(started.elapsed() < Duration::from_secs(16), "{call:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_untrusted_certificate_is_never_retried() {
    for (n, call) in CALLS.into_iter().enumerate() {
        let chaos = ChaosServer::builder().tls(true).start().await.unwrap();
        let err = timeout(
            Duration::from_secs(120),
            client().send(call.request(&chaos.url("/"), n)),
        )
        .await
        .unwrap()
        .unwrap_err();
        assert_eq!(err.kind(), Kind::Tls(TlsFailure::Certificate), "{call:?}");
        assert_eq!(err.attempts(), Some(1), "{call:?}");
        assert_eq!(chaos.connection_count(), 1, "{call:?}: one handshake");
        assert_eq!(chaos.request_count(), 0, "{call:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_unknown_name_is_never_retried() {
    for (n, call) in CALLS.into_iter().enumerate() {
        // No real lookup: the injected resolver answers as getaddrinfo does for NXDOMAIN.
        let lookups = Arc::new(AtomicUsize::new(0));
        let counted = lookups.clone();
        let resolver = FnResolver::new(move |_name| {
            counted.fetch_add(1, Ordering::SeqCst);
            async {
                Err::<Vec<SocketAddr>, _>(
                    std::io::Error::other(
                        "failed to lookup address information: Name or service not known",
                    )
                    .into(),
                )
            }
        });
        let client = Client::builder().resolver(resolver).build().unwrap();
        let err = timeout(
            Duration::from_secs(120),
            client.send(call.request("http://no-such-host.invalid/", n)),
        )
        .await
        .unwrap()
        .unwrap_err();
        assert_eq!(err.kind(), Kind::DnsNotFound, "{call:?}");
        assert_eq!(err.attempts(), Some(1), "{call:?}");
        assert_eq!(lookups.load(Ordering::SeqCst), 1, "{call:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_fails_at_once_with_no_io() {
    let chaos = ChaosServer::start().await.unwrap();
    chaos.set_fault_for("/", Fault::status(503));
    let client = client();
    // Two calls of three attempts: the fifth consecutive failure opens the host's breaker.
    for _ in 0..2 {
        let _ = run(&client, Call::Get.request(&chaos.url("/"), 0)).await;
    }
    let delivered = chaos.request_count();
    let connections = chaos.connection_count();
    for (n, call) in CALLS.into_iter().enumerate() {
        let started = tokio::time::Instant::now();
        let err = client
            .send(call.request(&chaos.url("/"), n))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Kind::BreakerOpen, "{call:?}");
        assert_eq!(err.attempts(), Some(1), "{call:?}");
        assert_eq!(started.elapsed(), Duration::ZERO, "{call:?}: nothing slept");
    }
    assert_eq!(chaos.request_count(), delivered);
    assert_eq!(chaos.connection_count(), connections);
}
