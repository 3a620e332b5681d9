//! An in-process upstream whose replies are scripted, recording what each attempt delivered.
#![allow(
    missing_docs,
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use backstop_classify::{Error, Kind, Phase};
use backstop_retry::ReplayBody;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

/// What the upstream does with one request.
#[derive(Clone, Debug)]
pub enum Reply {
    Status(u16, Vec<(&'static str, String)>),
    Fail(Kind, Phase),
    /// Read `n` chunks of the request body, then answer with this status without reading the rest.
    EarlyStatus(usize, u16),
}

impl Reply {
    pub fn status(code: u16) -> Reply {
        Reply::Status(code, Vec::new())
    }
    pub fn with_header(code: u16, name: &'static str, value: &str) -> Reply {
        Reply::Status(code, vec![(name, value.to_owned())])
    }
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    pub body_error: Option<String>,
}

#[derive(Clone, Default)]
pub struct Upstream {
    script: Arc<Mutex<VecDeque<Reply>>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Bodies an early reply left unread; kept alive like a transport still sending them.
    pub abandoned: Arc<Mutex<Vec<ReplayBody<Chunked>>>>,
}

impl Upstream {
    pub fn new(replies: impl IntoIterator<Item = Reply>) -> Upstream {
        Upstream {
            script: Arc::new(Mutex::new(replies.into_iter().collect())),
            ..Upstream::default()
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub async fn handle(
        self,
        req: Request<ReplayBody<Chunked>>,
    ) -> Result<Response<Full<Bytes>>, Error> {
        let reply = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Reply::status(200));
        let (parts, mut body) = req.into_parts();
        let mut bytes = Vec::new();
        let mut body_error = None;
        let early = match &reply {
            Reply::EarlyStatus(n, _) => Some(*n),
            _ => None,
        };
        let mut chunks = 0;
        loop {
            if early.is_some_and(|n| chunks >= n) {
                break;
            }
            match body.frame().await {
                None => break,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        bytes.extend_from_slice(&data);
                        chunks += 1;
                    }
                }
                Some(Err(err)) => {
                    body_error = Some(err.to_string());
                    break;
                }
            }
        }
        self.seen.lock().unwrap().push(Seen {
            method: parts.method,
            headers: parts.headers,
            body: Bytes::from(bytes),
            at: Instant::now(),
            body_error,
        });
        match reply {
            Reply::Status(code, headers) => {
                let mut res = Response::new(Full::new(Bytes::from_static(b"reply")));
                *res.status_mut() = StatusCode::from_u16(code).unwrap();
                for (name, value) in headers {
                    res.headers_mut().insert(name, value.parse().unwrap());
                }
                Ok(res)
            }
            Reply::Fail(kind, phase) => Err(Error::new(kind, phase)),
            Reply::EarlyStatus(_, code) => {
                self.abandoned.lock().unwrap().push(body);
                let mut res = Response::new(Full::new(Bytes::new()));
                *res.status_mut() = StatusCode::from_u16(code).unwrap();
                Ok(res)
            }
        }
    }
}

/// A streaming request body: its chunks arrive one per poll, with a `Pending` between them, like
/// a body read from a socket.
#[derive(Debug)]
pub struct Chunked {
    chunks: VecDeque<Bytes>,
    ready: bool,
    trailers: Option<HeaderMap>,
}

impl Chunked {
    pub fn new(chunks: impl IntoIterator<Item = Bytes>) -> Chunked {
        Chunked {
            chunks: chunks.into_iter().collect(),
            ready: false,
            trailers: None,
        }
    }

    /// `total` bytes of a recognisable pattern in chunks of `chunk`.
    pub fn pattern(total: usize, chunk: usize) -> (Chunked, Bytes) {
        let all: Bytes = (0..total)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        let chunks = (0..total)
            .step_by(chunk)
            .map(|at| all.slice(at..(at + chunk).min(total)));
        (Chunked::new(chunks), all)
    }

    pub fn empty() -> Chunked {
        Chunked::new([])
    }

    pub fn with_trailers(mut self, trailers: HeaderMap) -> Chunked {
        self.trailers = Some(trailers);
        self
    }
}

impl Body for Chunked {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if !self.ready {
            self.ready = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.ready = false;
        match self.chunks.pop_front() {
            Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            None => Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.trailers.is_none()
    }
}

pub const MS: Duration = Duration::from_millis(1);

/// A retry budget that never allows a retry: no share of requests and no per-second floor.
pub fn spent_budget() -> backstop_retry::RetryBudget {
    backstop_retry::RetryBudget::builder()
        .ratio(0.0)
        .min_per_second(0)
        .build()
        .unwrap()
}
