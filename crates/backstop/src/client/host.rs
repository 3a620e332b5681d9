//! [`HostHeader`]: the `Host` header of a plain-HTTP/1 attempt, made once per authority.

use http::header::HOST;
use http::uri::Scheme;
use http::{HeaderValue, Request, Uri};

/// Writes into a request the `Host` header hyper-util would write (`host`, or `host:port` for
/// a port that is not the scheme's default), from a value made for the last authority called
/// rather than formatted again for every request.
///
/// hyper-util formats the header into a new string and a new `Bytes` for every HTTP/1 request
/// that has none: two small allocations made on the caller's thread and freed on the
/// connection's, and the formatting code, on the path of every call. Here the value is cloned
/// (a reference count). Only for `http` requests of a client that does not speak HTTP/2 with
/// prior knowledge, which always go over HTTP/1: an `https` request may be sent over HTTP/2,
/// where hyper-util writes no `Host` (the authority travels as `:authority`), so it is left to
/// hyper-util. A request that carries a `Host` already keeps it, as with hyper-util.
#[derive(Clone, Debug)]
pub(super) struct HostHeader {
    enabled: bool,
    /// The last authority written for, as spelt in its URI (a copy: the URI's own bytes hold
    /// its whole text, path and query included), and its value.
    last: Option<(Box<str>, HeaderValue)>,
}

impl HostHeader {
    /// Writes `Host` when `enabled` (the client does not speak HTTP/2 with prior knowledge).
    pub(super) fn new(enabled: bool) -> HostHeader {
        HostHeader {
            enabled,
            last: None,
        }
    }

    /// Writes the `Host` header into `req` if it is a plain `http` request without one.
    #[inline]
    pub(super) fn write<B>(&mut self, req: &mut Request<B>) {
        if !self.enabled || req.uri().scheme() != Some(&Scheme::HTTP) {
            return;
        }
        let Some(authority) = req.uri().authority() else {
            return;
        };
        let value = match &self.last {
            // Byte for byte: the value is the authority's own spelling.
            Some((last, value)) if **last == *authority.as_str() => value.clone(),
            _ => match host_value(req.uri()) {
                Some(value) => {
                    self.last = Some((authority.as_str().into(), value.clone()));
                    value
                }
                None => return,
            },
        };
        if let http::header::Entry::Vacant(vacant) = req.headers_mut().entry(HOST) {
            vacant.insert(value);
        }
    }
}

/// hyper-util's `Host` for the `http` URI `uri`: its host, and its port unless 80.
#[cold]
fn host_value(uri: &Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let value = match uri.port_u16() {
        Some(80) | None => host.to_owned(),
        Some(port) => format!("{host}:{port}"),
    };
    HeaderValue::try_from(value).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn host_of(host: &mut HostHeader, uri: &str) -> Option<String> {
        let mut req = Request::get(uri).body(()).unwrap();
        host.write(&mut req);
        let values: Vec<_> = req.headers().get_all(HOST).iter().collect();
        assert!(values.len() <= 1, "{values:?}");
        values.first().map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn the_value_is_hyper_utils_host_and_port_unless_the_default() {
        // In this order through one writer: the same authority twice (the kept value), then
        // others, each of which gets its own.
        let cases = [
            ("http://127.0.0.1:8080/a", "127.0.0.1:8080"),
            ("http://127.0.0.1:8080/b", "127.0.0.1:8080"),
            ("http://127.0.0.1:9090/", "127.0.0.1:9090"),
            ("http://example.com:80/", "example.com"),
            ("http://example.com/", "example.com"),
            ("http://[::1]:3000/", "[::1]:3000"),
            ("http://Example.COM:81/", "Example.COM:81"),
            ("http://user@example.com:81/", "example.com:81"),
        ];
        let mut host = HostHeader::new(true);
        for (uri, expected) in cases {
            assert_eq!(host_of(&mut host, uri).as_deref(), Some(expected), "{uri}");
        }
    }

    #[test]
    fn https_a_request_with_a_host_and_a_client_speaking_http2_are_left_alone() {
        let mut host = HostHeader::new(true);
        // HTTPS may go over HTTP/2, where hyper-util writes no Host: left to it.
        assert_eq!(host_of(&mut host, "https://127.0.0.1:8443/"), None);
        let mut req = Request::get("http://127.0.0.1:8080/").body(()).unwrap();
        req.headers_mut()
            .insert(HOST, HeaderValue::from_static("elsewhere"));
        host.write(&mut req);
        assert_eq!(req.headers().get_all(HOST).iter().count(), 1);
        assert_eq!(req.headers()[HOST], "elsewhere");
        // A relative URI has no authority: nothing to write.
        assert_eq!(host_of(&mut host, "/path"), None);
        let mut prior_knowledge = HostHeader::new(false);
        assert_eq!(
            host_of(&mut prior_knowledge, "http://127.0.0.1:8080/"),
            None
        );
    }

    /// What a plain-HTTP/1 server receives from the default client: one `Host`, the one
    /// hyper-util writes, whichever authority the pooled instance called before.
    #[tokio::test]
    async fn the_default_client_sends_one_host_header_per_request_the_authoritys() {
        async fn serve_heads(
            listener: TcpListener,
            heads: tokio::sync::mpsc::UnboundedSender<String>,
        ) {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let heads = heads.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head: Vec<u8> = buf.drain(..end + 4).collect();
                            let _ = heads.send(String::from_utf8_lossy(&head).into_owned());
                            if stream
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                });
            }
        }
        let (tx, mut heads) = tokio::sync::mpsc::unbounded_channel();
        let mut addrs = Vec::new();
        for _ in 0..2 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            tokio::spawn(serve_heads(listener, tx.clone()));
        }
        let client = crate::Client::new().unwrap();
        for addr in [addrs[0], addrs[0], addrs[1], addrs[0]] {
            let res = client.get(&format!("http://{addr}/x")).await.unwrap();
            assert_eq!(res.status(), 200);
            let head = heads.recv().await.unwrap().to_ascii_lowercase();
            let hosts: Vec<&str> = head.lines().filter(|l| l.starts_with("host:")).collect();
            assert_eq!(hosts, [format!("host: {addr}").as_str()], "{head}");
        }
    }
}
