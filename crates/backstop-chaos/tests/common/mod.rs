//! Shared helpers for the integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type Body = Full<Bytes>;

/// Every test step is bounded by this.
pub const BOUND: Duration = Duration::from_secs(5);

pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(BOUND, f)
        .await
        .expect("test step exceeded its time bound")
}

/// An HTTP/1 client that never reuses connections.
pub fn h1_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

/// An HTTP/2 prior-knowledge client.
pub fn h2_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .pool_max_idle_per_host(0)
        .build_http()
}

pub fn get(url: &str) -> http::Request<Body> {
    http::Request::get(url).body(Body::default()).unwrap()
}

pub fn post(url: &str, body: &'static [u8]) -> http::Request<Body> {
    http::Request::post(url)
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

/// The error chain, outermost first.
pub fn chain<'a>(err: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = vec![err];
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push(e);
        cur = e.source();
    }
    out
}

pub fn io_kind(err: &(dyn StdError + 'static)) -> Option<io::ErrorKind> {
    chain(err)
        .into_iter()
        .find_map(|e| e.downcast_ref::<io::Error>().map(io::Error::kind))
}

pub fn hyper_err<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a hyper::Error> {
    chain(err)
        .into_iter()
        .find_map(|e| e.downcast_ref::<hyper::Error>())
}

/// True if the chain shows a TCP reset: an `io::Error` of kind
/// `ConnectionReset`, or (HTTP/2, where h2 hides the io error from
/// `source()`) an error whose message is the OS "reset by peer" message.
pub fn is_reset(err: &(dyn StdError + 'static)) -> bool {
    io_kind(err) == Some(io::ErrorKind::ConnectionReset)
        || chain(err)
            .iter()
            .any(|e| e.to_string().contains("reset by peer"))
}

pub fn describe(err: &(dyn StdError + 'static)) -> String {
    chain(err)
        .iter()
        .map(|e| format!("{e} [{e:?}]"))
        .collect::<Vec<_>>()
        .join(" <- ")
}
