//! [`WebSocket`]: the ready adapter for WebSocket (ws:// and wss://), behind the `websocket`
//! feature.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use backstop_classify::{ConfigError, Error, Kind, Phase, ProtocolFailure, Timer};
use futures_util::{Sink, Stream};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::connector::Connector;
use crate::tcp::DEFAULT_CONNECT_TIMEOUT;

/// Connects to a WebSocket URL: TCP, TLS for `wss://`, and the HTTP upgrade, all bounded by one
/// connect timeout.
///
/// TLS goes through rustls with the ring provider named explicitly and the webpki roots (or the
/// [`ClientConfig`](rustls::ClientConfig) you give), never rustls' process-wide default, which
/// panics when two providers are compiled in. Messages are tungstenite's [`Message`]; pings from
/// the peer are answered by tungstenite itself. Pair with
/// [`Heartbeat::websocket`](crate::Heartbeat::websocket) to detect a silent peer.
#[derive(Clone)]
pub struct WebSocket {
    url: String,
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
}

impl fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("url", &self.url)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl WebSocket {
    /// Connects to `url` (`ws://` or `wss://`) with a 10 s connect timeout and the default TLS
    /// configuration.
    pub fn new(url: impl Into<String>) -> Result<Self, ConfigError> {
        let url = url.into();
        let uri: http::Uri = url
            .parse()
            .map_err(|_| ConfigError::new("url", "must be a ws:// or wss:// URL"))?;
        if !matches!(uri.scheme_str(), Some("ws" | "wss")) || uri.host().is_none() {
            return Err(ConfigError::new("url", "must be a ws:// or wss:// URL"));
        }
        Ok(WebSocket {
            url,
            tls: Arc::new(default_tls()?),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        })
    }

    /// Bounds TCP connect, TLS handshake and upgrade together (1 ms to 10 minutes).
    pub fn connect_timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        self.connect_timeout = ConfigError::check_between(
            "connect_timeout",
            timeout,
            backstop_timeout::MIN_TIMEOUT,
            backstop_timeout::MAX_CONNECT_TIMEOUT,
        )?;
        Ok(self)
    }

    /// Uses `config` for `wss://` (your roots, client certificates, provider).
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = config;
        self
    }
}

/// webpki roots, safe default protocol versions and ring, named explicitly.
fn default_tls() -> Result<rustls::ClientConfig, ConfigError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| {
        ConfigError::new(
            "tls",
            format!("ring supports no safe protocol version: {e}"),
        )
    })?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

impl Connector for WebSocket {
    type Msg = Message;
    type Conn = WsConn;

    fn connect(&mut self) -> impl Future<Output = Result<WsConn, Error>> + Send {
        let url = self.url.clone();
        let tls = tokio_tungstenite::Connector::Rustls(Arc::clone(&self.tls));
        let bound = self.connect_timeout;
        async move {
            let connect =
                tokio_tungstenite::connect_async_tls_with_config(url, None, true, Some(tls));
            match tokio::time::timeout(bound, connect).await {
                Ok(Ok((inner, _response))) => Ok(WsConn { inner }),
                Ok(Err(err)) => Err(classify_ws(err, Phase::Connect)),
                Err(_) => Err(Error::new(Kind::TimedOut(Timer::Connect), Phase::Connect)),
            }
        }
    }
}

/// One WebSocket connection, with classified errors.
pub struct WsConn {
    inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl fmt::Debug for WsConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsConn").finish_non_exhaustive()
    }
}

impl WsConn {
    /// The tungstenite stream.
    pub fn get_ref(&self) -> &WebSocketStream<MaybeTlsStream<TcpStream>> {
        &self.inner
    }
}

impl Stream for WsConn {
    type Item = Result<Message, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|item| item.map(|r| r.map_err(|e| classify_ws(e, Phase::ReadBody))))
    }
}

impl Sink<Message> for WsConn {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.inner)
            .poll_ready(cx)
            .map_err(|e| classify_ws(e, Phase::Send))
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        Pin::new(&mut self.inner)
            .start_send(item)
            .map_err(|e| classify_ws(e, Phase::Send))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.inner)
            .poll_flush(cx)
            .map_err(|e| classify_ws(e, Phase::Send))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.inner)
            .poll_close(cx)
            .map_err(|e| classify_ws(e, Phase::Send))
    }
}

fn classify_ws(err: tungstenite::Error, phase: Phase) -> Error {
    use tungstenite::Error as E;
    match err {
        E::Io(io) if phase == Phase::Connect => Error::from_io(io, phase),
        E::Io(io) => {
            // On an established connection the caller knows the phase; the I/O kind alone would
            // guess from HTTP (a reset "while awaiting headers") on a WebSocket long past its
            // handshake.
            let err = Error::from_io(io, phase);
            let failure = err.failure().with_phase(phase);
            err.with_failure(failure)
        }
        E::ConnectionClosed | E::AlreadyClosed => Error::new(Kind::Closed, phase).with_source(err),
        E::Http(ref response) => {
            // The server refused the upgrade with a status: it answered, so it is up.
            Error::new(Kind::Status(response.status()), Phase::AwaitHeaders).with_source(err)
        }
        E::Protocol(_) | E::Capacity(_) | E::Utf8(_) | E::AttackAttempt => {
            Error::new(Kind::Protocol(ProtocolFailure::Malformed), phase).with_source(err)
        }
        E::Tls(_) => Error::classify(err, Phase::Tls),
        other => Error::classify(other, phase),
    }
}
