//! HTTP/2 stream-level faults (`refused-stream`, `goaway`, `goaway-graceful`), seen by a raw h2
//! client over h2c and over TLS with ALPN `h2`, and their HTTP/1.1 fallbacks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use backstop_chaos::{ChaosServer, Fault};
use bytes::Bytes;
use common::*;
use h2::client::SendRequest;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

type ConnTask = JoinHandle<Result<(), h2::Error>>;

/// A raw h2 client connection to `chaos` (h2c prior knowledge, or TLS with ALPN `h2`).
async fn connect(chaos: &ChaosServer) -> (SendRequest<Bytes>, ConnTask) {
    let tcp = TcpStream::connect(chaos.addr()).await.unwrap();
    match chaos.client_tls_config() {
        None => {
            let (send, conn) = h2::client::handshake(tcp).await.unwrap();
            (send, tokio::spawn(conn))
        }
        Some(cfg) => {
            let mut cfg = cfg.unwrap();
            cfg.alpn_protocols = vec![b"h2".to_vec()];
            let name = ServerName::IpAddress(chaos.addr().ip().into());
            let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await
                .unwrap();
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            let (send, conn) = h2::client::handshake(tls).await.unwrap();
            (send, tokio::spawn(conn))
        }
    }
}

/// Sends `method path` with `body` on a new stream; the response future.
async fn send(
    client: &mut SendRequest<Bytes>,
    chaos: &ChaosServer,
    method: &str,
    path: &str,
    body: &'static [u8],
) -> h2::client::ResponseFuture {
    let ready = bounded(client.clone().ready()).await.unwrap();
    *client = ready;
    let req = http::Request::builder()
        .method(method)
        .uri(chaos.url(path))
        .body(())
        .unwrap();
    let (response, mut tx) = client.send_request(req, body.is_empty()).unwrap();
    if !body.is_empty() {
        tx.send_data(Bytes::from_static(body), true).unwrap();
    }
    response
}

/// The response body, read to its end.
async fn read_all(response: http::Response<h2::RecvStream>) -> Bytes {
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = bounded(body.data()).await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        out.extend_from_slice(&chunk);
    }
    Bytes::from(out)
}

async fn both_wires(test: impl AsyncFn(ChaosServer)) {
    for tls in [false, true] {
        let chaos = ChaosServer::builder().tls(tls).start().await.unwrap();
        test(chaos).await;
    }
}

#[tokio::test]
async fn refused_stream_is_not_delivered_and_the_connection_stays() {
    both_wires(async |chaos| {
        let (mut client, _conn) = connect(&chaos).await;
        let refused = send(
            &mut client,
            &chaos,
            "POST",
            &Fault::RefusedStream.to_path(),
            b"pay 42",
        )
        .await;
        let err = bounded(refused).await.unwrap_err();
        assert_eq!(err.reason(), Some(h2::Reason::REFUSED_STREAM), "{err}");
        assert!(err.is_reset() && err.is_remote(), "{err:?}");
        assert_eq!(
            chaos.request_count(),
            0,
            "a refused stream is not a delivery"
        );

        // The same connection serves the next stream.
        let ok = send(&mut client, &chaos, "POST", "/again", b"pay 42").await;
        let res = bounded(ok).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(read_all(res).await, "ok\n");
        assert_eq!(chaos.request_count(), 1);
        assert_eq!(chaos.connection_count(), 1);
    })
    .await;
}

#[tokio::test]
async fn goaway_puts_the_request_above_the_last_stream_id() {
    both_wires(async |chaos| {
        let (mut client, conn) = connect(&chaos).await;
        // Stream 1 is delivered and answered; stream 3 gets the GOAWAY.
        let first = send(&mut client, &chaos, "GET", "/first", b"").await;
        let first = bounded(first).await.unwrap();
        assert_eq!(read_all(first).await, "ok\n");

        let goaway = send(
            &mut client,
            &chaos,
            "POST",
            &Fault::GoAway.to_path(),
            b"pay 42",
        )
        .await;
        let err = bounded(goaway).await.unwrap_err();
        // h2 gives this error only to streams above the GOAWAY's last-stream-id.
        assert!(err.is_go_away() && err.is_remote(), "{err:?}");
        assert_eq!(err.reason(), Some(h2::Reason::NO_ERROR));
        assert_eq!(
            chaos.request_count(),
            1,
            "only the first stream was delivered"
        );
        assert_eq!(chaos.count_path("/first"), 1);

        // The server closes the connection after its GOAWAY; no new stream may open on it.
        bounded(conn).await.unwrap().unwrap();
        assert!(client.clone().ready().await.is_err());
    })
    .await;
}

