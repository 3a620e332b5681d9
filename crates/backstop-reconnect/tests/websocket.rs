//! WebSocket adapter on loopback: messages flow, and a peer that stops answering pings is
//! detected within the heartbeat bound.

#![cfg(feature = "websocket")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use backstop_classify::{Kind, Phase, Timer};
use backstop_reconnect::{Event, Heartbeat, Supervisor, WebSocket, WsMessage};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::time::{Instant, timeout};

const MS: Duration = Duration::from_millis(1);
const BOUND: Duration = Duration::from_secs(600);

#[tokio::test(start_paused = true)]
async fn a_websocket_peer_that_stops_answering_pings_is_detected_within_the_bound() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let answer_for = 10_000 * MS;
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
        ws.send(WsMessage::text("welcome")).await.unwrap();
        // Reading answers pings (tungstenite replies by itself) ...
        let stop_at = Instant::now() + answer_for;
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(stop_at, ws.next()).await {}
        // ... then the peer goes silent, connection still open.
        std::future::pending::<()>().await;
        drop(ws);
    });

    let heartbeat = Heartbeat::websocket(1000 * MS, 2000 * MS).unwrap();
    let bound = heartbeat.bound();
    let start = Instant::now();
    let (handle, mut events) = Supervisor::builder(WebSocket::new(url).unwrap())
        .heartbeat(heartbeat)
        .spawn()
        .unwrap();
    let mut messages = Vec::new();
    let error = timeout(BOUND, async {
        loop {
            match events.recv().await.unwrap() {
                Event::Disconnected { error } => return error,
                Event::Message(m) => messages.push(m),
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(error.kind(), Kind::TimedOut(Timer::Idle));
    let detected = start.elapsed();
    assert!(detected >= answer_for, "{detected:?}");
    assert!(detected <= answer_for + bound, "{detected:?}");
    // The greeting arrived; the pongs were swallowed.
    assert_eq!(messages, vec![WsMessage::text("welcome")]);
    handle.shutdown().await;
}

#[tokio::test]
async fn wss_goes_through_the_given_rustls_config_and_a_bad_certificate_is_classified() {
    let identity = backstop_chaos::TlsIdentity::generate().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(identity.server_config().unwrap()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("wss://localhost:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut ws = tokio_tungstenite::accept_async(tls).await.unwrap();
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() {
                        ws.send(msg).await.unwrap();
                    }
                }
            });
        }
    });

    // Trusting the test CA: messages flow over TLS.
    let tls = Arc::new(identity.client_config().unwrap());
    let (handle, mut events) =
        Supervisor::builder(WebSocket::new(url.clone()).unwrap().tls_config(tls))
            .spawn()
            .unwrap();
    handle.send(WsMessage::text("over tls")).unwrap();
    let echoed = timeout(BOUND, events.next_message()).await.unwrap();
    assert_eq!(echoed, Some(WsMessage::text("over tls")));
    handle.shutdown().await;

    // With the default (webpki) roots the test CA is unknown: a classified TLS failure.
    let (handle, mut events) = Supervisor::builder(WebSocket::new(url).unwrap())
        .max_attempts(1)
        .spawn()
        .unwrap();
    let error = timeout(BOUND, handle.stopped()).await.unwrap().unwrap();
    assert!(matches!(error.kind(), Kind::Tls(_)), "{error:?}");
    assert_eq!(error.phase(), Phase::Tls, "{error:?}");
    while events.recv().await.is_some() {}
}

#[test]
fn websocket_urls_are_checked() {
    assert_eq!(WebSocket::new("http://x").unwrap_err().field(), "url");
    assert!(WebSocket::new("wss://example.invalid/feed").is_ok());
    let err = WebSocket::new("ws://x")
        .unwrap()
        .connect_timeout(Duration::ZERO)
        .unwrap_err();
    assert_eq!(err.field(), "connect_timeout");
}
