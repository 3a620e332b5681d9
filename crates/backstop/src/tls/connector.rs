//! [`HttpsConnector`]: TLS over a TCP connector, with its progress in its future's type.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use backstop_classify::{BoxError, Phase};
use backstop_timeout::{ConnectProgress, PhaseStamps};
use http::Uri;
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tower::Service;

use super::stream::MaybeTls;

/// Connects `https` URIs with TLS over the TCP connector it wraps, and passes `http` URIs
/// through to it (as hyper-rustls' `HttpsConnector` with `https_or_http()`).
///
/// The server name is the URI's host (an IPv6 literal without its brackets); the ALPN
/// protocols are the configuration's, and a connection whose server picked `h2` says so
/// (`Connected::negotiated_h2`). Its future tells the phase ([`ConnectProgress`]): the TCP
/// connector's until the TCP connection is up, then [`Phase::Tls`].
#[derive(Clone)]
pub(crate) struct HttpsConnector<C> {
    tcp: C,
    tls: TlsConnector,
}

impl<C> HttpsConnector<C> {
    /// Wraps `tcp`; `config` is taken as it is (its ALPN list checked by the caller).
    pub(crate) fn new(tcp: C, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        HttpsConnector {
            tcp,
            tls: TlsConnector::from(config),
        }
    }
}

impl<C> std::fmt::Debug for HttpsConnector<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsConnector").finish_non_exhaustive()
    }
}

/// A URI this connector cannot connect to.
#[derive(Debug)]
struct BadDestination(String);

impl std::fmt::Display for BadDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadDestination {}

fn refuse(why: String) -> BoxError {
    Box::new(io::Error::other(BadDestination(why)))
}

/// The TLS server name of `dst`: its host, an IPv6 literal without its brackets.
fn server_name(dst: &Uri) -> Result<ServerName<'static>, BoxError> {
    let host = dst.host().unwrap_or_default();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_owned()).map_err(|e| Box::new(e) as BoxError)
}

impl<C> Service<Uri> for HttpsConnector<C>
where
    C: Service<Uri>,
    C::Response: hyper::rt::Read + hyper::rt::Write + Connection + Unpin,
    C::Error: Into<BoxError>,
    C::Future: ConnectProgress + Unpin,
{
    type Response = MaybeTls<C::Response>;
    type Error = BoxError;
    type Future = HttpsConnecting<C::Future, C::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let tls = match dst.scheme() {
            Some(scheme) if *scheme == http::uri::Scheme::HTTP => None,
            Some(scheme) if *scheme == http::uri::Scheme::HTTPS => match server_name(&dst) {
                Ok(name) => Some((self.tls.clone(), name)),
                Err(err) => return HttpsConnecting::failed(err),
            },
            Some(scheme) => {
                return HttpsConnecting::failed(refuse(format!("unsupported scheme {scheme}")));
            }
            None => return HttpsConnecting::failed(refuse("missing scheme".to_owned())),
        };
        HttpsConnecting {
            state: State::Tcp {
                tcp: self.tcp.call(dst),
                tls,
            },
        }
    }
}

/// The future of [`HttpsConnector`].
pub(crate) struct HttpsConnecting<F, T> {
    state: State<F, T>,
}

enum State<F, T> {
    Tcp {
        tcp: F,
        tls: Option<(TlsConnector, ServerName<'static>)>,
    },
    // Boxed: a TLS client connection is large, and this future is moved around until polled.
    Handshake {
        handshake: Pin<Box<tokio_rustls::Connect<TokioIo<T>>>>,
        stamps: PhaseStamps,
    },
    Failed(Option<BoxError>),
    Done {
        stamps: PhaseStamps,
        /// The phase the connect was in when it ended.
        phase: Phase,
    },
}

impl<F, T> HttpsConnecting<F, T> {
    fn failed(err: BoxError) -> Self {
        HttpsConnecting {
            state: State::Failed(Some(err)),
        }
    }
}

impl<F, T, E> Future for HttpsConnecting<F, T>
where
    F: Future<Output = Result<T, E>> + ConnectProgress + Unpin,
    E: Into<BoxError>,
    T: hyper::rt::Read + hyper::rt::Write + Connection + Unpin,
{
    type Output = Result<MaybeTls<T>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin` (the TCP future by bound, the handshake boxed).
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Tcp { tcp, tls } => {
                    let io = match Pin::new(&mut *tcp).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(io) => io,
                    };
                    let mut stamps = tcp.stamps();
                    if io.is_ok() {
                        // A TCP connector that does not stamp its end: it ended now.
                        stamps.connected.get_or_insert_with(Instant::now);
                    }
                    let phase = tcp.phase();
                    let tls = tls.take();
                    this.state = State::Done { stamps, phase };
                    let io = io.map_err(Into::into)?;
                    let Some((connector, name)) = tls else {
                        return Poll::Ready(Ok(MaybeTls::Plain(io)));
                    };
                    this.state = State::Handshake {
                        handshake: Box::pin(connector.connect(name, TokioIo::new(io))),
                        stamps,
                    };
                }
                State::Handshake { handshake, stamps } => {
                    let out = match handshake.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(out) => out,
                    };
                    this.state = State::Done {
                        stamps: *stamps,
                        phase: Phase::Tls,
                    };
                    return Poll::Ready(match out {
                        Ok(stream) => Ok(MaybeTls::Tls(TokioIo::new(stream))),
                        Err(err) => Err(Box::new(io::Error::other(err))),
                    });
                }
                State::Failed(err) => {
                    let err = err
                        .take()
                        .unwrap_or_else(|| refuse("connect polled after it failed".to_owned()));
                    return Poll::Ready(Err(err));
                }
                State::Done { .. } => {
                    return Poll::Ready(Err(refuse(
                        "connect polled after it completed".to_owned(),
                    )));
                }
            }
        }
    }
}

impl<F: ConnectProgress, T> ConnectProgress for HttpsConnecting<F, T> {
    fn phase(&self) -> Phase {
        match &self.state {
            State::Tcp { tcp, .. } => tcp.phase(),
            State::Handshake { .. } => Phase::Tls,
            State::Done { phase, .. } => *phase,
            State::Failed(_) => Phase::Connect,
        }
    }

    fn stamps(&self) -> PhaseStamps {
        match &self.state {
            State::Tcp { tcp, .. } => tcp.stamps(),
            State::Handshake { stamps, .. } | State::Done { stamps, .. } => *stamps,
            State::Failed(_) => PhaseStamps::default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use backstop_timeout::TcpConnector;
    use tower::ServiceExt;

    use super::*;

    fn connector() -> HttpsConnector<TcpConnector> {
        HttpsConnector::new(TcpConnector::new(), Arc::new(crate::tls::test_config()))
    }

    #[test]
    fn the_server_name_is_the_host_an_ipv6_literal_without_brackets() {
        let name = server_name(&"https://[::1]:8443/".parse().unwrap()).unwrap();
        assert!(matches!(name, ServerName::IpAddress(_)), "{name:?}");
        let name = server_name(&"https://example.com/".parse().unwrap()).unwrap();
        assert_eq!(name.to_str(), "example.com");
    }

    #[tokio::test]
    async fn a_uri_it_cannot_connect_fails_as_an_error_not_a_panic() {
        for (uri, why) in [
            ("ftp://example.com/", "unsupported scheme ftp"),
            ("/no/scheme", "missing scheme"),
        ] {
            let connecting = connector().oneshot(uri.parse().unwrap());
            let Err(err) = connecting.await else {
                panic!("{uri} connected");
            };
            assert_eq!(err.to_string(), why, "{uri}");
        }
    }
}