/// A stream the application already has is never disowned: a GOAWAY decided while it is in
/// flight names it as possibly processed, and only the later stream as not processed.
#[tokio::test]
async fn goaway_covers_a_stream_already_delivered() {
    both_wires(async |chaos| {
        let (mut client, _conn) = connect(&chaos).await;
        let stalled = send(
            &mut client,
            &chaos,
            "POST",
            &Fault::StallHeaders { duration: None }.to_path(),
            b"in flight",
        )
        .await;
        let stalled = tokio::spawn(stalled);
        bounded(async {
            while chaos.request_count() == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await;

        let goaway = send(&mut client, &chaos, "POST", &Fault::GoAway.to_path(), b"x").await;
        let err = bounded(goaway).await.unwrap_err();
        assert!(err.is_go_away() && err.is_remote(), "{err:?}");

        // Stream 1 is at or below the last-stream-id: it ends with the connection, not with the
        // GOAWAY's "not processed".
        let err = bounded(stalled).await.unwrap().unwrap_err();
        assert!(
            !err.is_go_away(),
            "a delivered stream was disowned: {err:?}"
        );
        assert_eq!(chaos.request_count(), 1);
    })
    .await;
}

#[tokio::test]
async fn goaway_graceful_answers_then_needs_a_new_connection() {
    both_wires(async |chaos| {
        let (mut client, conn) = connect(&chaos).await;
        let res = send(
            &mut client,
            &chaos,
            "POST",
            &Fault::GoAwayGraceful.to_path(),
            b"pay 42",
        )
        .await;
        let res = bounded(res).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(read_all(res).await, "ok\n");
        assert_eq!(chaos.request_count(), 1, "a graceful GOAWAY still delivers");

        // The GOAWAY came before the response: this connection takes no new stream, and the
        // server closes it once its streams are done.
        let err = bounded(client.clone().ready()).await.unwrap_err();
        assert!(err.is_go_away() && err.is_remote(), "{err:?}");
        bounded(conn).await.unwrap().unwrap();
        assert_eq!(chaos.count_path("/after"), 0);

        let (mut fresh, _conn) = connect(&chaos).await;
        let res = send(&mut fresh, &chaos, "GET", "/after", b"").await;
        assert_eq!(bounded(res).await.unwrap().status(), 200);
        assert_eq!(chaos.connection_count(), 2);
    })
    .await;
}

/// HTTP/1.1 has neither frame: `refused-stream` and `goaway` close without a response and
/// record nothing; `goaway-graceful` closes the connection after its response.
#[tokio::test]
async fn http1_fallbacks() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = h1_client();
    for fault in [Fault::RefusedStream, Fault::GoAway] {
        let err = bounded(client.request(post(&chaos.fault_url(&fault), b"pay 42")))
            .await
            .unwrap_err();
        assert!(
            hyper_err(&err).is_some_and(hyper::Error::is_incomplete_message),
            "{fault:?}: {}",
            describe(&err)
        );
    }
    assert_eq!(chaos.request_count(), 0);

    // A pooling client: the graceful close makes the next request take a new connection.
    let pooled: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
    let res = bounded(pooled.request(get(&chaos.fault_url(&Fault::GoAwayGraceful))))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get(http::header::CONNECTION).unwrap(),
        "close"
    );
    res.into_body().collect().await.unwrap();
    let before = chaos.connection_count();
    let res = bounded(pooled.request(get(&chaos.url("/after"))))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(chaos.connection_count(), before + 1);
}
