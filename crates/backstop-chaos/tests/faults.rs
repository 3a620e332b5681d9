//! Request-level faults over plain HTTP/1.1, observed with a hyper-util client
//! or a raw TcpStream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io;
use std::time::{Duration, SystemTime};

use backstop_chaos::{ChaosServer, Fault, GARBAGE, RetryAfter, digest};
use common::*;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

#[tokio::test]
async fn ok_is_default_and_fault_ok() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = h1_client();
    for path in ["/", "/some/path?x=1", "/fault/ok"] {
        let resp = bounded(client.request(get(&chaos.url(path))))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["x-chaos-fault"], "ok");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok\n");
    }
    assert!(chaos.url("/x").starts_with("http://127.0.0.1:"));
    chaos.shutdown().await;
}

#[tokio::test]
async fn status_with_retry_after_forms() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = h1_client();

    let resp = bounded(client.request(get(&chaos.fault_url(&Fault::status(429)))))
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("retry-after").is_none());

    let f = Fault::status_retry_after(503, RetryAfter::Seconds(7));
    let resp = bounded(client.request(get(&chaos.fault_url(&f))))
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "7");

    let f = Fault::status_retry_after(503, RetryAfter::DateIn(30));
    let resp = bounded(client.request(get(&chaos.fault_url(&f))))
        .await
        .unwrap();
    let date = httpdate::parse_http_date(resp.headers()["retry-after"].to_str().unwrap()).unwrap();
    let ahead = date
        .duration_since(SystemTime::now())
        .expect("date is in the future");
    assert!(
        ahead > Duration::from_secs(27) && ahead <= Duration::from_secs(31),
        "{ahead:?}"
    );

    let f = Fault::status_retry_after(500, RetryAfter::Raw("soon, maybe".into()));
    let resp = bounded(client.request(get(&chaos.fault_url(&f))))
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["retry-after"], "soon, maybe");

    // Query form by hand, with a body size.
    let resp = bounded(client.request(get(&chaos.url("/fault/status?code=502&body=1000"))))
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 1000);
}

#[tokio::test]
async fn header_selects_fault_on_any_path() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = h1_client();
    let req = http::Request::get(chaos.url("/api/orders?retry_after=3"))
        .header("x-chaos-fault", "status?code=418")
        .body(Body::default())
        .unwrap();
    let resp = bounded(client.request(req)).await.unwrap();
    assert_eq!(resp.status(), 418);
    assert_eq!(resp.headers()["retry-after"], "3");
    assert_eq!(chaos.count("GET", "/api/orders"), 1);
}

#[tokio::test]
async fn bad_input_gets_400_with_reason() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = h1_client();
    for path in [
        "/fault/status?code=abc",
        "/fault/status?code=42",
        "/fault/nope",
        "/fault/drip?chunk=0",
        "/fault/drip?total=99999999999",
        "/fault/ok?x=%zz",
        "/fault/garbage?unexpected=1",
    ] {
        let resp = bounded(client.request(get(&chaos.url(path))))
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body.starts_with(b"bad chaos request: "), "{path}: {body:?}");
    }
    let req = http::Request::get(chaos.url("/"))
        .header("x-chaos-fault", "status?code=")
        .body(Body::default())
        .unwrap();
    let resp = bounded(client.request(req)).await.unwrap();
    assert_eq!(resp.status(), 400);
    // The server is still healthy.
    let resp = bounded(client.request(get(&chaos.url("/")))).await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn reset_after_read_is_connection_reset_after_full_delivery() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = h1_client();
    let req = http::Request::post(chaos.fault_url(&Fault::ResetAfterRead))
        .header("idempotency-key", "k-1")
        .body(Body::from("charge 10 EUR"))
        .unwrap();
    let err = bounded(client.request(req)).await.unwrap_err();
    assert!(is_reset(&err), "{}", describe(&err));
    assert_eq!(io_kind(&err), Some(io::ErrorKind::ConnectionReset));

    // The request was delivered in full before the reset.
    let d = chaos.deliveries();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].body_len, 13);
    assert_eq!(d[0].body_digest, digest(b"charge 10 EUR"));
    assert!(d[0].body_complete);
    assert_eq!(d[0].fault, "reset-after-read");
    assert_eq!(chaos.count_key("k-1"), 1);
}

