//! A fault's URL / header encoding: [`Fault::to_path`], [`Fault::parse`] and the query-string
//! handling under them. Separate from the [`Fault`] type because the wire syntax (parameter
//! names, limits, percent-encoding) changes for reasons of its own, and its round-trip tests
//! belong with it.

use std::fmt::Write as _;
use std::time::Duration;

use super::{FAULT_NAMES, Fault, MAX_BODY, RetryAfter};

/// Longest duration (in milliseconds) accepted for a `ms` parameter: one day.
const MAX_MS: u64 = 24 * 60 * 60 * 1000;

impl Fault {
    /// The path and query selecting this fault, e.g.
    /// `/fault/status?code=503&retry_after=2`. Round-trips through the
    /// server's parser.
    pub fn to_path(&self) -> String {
        let mut s = format!("/fault/{}", self.name());
        let mut params: Vec<(&str, String)> = Vec::new();
        let ms = |d: &Duration| d.as_millis().to_string();
        match self {
            Fault::Status {
                code,
                retry_after,
                body_len,
            } => {
                params.push(("code", code.to_string()));
                match retry_after {
                    Some(RetryAfter::Seconds(n)) => params.push(("retry_after", n.to_string())),
                    Some(RetryAfter::DateIn(n)) => {
                        params.push(("retry_after_date", n.to_string()));
                    }
                    Some(RetryAfter::Raw(r)) => params.push(("retry_after_raw", percent_encode(r))),
                    None => {}
                }
                if let Some(b) = body_len {
                    params.push(("body", b.to_string()));
                }
            }
            Fault::StallHeaders { duration } => {
                if let Some(d) = duration {
                    params.push(("ms", ms(d)));
                }
            }
            Fault::StallBody {
                sent,
                total,
                duration,
            } => {
                params.push(("bytes", sent.to_string()));
                params.push(("total", total.to_string()));
                if let Some(d) = duration {
                    params.push(("ms", ms(d)));
                }
            }
            Fault::Drip {
                chunk,
                interval,
                total,
            } => {
                params.push(("chunk", chunk.to_string()));
                params.push(("ms", ms(interval)));
                params.push(("total", total.to_string()));
            }
            Fault::Ok
            | Fault::ResetAfterRead
            | Fault::CloseAfterRead
            | Fault::Garbage
            | Fault::Echo
            | Fault::RefusedStream
            | Fault::GoAway
            | Fault::GoAwayGraceful => {}
        }
        for (i, (k, v)) in params.iter().enumerate() {
            s.push(if i == 0 { '?' } else { '&' });
            let _ = write!(s, "{k}={v}");
        }
        s
    }

    /// Parses a fault from its name and `key=value` parameters (already
    /// percent-decoded). Later duplicates win. Errors are human-readable and
    /// end up in a `400 Bad Request` body.
    pub fn parse(name: &str, params: &[(String, String)]) -> Result<Fault, String> {
        let p = Params { name, params };
        let fault = match name {
            "ok" => {
                p.only(&[])?;
                Fault::Ok
            }
            "status" => {
                p.only(&[
                    "code",
                    "retry_after",
                    "retry_after_date",
                    "retry_after_raw",
                    "body",
                ])?;
                let code = p.num("code")?.unwrap_or(503);
                if !(200..=999).contains(&code) {
                    return Err(format!("status: code must be in 200..=999, got {code}"));
                }
                let code = u16::try_from(code).map_err(|_| "status: bad code".to_string())?;
                let mut retry_after = None;
                let mut forms = 0;
                if let Some(n) = p.num("retry_after")? {
                    retry_after = Some(RetryAfter::Seconds(n));
                    forms += 1;
                }
                if let Some(n) = p.num("retry_after_date")? {
                    retry_after = Some(RetryAfter::DateIn(n));
                    forms += 1;
                }
                if let Some(raw) = p.get("retry_after_raw") {
                    if http::HeaderValue::from_str(raw).is_err() {
                        return Err("status: retry_after_raw is not a valid header value".into());
                    }
                    retry_after = Some(RetryAfter::Raw(raw.to_string()));
                    forms += 1;
                }
                if forms > 1 {
                    return Err(
                        "status: give at most one of retry_after, retry_after_date, retry_after_raw"
                            .into(),
                    );
                }
                let body_len = p.size("body")?;
                Fault::Status {
                    code,
                    retry_after,
                    body_len,
                }
            }
            "reset-after-read" => {
                p.only(&[])?;
                Fault::ResetAfterRead
            }
            "close-after-read" => {
                p.only(&[])?;
                Fault::CloseAfterRead
            }
            "stall-headers" => {
                p.only(&["ms"])?;
                Fault::StallHeaders {
                    duration: p.ms("ms")?,
                }
            }
            "stall-body" => {
                p.only(&["bytes", "total", "ms"])?;
                let total = p.size("total")?.unwrap_or(1024);
                let sent = p.size("bytes")?.unwrap_or(16).min(total);
                Fault::StallBody {
                    sent,
                    total,
                    duration: p.ms("ms")?,
                }
            }
            "drip" => {
                p.only(&["chunk", "ms", "total"])?;
                let chunk = p.size("chunk")?.unwrap_or(1);
                if chunk == 0 {
                    return Err("drip: chunk must be at least 1".into());
                }
                Fault::Drip {
                    chunk,
                    interval: p.ms("ms")?.unwrap_or(Duration::from_millis(100)),
                    total: p.size("total")?.unwrap_or(10),
                }
            }
            "garbage" => {
                p.only(&[])?;
                Fault::Garbage
            }
            "echo" => {
                p.only(&[])?;
                Fault::Echo
            }
            "refused-stream" => {
                p.only(&[])?;
                Fault::RefusedStream
            }
            "goaway" => {
                p.only(&[])?;
                Fault::GoAway
            }
            "goaway-graceful" => {
                p.only(&[])?;
                Fault::GoAwayGraceful
            }
            other => {
                return Err(format!(
                    "unknown fault {other:?}; known faults: {}",
                    FAULT_NAMES.join(", ")
                ));
            }
        };
        Ok(fault)
    }
}

