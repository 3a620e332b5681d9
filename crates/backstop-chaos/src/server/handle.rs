//! What the server does with one request: choosing its fault (header, `/fault/` path or script),
//! reading and recording the body, and answering as the fault says. Separate from the
//! connection handling, which carries out the connection-level actions a fault asks for.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::FAULT_HEADER;
use super::delivery::{Delivery, Shared};
use crate::body::ChaosBody;
use crate::fault::{MAX_BODY, parse_query};
use crate::io::{Action, ConnCtl};
use crate::{Fault, RetryAfter, digest, lock};

struct ReadBody {
    len: u64,
    digest: u64,
    complete: bool,
    kept: Option<Vec<u8>>,
}

async fn read_body(mut body: Incoming, keep: bool) -> ReadBody {
    let mut out = ReadBody {
        len: 0,
        digest: digest::OFFSET,
        complete: true,
        kept: keep.then(Vec::new),
    };
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "request body aborted");
                out.complete = false;
                break;
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    out.len += data.len() as u64;
                    out.digest = digest::update(out.digest, &data);
                    if let Some(kept) = &mut out.kept {
                        if kept.len() + data.len() <= MAX_BODY {
                            kept.extend_from_slice(&data);
                        } else {
                            out.kept = None;
                        }
                    }
                }
            }
        }
    }
    out
}

fn header_string(parts: &http::request::Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn select_fault(parts: &http::request::Parts, shared: &Shared) -> Result<Fault, String> {
    let query = parts.uri.query().unwrap_or("");
    if let Some(h) = parts.headers.get(FAULT_HEADER) {
        let h = h
            .to_str()
            .map_err(|_| format!("{FAULT_HEADER} header is not visible ASCII"))?
            .trim();
        let (name, header_query) = h.split_once('?').unwrap_or((h, ""));
        let mut params = parse_query(query)?;
        params.extend(parse_query(header_query)?);
        return Fault::parse(name.trim(), &params);
    }
    if let Some(rest) = parts.uri.path().strip_prefix("/fault/") {
        return Fault::parse(rest.trim_end_matches('/'), &parse_query(query)?);
    }
    Ok(shared.route(parts.uri.path()))
}

/// What a handler may fail with: hyper answers an HTTP/2 request whose service failed with an
/// `h2::Error` by resetting the stream with that error's reason.
type HandlerError = Box<dyn std::error::Error + Send + Sync>;

pub(super) async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
) -> Result<Response<ChaosBody>, HandlerError> {
    let (parts, body) = req.into_parts();
    let chosen = select_fault(&parts, &shared);
    let h2 = parts.version == Version::HTTP_2;
    match chosen {
        Ok(Fault::RefusedStream) if h2 => {
            tracing::debug!(path = parts.uri.path(), "refusing the stream");
            return Err(Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM)));
        }
        Ok(Fault::GoAway) if h2 => {
            return match ctl.h2_decide_goaway() {
                Some(last_stream_id) => {
                    tracing::debug!(path = parts.uri.path(), last_stream_id, "GOAWAY");
                    Ok(take_over(&ctl, Action::GoAway { last_stream_id }).await)
                }
                // Another request's GOAWAY is on its way; this connection is going.
                None => Ok(std::future::pending().await),
            };
        }
        Ok(Fault::RefusedStream | Fault::GoAway) => {
            // HTTP/1.1 cannot say "not processed": read the request, keep no record of it,
            // close without a response.
            read_body(body, false).await;
            return Ok(take_over(&ctl, Action::Close).await);
        }
        _ => {}
    }
    if h2 && !ctl.h2_begin_processing() {
        // A GOAWAY sent on this connection may cover this stream: it must not be delivered.
        return Ok(std::future::pending().await);
    }
    let read = read_body(body, matches!(chosen, Ok(Fault::Echo))).await;
    let delivery = Delivery {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        idempotency_key: header_string(&parts, "idempotency-key"),
        request_id: header_string(&parts, "x-request-id"),
        headers: parts.headers.clone(),
        body_len: read.len,
        body_digest: read.digest,
        body_complete: read.complete,
        fault: chosen.as_ref().map_or("bad-request", Fault::name),
        at: Instant::now(),
    };
    tracing::debug!(method = %delivery.method, path = %delivery.path, fault = delivery.fault, "request");
    lock(&shared.log).push(delivery);
    let fault = match chosen {
        Ok(f) => f,
        Err(msg) => {
            let resp = simple(
                StatusCode::BAD_REQUEST,
                format!("bad chaos request: {msg}\n"),
            );
            return Ok(with_info(resp, "bad-request", &read));
        }
    };
    let name = fault.name();
    if fault == Fault::GoAwayGraceful {
        ctl.graceful_shutdown().await;
    }
    let resp = respond(fault, &read, &ctl).await;
    Ok(with_info(resp, name, &read))
}

