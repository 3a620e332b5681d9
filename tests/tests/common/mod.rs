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
