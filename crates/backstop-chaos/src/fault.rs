//! Request-level faults: the [`Fault`] type and its names. Their URL / header encoding lives in
//! [`codec`].

use std::time::Duration;

mod codec;

pub(crate) use codec::parse_query;

/// Largest body (in bytes) a fault may be asked to produce, and the largest
/// request body the server keeps in memory for [`Fault::Echo`].
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// How a [`Fault::Status`] response carries a `Retry-After` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: <n>` (delay-seconds form).
    Seconds(u64),
    /// `Retry-After: <HTTP-date>`, the date being `n` seconds after the
    /// response is produced (wall clock, whole seconds).
    DateIn(u64),
    /// `Retry-After: <raw string>`, sent verbatim, for testing how a client
    /// copes with garbage. Must be a valid header value (no control bytes).
    Raw(String),
}

/// A request-level fault: what the chaos server does with one request.
///
/// The request head and the complete request body are read (and recorded as a
/// [`Delivery`](crate::Delivery)) before the fault is applied, so a client can
/// never tell a fault apart from a server that did the work and then failed.
/// The exceptions are [`Fault::RefusedStream`] and [`Fault::GoAway`], HTTP/2's
/// ways of saying the request was never processed: they record nothing.
///
/// Select a fault per request with the URL `/fault/<name>?<params>` or with the
/// header `x-chaos-fault: <name>[?<params>]` (see the crate docs), or per path
/// prefix with [`ChaosServer::script`](crate::ChaosServer::script).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `ok`: a plain `200 OK` with the body `ok\n`. The default for any path
    /// without a fault or a script.
    Ok,
    /// `status`: a response with the given status code (URL param `code`,
    /// default 503), optionally a `Retry-After` header (params `retry_after`,
    /// `retry_after_date` or `retry_after_raw`) and a body of `body_len` bytes
    /// of `x` (param `body`; default: a short text line).
    ///
    /// The client sees a complete, well-formed response.
    Status {
        /// The status code, 200..=999.
        code: u16,
        /// Optional `Retry-After` header.
        retry_after: Option<RetryAfter>,
        /// Body length; `None` sends `status <code>\n`.
        body_len: Option<usize>,
    },
    /// `reset-after-read`: read the full request, then reset the TCP
    /// connection (`SO_LINGER` 0 + close, so an RST is sent). The client sees
    /// `ECONNRESET` ("connection reset by peer"). On HTTP/2 every stream of
    /// the connection fails.
    ResetAfterRead,
    /// `close-after-read`: read the full request, then close the connection
    /// gracefully (FIN, and TLS `close_notify` on TLS) without any response.
    /// The client sees an incomplete message / empty reply.
    CloseAfterRead,
    /// `stall-headers`: never send the response head, or send a `200 OK`
    /// only after `duration` (param `ms`). The client's read times out.
    StallHeaders {
        /// `None` stalls until the connection is closed.
        duration: Option<Duration>,
    },
    /// `stall-body`: send the head with `Content-Length: total` (param
    /// `total`, default 1024) and the first `sent` bytes of the body (param
    /// `bytes`, default 16), then stall for `duration` (param `ms`, default:
    /// forever) and finally send the rest.
    StallBody {
        /// Bytes sent before the stall (clamped to `total`).
        sent: usize,
        /// Declared and eventually sent body length.
        total: usize,
        /// `None` stalls until the connection is closed.
        duration: Option<Duration>,
    },
    /// `drip`: a `200 OK` whose body of `total` bytes (param `total`, default
    /// 10) arrives `chunk` bytes at a time (param `chunk`, default 1), one
    /// chunk every `interval` (param `ms`, default 100). The first chunk is
    /// sent immediately.
    Drip {
        /// Bytes per chunk, at least 1.
        chunk: usize,
        /// Pause between chunks.
        interval: Duration,
        /// Total body length.
        total: usize,
    },
    /// `garbage`: instead of a response, bytes that are not HTTP
    /// ([`GARBAGE`](crate::GARBAGE)), then a graceful close. An HTTP/1 client
    /// sees a parse error; an HTTP/2 client (whose connection preface was
    /// already answered) a connection error.
    Garbage,
    /// `echo`: a `200 OK` whose body is the request body.
    Echo,
    /// `refused-stream`: HTTP/2 `RST_STREAM(REFUSED_STREAM)` on the request's stream, before
    /// the body is read. The request is **not** recorded as a [`Delivery`](crate::Delivery):
    /// the server promises it did not process it (RFC 9113 §8.7), and the connection stays
    /// usable. HTTP/1.1 has no such frame: there the server reads the request, does not record
    /// it, and closes the connection without a response (as `close-after-read`).
    RefusedStream,
    /// `goaway`: HTTP/2 `GOAWAY(NO_ERROR)` whose last-stream-id is below the request's stream
    /// (the highest stream of the connection already delivered, or 0), then the connection is
    /// closed. The request is **not** recorded as a [`Delivery`](crate::Delivery): the GOAWAY
    /// says the stream was never processed. If a later stream of the same connection was already
    /// delivered, the last-stream-id must cover it, so this request's stream is covered too
    /// ("might have been processed") and the client sees the connection close under it.
    /// HTTP/1.1: as [`Fault::RefusedStream`].
    GoAway,
    /// `goaway-graceful`: a normal `200 OK` (the request is delivered), and the server starts a
    /// graceful shutdown of the connection: on HTTP/2 `GOAWAY` with the maximal last-stream-id
    /// and a `PING` before the response, then `GOAWAY` with the last processed stream; on
    /// HTTP/1.1 the connection closes after the response. Later requests need a new connection.
    GoAwayGraceful,
}

/// Every fault name understood in `/fault/<name>` and `x-chaos-fault`.
pub const FAULT_NAMES: &[&str] = &[
    "ok",
    "status",
    "reset-after-read",
    "close-after-read",
    "stall-headers",
    "stall-body",
    "drip",
    "garbage",
    "echo",
    "refused-stream",
    "goaway",
    "goaway-graceful",
];

impl Fault {
    /// `Fault::Status` with `code`, no `Retry-After` and the default body.
    pub fn status(code: u16) -> Fault {
        Fault::Status {
            code,
            retry_after: None,
            body_len: None,
        }
    }

    /// `Fault::Status` with `code` and a `Retry-After` header.
    pub fn status_retry_after(code: u16, retry_after: RetryAfter) -> Fault {
        Fault::Status {
            code,
            retry_after: Some(retry_after),
            body_len: None,
        }
    }

    /// The fault's name as used in URLs, headers and [`Delivery::fault`](crate::Delivery::fault).
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Ok => "ok",
            Fault::Status { .. } => "status",
            Fault::ResetAfterRead => "reset-after-read",
            Fault::CloseAfterRead => "close-after-read",
            Fault::StallHeaders { .. } => "stall-headers",
            Fault::StallBody { .. } => "stall-body",
            Fault::Drip { .. } => "drip",
            Fault::Garbage => "garbage",
            Fault::Echo => "echo",
            Fault::RefusedStream => "refused-stream",
            Fault::GoAway => "goaway",
            Fault::GoAwayGraceful => "goaway-graceful",
        }
    }
}