#[tokio::test]
async fn reset_after_read_raw_socket_sees_econnreset() {
    let chaos = ChaosServer::start().await.unwrap();
    let mut s = bounded(TcpStream::connect(chaos.addr())).await.unwrap();
    s.write_all(b"GET /fault/reset-after-read HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let err = bounded(s.read(&mut buf)).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn close_after_read_is_incomplete_message() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = h1_client();
    let err = bounded(client.request(post(&chaos.fault_url(&Fault::CloseAfterRead), b"payload")))
        .await
        .unwrap_err();
    let h = hyper_err(&err).unwrap_or_else(|| panic!("{}", describe(&err)));
    assert!(h.is_incomplete_message(), "{}", describe(&err));
    assert_eq!(chaos.count("POST", "/fault/close-after-read"), 1);

    // Raw: a clean EOF without a single byte.
    let mut s = bounded(TcpStream::connect(chaos.addr())).await.unwrap();
    s.write_all(b"GET /fault/close-after-read HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = bounded(s.read_to_end(&mut buf)).await.unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn garbage_is_parse_error() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = h1_client();
    let err = bounded(client.request(get(&chaos.fault_url(&Fault::Garbage))))
        .await
        .unwrap_err();
    let h = hyper_err(&err).unwrap_or_else(|| panic!("{}", describe(&err)));
    assert!(h.is_parse(), "{}", describe(&err));

    let mut s = bounded(TcpStream::connect(chaos.addr())).await.unwrap();
    s.write_all(b"GET /fault/garbage HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    bounded(s.read_to_end(&mut buf)).await.unwrap();
    assert_eq!(buf, GARBAGE);
}

#[tokio::test]
async fn stall_headers_forever_times_out() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = h1_client();
    let res = timeout(
        Duration::from_millis(300),
        client.request(get(
            &chaos.fault_url(&Fault::StallHeaders { duration: None })
        )),
    )
    .await;
    assert!(res.is_err(), "expected the client to time out");
    assert_eq!(chaos.count_path("/fault/stall-headers"), 1);
}

#[tokio::test]
async fn stall_headers_for_a_while_then_ok() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = h1_client();
    let start = Instant::now();
    let resp = bounded(client.request(get(&chaos.url("/fault/stall-headers?ms=200"))))
        .await
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn stall_body_sends_prefix_then_stalls() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = h1_client();
    let f = Fault::StallBody {
        sent: 10,
        total: 100,
        duration: None,
    };
    let resp = bounded(client.request(get(&chaos.fault_url(&f))))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], "100");
    let mut body = resp.into_body();
    let mut got = 0;
    while got < 10 {
        let frame = bounded(body.frame()).await.unwrap().unwrap();
        got += frame.into_data().unwrap().len();
    }
    assert_eq!(got, 10);
    let next = timeout(Duration::from_millis(300), body.frame()).await;
    assert!(next.is_err(), "body should stall after the prefix");
}

#[tokio::test]
async fn stall_body_with_duration_completes() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = h1_client();
    let start = Instant::now();
    let resp =
        bounded(client.request(get(&chaos.url("/fault/stall-body?bytes=5&total=20&ms=150"))))
            .await
            .unwrap();
    let body = bounded(resp.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body.len(), 20);
    assert!(start.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn drip_arrives_over_time() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = h1_client();
    let f = Fault::Drip {
        chunk: 2,
        interval: Duration::from_millis(50),
        total: 10,
    };
    let start = Instant::now();
    let resp = bounded(client.request(get(&chaos.fault_url(&f))))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut arrivals = Vec::new();
    let mut total = 0;
    while let Some(frame) = bounded(body.frame()).await {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len();
            arrivals.push(start.elapsed());
        }
    }
    assert_eq!(total, 10);
    assert!(arrivals.len() >= 3, "{arrivals:?}");
    // 5 chunks, 4 pauses of 50 ms.
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "{arrivals:?}"
    );
    assert!(arrivals[0] < Duration::from_millis(150), "{arrivals:?}");
}

#[tokio::test]
async fn echo_and_digests_are_recorded() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = h1_client();
    let bodies: [&'static [u8]; 2] = [b"first attempt", b"second attempt!"];
    for (i, b) in bodies.iter().enumerate() {
        let req = http::Request::post(chaos.fault_url(&Fault::Echo))
            .header("idempotency-key", "order-42")
            .header("x-request-id", format!("req-{i}"))
            .body(Body::from(*b))
            .unwrap();
        let resp = bounded(client.request(req)).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["x-chaos-body-digest"],
            format!("{:016x}", digest(b))
        );
        assert_eq!(resp.headers()["x-chaos-body-len"], b.len().to_string());
        let echoed = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&echoed[..], *b);
    }
    let d = chaos.deliveries();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].body_digest, digest(bodies[0]));
    assert_eq!(d[1].body_digest, digest(bodies[1]));
    assert_ne!(d[0].body_digest, d[1].body_digest);
    assert_eq!(d[1].request_id.as_deref(), Some("req-1"));
    assert!(d[0].at <= d[1].at);
    assert_eq!(chaos.count_key("order-42"), 2);
    assert_eq!(chaos.count_request_id("req-0"), 1);
    assert_eq!(chaos.count(http::Method::POST, "/fault/echo"), 2);
    assert_eq!(chaos.count("GET", "/fault/echo"), 0);
}

#[tokio::test]
async fn counting_and_reset_counts() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = h1_client();
    for _ in 0..3 {
        bounded(client.request(get(&chaos.url("/a"))))
            .await
            .unwrap();
    }
    bounded(client.request(post(&chaos.url("/a"), b"x")))
        .await
        .unwrap();
    assert_eq!(chaos.request_count(), 4);
    assert_eq!(chaos.count("GET", "/a"), 3);
    assert_eq!(chaos.count("POST", "/a"), 1);
    assert_eq!(chaos.count_path("/a"), 4);
    // The client does not pool, so every request had its own connection.
    assert_eq!(chaos.connection_count(), 4);
    chaos.reset_counts();
    assert_eq!(chaos.request_count(), 0);
    assert_eq!(chaos.connection_count(), 0);
    assert!(chaos.deliveries().is_empty());
}

#[tokio::test]
async fn refuses_non_loopback_listen_address() {
    let err = ChaosServer::builder()
        .addr("0.0.0.0:0".parse().unwrap())
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}