fn simple(status: StatusCode, body: impl Into<Bytes>) -> Response<ChaosBody> {
    let mut resp = Response::new(ChaosBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn with_info(mut resp: Response<ChaosBody>, fault: &str, read: &ReadBody) -> Response<ChaosBody> {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(fault) {
        h.insert(FAULT_HEADER, v);
    }
    h.insert("x-chaos-body-len", HeaderValue::from(read.len));
    if let Ok(v) = HeaderValue::from_str(&format!("{:016x}", read.digest)) {
        h.insert("x-chaos-body-digest", v);
    }
    resp
}

async fn take_over(ctl: &ConnCtl, action: Action) -> Response<ChaosBody> {
    ctl.request(action);
    // The connection task drops this connection; never answer.
    std::future::pending().await
}

async fn respond(fault: Fault, read: &ReadBody, ctl: &ConnCtl) -> Response<ChaosBody> {
    match fault {
        Fault::Ok | Fault::GoAwayGraceful => simple(StatusCode::OK, "ok\n"),
        Fault::Status {
            code,
            retry_after,
            body_len,
        } => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = match body_len {
                Some(n) => Bytes::from(vec![b'x'; n]),
                None => Bytes::from(format!("status {code}\n")),
            };
            let mut resp = simple(status, body);
            let value = match retry_after {
                None => None,
                Some(RetryAfter::Seconds(n)) => Some(HeaderValue::from(n)),
                Some(RetryAfter::DateIn(n)) => {
                    let at = SystemTime::now() + Duration::from_secs(n);
                    HeaderValue::from_str(&httpdate::fmt_http_date(at)).ok()
                }
                Some(RetryAfter::Raw(s)) => HeaderValue::from_str(&s).ok(),
            };
            if let Some(v) = value {
                resp.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
            resp
        }
        Fault::ResetAfterRead => take_over(ctl, Action::Reset).await,
        Fault::CloseAfterRead => take_over(ctl, Action::Close).await,
        Fault::Garbage => take_over(ctl, Action::Garbage).await,
        Fault::StallHeaders { duration } => match duration {
            None => std::future::pending().await,
            Some(d) => {
                tokio::time::sleep(d).await;
                simple(StatusCode::OK, "ok\n")
            }
        },
        Fault::StallBody {
            sent,
            total,
            duration,
        } => {
            let data = Bytes::from(vec![b'x'; total]);
            let sent = sent.min(total);
            let mut body = ChaosBody::empty();
            body.push(data.slice(..sent));
            body.pause(duration);
            body.push(data.slice(sent..));
            let mut resp = simple(StatusCode::OK, Bytes::new());
            *resp.body_mut() = body;
            resp
        }
        Fault::Drip {
            chunk,
            interval,
            total,
        } => {
            let data = Bytes::from(vec![b'x'; total]);
            let mut body = ChaosBody::empty();
            let mut start = 0;
            while start < total {
                if start > 0 {
                    body.pause(Some(interval));
                }
                let end = (start + chunk.max(1)).min(total);
                body.push(data.slice(start..end));
                start = end;
            }
            let mut resp = simple(StatusCode::OK, Bytes::new());
            *resp.body_mut() = body;
            resp
        }
        Fault::Echo => match &read.kept {
            Some(bytes) => simple(StatusCode::OK, bytes.clone()),
            None => simple(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("echo: body larger than {MAX_BODY} bytes\n"),
            ),
        },
        // `handle` answers these before any delivery.
        Fault::RefusedStream | Fault::GoAway => take_over(ctl, Action::Close).await,
    }
}
