//! The documented outcome of the full `backstop::Client` for each chaos fault and each kind of
//! method: the table in README.md ("What the client does with each fault"), row by row.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use backstop::{Client, Kind, ProtocolFailure, Timer};
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

fn client() -> Client {
    Client::builder()
        .deadline(Duration::from_secs(5))
        .attempt_timeout(Duration::from_millis(800))
        .connect_timeout(Duration::from_millis(200))
        .idle_timeout(Duration::from_millis(300))
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
        .max_attempts(ATTEMPTS as u32)
        .seed(3)
        .build()
        .unwrap()
}

async fn run(client: &Client, req: Request<Full<Bytes>>) -> Got {
    let outcome = timeout(Duration::from_secs(20), async {
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

#[tokio::test]
async fn ok_is_answered_once() {
    row(Fault::Ok, |_| (Got::Response(StatusCode::OK), 1)).await;
}

#[tokio::test]
async fn reset_after_read_is_replayed_only_when_allowed() {
    row(
        Fault::ResetAfterRead,
        replayed_if_allowed(Got::Error(Kind::Reset)),
    )
    .await;
}

#[tokio::test]
async fn close_after_read_is_replayed_only_when_allowed() {
    row(
        Fault::CloseAfterRead,
        replayed_if_allowed(Got::Error(Kind::Protocol(ProtocolFailure::Incomplete))),
    )
    .await;
}

#[tokio::test]
async fn garbage_is_replayed_only_when_allowed() {
    row(
        Fault::Garbage,
        replayed_if_allowed(Got::Error(Kind::Protocol(ProtocolFailure::Malformed))),
    )
    .await;
}

#[tokio::test]
async fn a_stall_before_headers_is_replayed_only_when_allowed() {
    row(
        Fault::StallHeaders { duration: None },
        replayed_if_allowed(Got::Error(Kind::TimedOut(Timer::Idle))),
    )
    .await;
}

#[tokio::test]
async fn a_503_is_replayed_only_when_allowed_and_the_last_answer_returned() {
    row(
        Fault::status(503),
        replayed_if_allowed(Got::Response(StatusCode::SERVICE_UNAVAILABLE)),
    )
    .await;
}

#[tokio::test]
async fn a_429_is_replayed_when_the_body_was_kept() {
    // 429 is judged safe to resend for any method (the request was rejected, not processed),
    // but a plain POST's body is not kept for replay, and it was already sent: it goes once.
    row(
        Fault::status(429),
        replayed_if_allowed(Got::Response(StatusCode::TOO_MANY_REQUESTS)),
    )
    .await;
}

#[tokio::test]
async fn a_404_is_final_for_every_method() {
    row(Fault::status(404), |_| {
        (Got::Response(StatusCode::NOT_FOUND), 1)
    })
    .await;
}

#[tokio::test]
async fn a_body_stalling_after_the_head_is_never_retried() {
    row(
        Fault::StallBody {
            sent: 16,
            total: 1024,
            duration: None,
        },
        |_| (Got::BodyError(Kind::TimedOut(Timer::Idle)), 1),
    )
    .await;
}

#[tokio::test]
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

#[tokio::test]
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
        // Three connect attempts of 200 ms each, plus the backoff between them.
        assert!(started.elapsed() >= Duration::from_millis(550), "{call:?}");
    }
}