struct Params<'a> {
    name: &'a str,
    params: &'a [(String, String)],
}

impl Params<'_> {
    fn only(&self, allowed: &[&str]) -> Result<(), String> {
        for (k, _) in self.params {
            if !allowed.contains(&k.as_str()) {
                return Err(if allowed.is_empty() {
                    format!("{}: takes no parameters, got {k:?}", self.name)
                } else {
                    format!(
                        "{}: unknown parameter {k:?}; allowed: {}",
                        self.name,
                        allowed.join(", ")
                    )
                });
            }
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn num(&self, key: &str) -> Result<Option<u64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                format!(
                    "{}: parameter {key} must be a non-negative integer, got {v:?}",
                    self.name
                )
            }),
        }
    }

    fn size(&self, key: &str) -> Result<Option<usize>, String> {
        match self.num(key)? {
            None => Ok(None),
            Some(n) if n <= MAX_BODY as u64 => Ok(Some(n as usize)),
            Some(n) => Err(format!(
                "{}: parameter {key}={n} exceeds the limit of {MAX_BODY} bytes",
                self.name
            )),
        }
    }

    fn ms(&self, key: &str) -> Result<Option<Duration>, String> {
        match self.num(key)? {
            None => Ok(None),
            Some(n) if n <= MAX_MS => Ok(Some(Duration::from_millis(n))),
            Some(n) => Err(format!(
                "{}: parameter {key}={n} exceeds the limit of {MAX_MS} ms",
                self.name
            )),
        }
    }
}

/// Splits a query string (`a=1&b=x%20y`) into decoded `(key, value)` pairs.
pub(crate) fn parse_query(q: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in q.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in {s:?}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("parameter {s:?} is not UTF-8"))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn round_trip(f: Fault) {
        let path = f.to_path();
        let (name_q, _) = (path.trim_start_matches("/fault/"), ());
        let (name, q) = name_q.split_once('?').unwrap_or((name_q, ""));
        let parsed = Fault::parse(name, &parse_query(q).unwrap()).unwrap();
        assert_eq!(parsed, f, "{path}");
    }

    #[test]
    fn round_trips() {
        round_trip(Fault::Ok);
        round_trip(Fault::status(429));
        round_trip(Fault::status_retry_after(503, RetryAfter::Seconds(3)));
        round_trip(Fault::status_retry_after(503, RetryAfter::DateIn(3)));
        round_trip(Fault::status_retry_after(
            503,
            RetryAfter::Raw("soon, maybe & later".into()),
        ));
        round_trip(Fault::StallBody {
            sent: 3,
            total: 10,
            duration: Some(Duration::from_millis(5)),
        });
        round_trip(Fault::Drip {
            chunk: 2,
            interval: Duration::from_millis(7),
            total: 9,
        });
        round_trip(Fault::StallHeaders { duration: None });
        round_trip(Fault::Garbage);
        round_trip(Fault::RefusedStream);
        round_trip(Fault::GoAway);
        round_trip(Fault::GoAwayGraceful);
        assert!(Fault::parse("goaway", &[("ms".into(), "1".into())]).is_err());
    }

    #[test]
    fn rejects_bad_input() {
        let q = |s: &str| parse_query(s).unwrap();
        assert!(Fault::parse("status", &q("code=abc")).is_err());
        assert!(Fault::parse("status", &q("code=100")).is_err());
        assert!(Fault::parse("status", &q("nope=1")).is_err());
        assert!(Fault::parse("drip", &q("chunk=0")).is_err());
        assert!(Fault::parse("drip", &q("total=999999999999")).is_err());
        assert!(Fault::parse("what", &[]).is_err());
        assert!(parse_query("a=%zz").is_err());
        assert!(parse_query("a=%").is_err());
        assert!(Fault::parse("status", &q("retry_after_raw=%0A")).is_err());
    }
}
