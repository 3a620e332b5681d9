//! [`Admin`]: the admin listener (loopback unless allowed otherwise) and its three routes.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use super::status::Status;
use crate::policy::ConfigError;
use crate::server::{IncomingBody, ServeConfig, Server};

/// Where the admin listener binds unless told otherwise: `127.0.0.1:9901` (Envoy's admin
/// port), reachable from this machine only.
pub const DEFAULT_ADMIN_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9901));

/// Connections the admin listener serves at once: a few people and a scraper, not traffic.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// The admin listener's settings, validated: where it binds. Build with [`Admin::builder`], then
/// [`listen`](Admin::listen) and serve a [`Status`] (see the [module docs](super)).
#[derive(Debug, Clone)]
pub struct Admin {
    bind: SocketAddr,
}

/// Builds an [`Admin`]: the address to bind, and whether it may be other than loopback.
#[derive(Debug, Clone)]
pub struct AdminBuilder {
    bind: SocketAddr,
    allow_non_loopback: bool,
}

impl Admin {
    /// A builder binding [`DEFAULT_ADMIN_ADDR`] (`127.0.0.1:9901`).
    pub fn builder() -> AdminBuilder {
        AdminBuilder {
            bind: DEFAULT_ADMIN_ADDR,
            allow_non_loopback: false,
        }
    }

    /// The address it will bind.
    pub fn addr(&self) -> SocketAddr {
        self.bind
    }

    /// Binds the listener (port 0: any free port, see [`AdminServer::local_addr`]).
    pub async fn listen(self) -> io::Result<AdminServer> {
        let config = ServeConfig::builder()
            .header_read_timeout(Duration::from_secs(5))
            .idle_timeout(Some(Duration::from_secs(30)))
            .drain_timeout(Duration::from_secs(1))
            .max_connections(MAX_ADMIN_CONNECTIONS)
            .build()
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        Ok(AdminServer {
            server: Server::bind(self.bind, config).await?,
        })
    }
}

impl AdminBuilder {
    /// The address to bind (default [`DEFAULT_ADMIN_ADDR`]). Anything but a loopback address
    /// (`127.0.0.0/8`, `::1`) is refused at [`build`](AdminBuilder::build) unless
    /// [`allow_non_loopback`](AdminBuilder::allow_non_loopback) is set.
    #[must_use]
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Allows an address other than loopback, e.g. `0.0.0.0` inside a container whose port
    /// only the cluster can reach. The page names your upstreams and their health: never put it
    /// on the public port.
    #[must_use]
    pub fn allow_non_loopback(mut self, allow: bool) -> Self {
        self.allow_non_loopback = allow;
        self
    }

    /// Checks the address: an error naming `bind` when it is not loopback and that was not
    /// allowed.
    pub fn build(self) -> Result<Admin, ConfigError> {
        if !self.bind.ip().is_loopback() && !self.allow_non_loopback {
            return Err(ConfigError::new(
                "bind",
                format!(
                    "must be a loopback address (127.0.0.0/8 or ::1) unless \
                     allow_non_loopback(true): the status page names every upstream and its \
                     health; got {}",
                    self.bind
                ),
            ));
        }
        Ok(Admin { bind: self.bind })
    }
}

/// A bound admin listener, ready to serve a [`Status`].
#[derive(Debug)]
pub struct AdminServer {
    server: Server,
}

impl AdminServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// Serves `status` until the process ends, or until this future is dropped (the listener
    /// closes and every connection with it).
    pub async fn serve(self, status: Status) -> io::Result<()> {
        self.serve_with_shutdown(status, std::future::pending())
            .await
    }

    /// Serves `status` until `signal` completes (then open connections get a second to
    /// finish), or until this future is dropped.
    pub async fn serve_with_shutdown(
        self,
        status: Status,
        signal: impl Future<Output = ()> + Send,
    ) -> io::Result<()> {
        let status = Arc::new(status);
        let service = tower::service_fn(move |req: Request<IncomingBody>| {
            let res = respond(&status, req.method(), req.uri().path());
            async move { Ok::<_, Infallible>(res) }
        });
        self.server
            .serve_with_shutdown(service, signal)
            .await
            .map(|_| ())
    }
}

/// `/status` (HTML), `/status.json`, `/` (a redirect to `/status`); anything else `404`. Only
/// `GET` and `HEAD`.
fn respond(status: &Status, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let known = matches!(path, "/" | "/status" | "/status.json");
    if !known {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: try /status or /status.json\n",
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut res = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    match path {
        "/status" => page(status.snapshot().to_html(), "text/html; charset=utf-8"),
        "/status.json" => page(status.snapshot().to_json(), "application/json"),
        _ => {
            let mut res = plain(StatusCode::FOUND, "see /status\n");
            res.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/status"));
            res
        }
    }
}

fn page(body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    guard(res)
}

fn plain(code: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = code;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    guard(res)
}

/// Never cached, never framed, never sniffed, and no script or outside resource: the page is
/// static HTML with inline styles.
fn guard(mut res: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let headers = res.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_the_default_and_anything_else_must_be_allowed() {
        assert_eq!(
            Admin::builder().build().map(|a| a.addr()),
            Ok(DEFAULT_ADMIN_ADDR)
        );
        let v6: SocketAddr = "[::1]:9901".parse().unwrap_or(DEFAULT_ADMIN_ADDR);
        assert!(Admin::builder().bind(v6).build().is_ok());
        for public in ["0.0.0.0:9901", "10.1.2.3:9901", "[::]:9901"] {
            let addr: SocketAddr = public.parse().unwrap_or(DEFAULT_ADMIN_ADDR);
            let err = Admin::builder().bind(addr).build().err();
            assert_eq!(
                err.as_ref().map(ConfigError::field),
                Some("bind"),
                "{public}"
            );
            let allowed = Admin::builder().bind(addr).allow_non_loopback(true).build();
            assert_eq!(allowed.map(|a| a.addr()), Ok(addr));
        }
    }

    #[test]
    fn three_routes_and_nothing_else() {
        let status = Status::new();
        let get = |path| respond(&status, &Method::GET, path);
        assert_eq!(get("/status").status(), StatusCode::OK);
        assert_eq!(
            get("/status").headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(
            get("/status.json").headers()[header::CONTENT_TYPE],
            "application/json"
        );
        assert_eq!(get("/").status(), StatusCode::FOUND);
        assert_eq!(get("/").headers()[header::LOCATION], "/status");
        assert_eq!(get("/metrics").status(), StatusCode::NOT_FOUND);
        assert_eq!(get("/status/").status(), StatusCode::NOT_FOUND);
        let post = respond(&status, &Method::POST, "/status");
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[header::ALLOW], "GET, HEAD");
    }
}
