//! A fault-injecting HTTP upstream for tests, demos and benchmarks: every
//! network failure on demand, on loopback.
//!
//! ```
//! use backstop_chaos::{ChaosServer, Fault, Script};
//! use http_body_util::{BodyExt, Empty};
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let chaos = ChaosServer::builder().tls(false).start().await?; // 127.0.0.1:<ephemeral>
//! chaos.script("/flaky", Script::fail_times(1, Fault::status(503)));
//!
//! let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
//! let first = client.get(chaos.url("/flaky").parse()?).await?;
//! assert_eq!(first.status(), 503);
//! let second = client.get(chaos.url("/flaky").parse()?).await?;
//! assert_eq!(second.status(), 200);
//! assert_eq!(second.into_body().collect().await?.to_bytes(), "ok\n");
//!
//! assert_eq!(chaos.count("GET", "/flaky"), 2);
//! chaos.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # The server
//!
//! [`ChaosServer`] listens on loopback only, speaks HTTP/1.1 and HTTP/2 (by
//! prior knowledge on plain TCP, by ALPN on TLS) and, with
//! [`ChaosServerBuilder::tls`], TLS with a freshly generated CA and server
//! certificate valid for `localhost`, `127.0.0.1` and `::1`. A client that
//! should trust it adds [`ChaosServer::ca_cert_der`] to its roots (or uses
//! [`ChaosServer::root_store`] / [`ChaosServer::client_tls_config`]; curl:
//! `--cacert` with [`ChaosServer::ca_cert_pem`]). [`ChaosServer::url`] always
//! uses the IP literal (`http://127.0.0.1:PORT/...`, also for https), so no
//! name is ever resolved.
//!
//! Every request's head and **complete body** are read before any fault is
//! applied (except `refused-stream` and `goaway`, which say the request was
//! never processed), and recorded as a [`Delivery`] (method, path, `idempotency-key`,
//! `x-request-id`, body length and [`digest()`]). Tests use
//! [`ChaosServer::deliveries`], [`ChaosServer::count`],
//! [`ChaosServer::count_key`] etc. to prove e.g. that a non-idempotent request
//! was delivered at most once. Normal responses carry `x-chaos-fault`,
//! `x-chaos-body-len` and `x-chaos-body-digest` (16 hex digits) headers.
//!
//! # Choosing a fault per request
//!
//! In order of precedence:
//!
//! 1. header `x-chaos-fault: <name>[?<params>]` on any path; parameters are
//!    taken from the URL query string and from the part after `?` in the header
//!    (the header wins on duplicates), e.g.
//!    `x-chaos-fault: status?code=429&retry_after=2`;
//! 2. path `/fault/<name>?<params>`, e.g. `/fault/drip?chunk=2&ms=50&total=20`
//!    (see [`Fault::to_path`] / [`ChaosServer::fault_url`]);
//! 3. the [`Script`] on the longest matching path prefix
//!    ([`ChaosServer::script`], [`ChaosServer::set_fault_for`]);
//! 4. otherwise `ok`.
//!
//! Parameters are percent-decoded; unknown names, unknown parameters and
//! malformed values get a `400 Bad Request` whose body says what is wrong.
//! Durations are in milliseconds (`ms`), sizes in bytes (at most 16 MiB).
//!
//! | name | parameters | what the server does |
//! |------|-----------|----------------------|
//! | `ok` | – | `200 OK`, body `ok\n` |
//! | `status` | `code` (503), `retry_after` (seconds), `retry_after_date` (HTTP-date *n* s ahead), `retry_after_raw` (verbatim), `body` (size) | that status, optional `Retry-After` |
//! | `reset-after-read` | – | read request, RST the connection |
//! | `close-after-read` | – | read request, close (FIN) without a response |
//! | `stall-headers` | `ms` (forever) | no response head until `ms`, then `200 ok` |
//! | `stall-body` | `bytes` (16), `total` (1024), `ms` (forever) | head + `Content-Length: total`, `bytes` bytes, stall, rest |
//! | `drip` | `chunk` (1), `ms` (100), `total` (10) | `total` bytes, `chunk` bytes every `ms` |
//! | `garbage` | – | [`GARBAGE`] bytes instead of a response, then close |
//! | `echo` | – | `200 OK` echoing the request body |
//! | `refused-stream` | – | HTTP/2: `RST_STREAM(REFUSED_STREAM)`, **not** recorded; HTTP/1.1: close without a response, not recorded |
//! | `goaway` | – | HTTP/2: `GOAWAY` whose last-stream-id is below the request's stream, then close; **not** recorded; HTTP/1.1: as `refused-stream` |
//! | `goaway-graceful` | – | `200 ok`, after a graceful `GOAWAY` (HTTP/2) or with `Connection: close` (HTTP/1.1): the next request needs a new connection |
//!
//! On HTTP/2, `reset-after-read`, `close-after-read` and `garbage` act on the
//! whole connection (all of its streams). `refused-stream` and `goaway` are the
//! two ways HTTP/2 says a request was never processed (RFC 9113 §8.7), so they
//! are the only faults that leave no [`Delivery`]; a `goaway`'s last-stream-id
//! still covers every stream of the connection already delivered, so the
//! server never disowns a request it has.
//!
//! # What curl shows
//!
//! Observed with curl 7.88 against the binary (`curl -v URL`; add
//! `--max-time 2` for the stalls, `--connect-timeout 2` for the black hole):
//!
//! | fault | what `curl -v` prints | exit |
//! |-------|-----------------------|------|
//! | `ok` | `< HTTP/1.1 200 OK` … body `ok` | 0 |
//! | `status?code=503&retry_after=2` | `< HTTP/1.1 503 Service Unavailable`, `< retry-after: 2` | 0 |
//! | `status?code=429&retry_after_date=30` | `< retry-after: Sat, 28 Nov 2026 20:04:01 GMT` | 0 |
//! | `reset-after-read` | `Recv failure: Connection reset by peer` | 56 |
//! | `close-after-read` | `Empty reply from server` | 52 |
//! | `stall-headers` | `Operation timed out after 2001 milliseconds with 0 bytes received` | 28 |
//! | `stall-body` | headers with `content-length: 1024`, then `Operation timed out … with 16 out of 1024 bytes received` | 28 |
//! | `drip` | headers at once, then the body trickles in | 0 |
//! | `garbage` | `Received HTTP/0.9 when not allowed` | 1 |
//! | bad parameter | `< HTTP/1.1 400 Bad Request`, body `bad chaos request: …` | 0 |
//! | h2 (`--http2-prior-knowledge`) `reset-after-read` | `Recv failure: Connection reset by peer` | 56 |
//! | h2 `close-after-read` / `garbage` | `HTTP/2 stream 1 was not closed cleanly before end of the underlying stream` | 18 |
//! | h2 `refused-stream` | `REFUSED_STREAM, retrying a fresh connect` (×5), then `Connection died, tried 5 times before giving up` | 56 |
//! | h2 `goaway` | `recveived GOAWAY, error=0, last_stream=0`, then `Error in the HTTP2 framing layer` | 16 |
//! | h2 `goaway-graceful` | `recveived GOAWAY, error=0, last_stream=2147483647`, then `< HTTP/2 200` | 0 |
//! | TLS without `--cacert` | `SSL certificate problem: self-signed certificate in certificate chain` | 60 |
//! | `accept-then-reset` listener | `Recv failure: Connection reset by peer` | 56 |
//! | `tls-stall` listener (`https://`) | `TLS handshake, Client hello (1)`, then `Connection timed out after 2001 milliseconds` | 28 |
//! | `black-hole` listener | `Failed to connect to 127.0.0.1 port … after 2001 ms: Timeout was reached` | 28 |
//! | `refuse` address | `connect to 127.0.0.1 port … failed: Connection refused` | 7 |
//!
//! # Connection-level faults
//!
//! These need a listener of their own, since no request is ever read:
//! [`ConnectionFault::start`] gives a [`FaultListener`] for
//! `accept-then-reset`, `tls-stall`, `black-hole` (see [`BlackHole`]) and
//! `refuse` (see [`closed_port_addr`]).
//!
//! # Flapping upstreams
//!
//! [`Script::fail_times`], [`Script::down_for`] and [`Script::sequence`] script
//! request-level failures; [`ChaosServer::down`], [`ChaosServer::up`] and
//! [`ChaosServer::down_for`] take the whole listener away (connections
//! refused) and bring it back on the same port. All timing uses the tokio
//! clock, so scripts follow `tokio::time::pause`.
//!
//! # Binary
//!
//! `cargo run -p backstop-chaos -- --listen 127.0.0.1:8080 [--tls]` serves the
//! same faults and prints ready-to-paste `curl -v` commands.

mod body;
mod connfault;
mod fault;
mod io;
mod script;
mod server;
mod tls;

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use connfault::{BlackHole, ConnectionFault, FaultListener, closed_port_addr};
pub use fault::{FAULT_NAMES, Fault, MAX_BODY, RetryAfter};
pub use script::Script;
pub use server::{ChaosServer, ChaosServerBuilder, Delivery, FAULT_HEADER, GARBAGE};
pub use tls::TlsIdentity;

/// The body digest recorded in [`Delivery::body_digest`]: 64-bit FNV-1a over
/// the body bytes. Stable across processes and Rust versions.
pub fn digest(bytes: &[u8]) -> u64 {
    digest::update(digest::OFFSET, bytes)
}

pub(crate) mod digest {
    pub(crate) const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub(crate) fn update(mut h: u64, bytes: &[u8]) -> u64 {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
        h
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
