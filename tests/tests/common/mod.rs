//! Helpers shared by the client tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;

/// Awaits `fut`, failing the test if it does not end on its own within 20 s.
pub async fn bounded<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .expect("every call ends on its own")
}

/// A request with a small JSON body.
pub fn request(method: Method, url: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from_static(b"{\"amount\": 42}")))
        .unwrap()
}

/// Serves `app` with `axum::serve` on a free loopback port; axum puts the client's address in
/// each request's extensions (`ConnectInfo<SocketAddr>`), where the gateway reads it.
pub async fn serve_axum(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    });
    addr
}
