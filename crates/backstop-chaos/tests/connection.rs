//! Connection-level faults: accept-then-reset, tls-stall, black hole, refuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use backstop_chaos::{BlackHole, ChaosServer, ConnectionFault, closed_port_addr};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

#[tokio::test]
async fn accept_then_reset_raw() {
    let l = ConnectionFault::AcceptThenReset.start().await.unwrap();
    let mut s = bounded(TcpStream::connect(l.addr())).await.unwrap();
    // The write may or may not fail depending on timing; the read must.
    let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buf = [0u8; 16];
    let err = bounded(s.read(&mut buf)).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(l.connection_count(), 1);
    l.shutdown().await;
}

#[tokio::test]
async fn accept_then_reset_hyper_client() {
    let l = ConnectionFault::AcceptThenReset.start().await.unwrap();
    let client = h1_client();
    let err = bounded(client.request(get(&format!("http://{}/", l.addr()))))
        .await
        .unwrap_err();
    // Depending on whether the RST lands before or after the request write,
    // hyper reports a reset read, a failed write or a closed connection.
    let kind = io_kind(&err);
    assert!(
        matches!(
            kind,
            Some(io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe)
        ) || hyper_err(&err).is_some_and(|h| h.is_incomplete_message()),
        "{}",
        describe(&err)
    );
}

#[tokio::test]
async fn tls_stall_never_completes_handshake() {
    let l = ConnectionFault::TlsStall.start().await.unwrap();
    // Even a client that trusts the chaos CA gets nowhere.
    let id = backstop_chaos::TlsIdentity::generate().unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(id.client_config().unwrap()));
    let tcp = bounded(TcpStream::connect(l.addr())).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let res = timeout(Duration::from_millis(300), connector.connect(name, tcp)).await;
    assert!(res.is_err(), "handshake must not complete");
    assert_eq!(l.connection_count(), 1);
}

#[tokio::test]
async fn black_hole_connect_hangs() {
    let bh = BlackHole::start().await.unwrap();
    let res = timeout(Duration::from_millis(300), TcpStream::connect(bh.addr())).await;
    assert!(res.is_err(), "connect must not complete: {res:?}");

    let l = ConnectionFault::BlackHole.start().await.unwrap();
    let res = timeout(Duration::from_millis(300), TcpStream::connect(l.addr())).await;
    assert!(res.is_err(), "connect must not complete: {res:?}");
}

#[tokio::test]
async fn refuse_is_connection_refused() {
    let addr = closed_port_addr().unwrap();
    let err = bounded(TcpStream::connect(addr)).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);

    let l = ConnectionFault::Refuse.start().await.unwrap();
    let err = bounded(TcpStream::connect(l.addr())).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn server_down_and_up_on_same_port() {
    let chaos = ChaosServer::start().await.unwrap();
    let addr = chaos.addr();
    let client = h1_client();
    assert_eq!(
        bounded(client.request(get(&chaos.url("/"))))
            .await
            .unwrap()
            .status(),
        200
    );
    // A connection held open across the outage is closed by it.
    let mut held = bounded(TcpStream::connect(addr)).await.unwrap();

    chaos.down().await;
    let err = bounded(TcpStream::connect(addr)).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    let mut buf = [0u8; 8];
    let n = bounded(held.read(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0, "held connection must be closed");

    chaos.up().await.unwrap();
    assert_eq!(chaos.addr(), addr);
    assert_eq!(
        bounded(client.request(get(&chaos.url("/"))))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn server_down_for_comes_back() {
    let chaos = ChaosServer::start().await.unwrap();
    let addr = chaos.addr();
    chaos.down_for(Duration::from_millis(200)).await;
    let err = bounded(TcpStream::connect(addr)).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    // Poll (bounded) until it is back.
    let back = bounded(async {
        loop {
            if TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    back.await;
    let resp = bounded(h1_client().request(get(&chaos.url("/"))))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn drop_stops_the_server() {
    let chaos = ChaosServer::start().await.unwrap();
    let addr = chaos.addr();
    chaos.shutdown().await;
    let err = bounded(TcpStream::connect(addr)).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
}
