//! [`TcpFramed`] and [`TcpLines`]: the ready adapter for raw TCP.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use backstop_classify::{BoxError, ConfigError, Error, Kind, Phase, ProtocolFailure};
use backstop_timeout::{ConnectTimeout, ConnectTimeoutLayer, TcpConnector};
use futures_util::{Sink, Stream};
use http::Uri;
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder, Framed, LinesCodec, LinesCodecError};
use tower_layer::Layer;
use tower_service::Service;

use crate::connector::Connector;

/// The default bound of a TCP connect.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default longest line [`TcpLines`] accepts: a peer cannot make us buffer without bound.
pub const DEFAULT_MAX_LINE_LENGTH: usize = 64 * 1024;

/// Newline-delimited UTF-8 messages over TCP: `String` in, `String` out (without the newline).
pub type TcpLines = TcpFramed<LinesCodec>;

/// Raw TCP framed by a tokio-util codec, connected by backstop-timeout's [`TcpConnector`]
/// (addresses raced happy-eyeballs style, each attempt bounded) under a
/// [`ConnectTimeoutLayer`].
///
/// Any codec whose decoder yields the same type its encoder takes works (e.g. a
/// length-delimited codec mapped to your message type); [`TcpLines`] is the ready one. Errors
/// are classified: connect failures in [`Phase::Connect`], read failures in
/// [`Phase::ReadBody`], write failures in [`Phase::Send`], a frame the codec rejects as
/// [`Kind::Protocol`]`(Malformed)`.
pub struct TcpFramed<K> {
    uri: Uri,
    connector: ConnectTimeout<TcpConnector>,
    codec: K,
}

impl<K: Clone> Clone for TcpFramed<K> {
    fn clone(&self) -> Self {
        TcpFramed {
            uri: self.uri.clone(),
            connector: self.connector.clone(),
            codec: self.codec.clone(),
        }
    }
}

impl<K> fmt::Debug for TcpFramed<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpFramed")
            .field("addr", &self.uri.authority())
            .finish_non_exhaustive()
    }
}

impl TcpFramed<LinesCodec> {
    /// Lines to `addr` (`host:port`), with a 10 s connect timeout and lines of at most 64 KiB.
    pub fn new(addr: impl AsRef<str>) -> Result<Self, ConfigError> {
        TcpFramed::with_codec(
            addr,
            LinesCodec::new_with_max_length(DEFAULT_MAX_LINE_LENGTH),
            DEFAULT_CONNECT_TIMEOUT,
        )
    }
}

impl<K> TcpFramed<K> {
    /// Frames with `codec` on connections to `addr` (`host:port`), each connect bounded by
    /// `connect_timeout` (1 ms to 10 minutes).
    pub fn with_codec(
        addr: impl AsRef<str>,
        codec: K,
        connect_timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let addr = addr.as_ref();
        // backstop-timeout's connector takes a URI; the scheme only picks a default port,
        // which we forbid relying on.
        let uri: Uri = format!("tcp://{addr}")
            .parse()
            .map_err(|_| ConfigError::new("addr", "must be host:port"))?;
        if uri.port_u16().is_none() || uri.host().is_none_or(str::is_empty) || uri.path() != "/" {
            return Err(ConfigError::new("addr", "must be host:port"));
        }
        let connector = ConnectTimeoutLayer::try_new(connect_timeout)
            .map_err(|e| e.within("tcp"))?
            .layer(TcpConnector::new());
        Ok(TcpFramed {
            uri,
            connector,
            codec,
        })
    }
}

impl<K, M> Connector for TcpFramed<K>
where
    K: Decoder<Item = M> + Encoder<M> + Clone + Send + Unpin + 'static,
    <K as Decoder>::Error: Into<BoxError>,
    <K as Encoder<M>>::Error: Into<BoxError>,
    M: Clone + Send + 'static,
{
    type Msg = M;
    type Conn = FramedConn<K>;

    fn connect(&mut self) -> impl Future<Output = Result<FramedConn<K>, Error>> + Send {
        let future = self.connector.call(self.uri.clone());
        let codec = self.codec.clone();
        async move {
            let io = future.await?;
            Ok(FramedConn {
                inner: Framed::new(io.into_inner(), codec),
            })
        }
    }
}

/// One framed TCP connection, with classified errors.
pub struct FramedConn<K> {
    inner: Framed<TcpStream, K>,
}

impl<K> fmt::Debug for FramedConn<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FramedConn")
            .field("stream", self.inner.get_ref())
            .finish_non_exhaustive()
    }
}

impl<K> FramedConn<K> {
    /// The TCP stream.
    pub fn get_ref(&self) -> &TcpStream {
        self.inner.get_ref()
    }
}

impl<K, M> Stream for FramedConn<K>
where
    K: Decoder<Item = M> + Unpin,
    K::Error: Into<BoxError>,
{
    type Item = Result<M, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map_err(|e| classify_codec(e.into(), Phase::ReadBody))
    }
}

impl<K, M> Sink<M> for FramedConn<K>
where
    K: Encoder<M> + Unpin,
    K::Error: Into<BoxError>,
{
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.inner)
            .poll_ready(cx)
            .map_err(|e| classify_codec(e.into(), Phase::Send))
    }

    fn start_send(mut self: Pin<&mut Self>, item: M) -> Result<(), Error> {
        Pin::new(&mut self.inner)
            .start_send(item)
            .map_err(|e| classify_codec(e.into(), Phase::Send))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.inner)
            .poll_flush(cx)
            .map_err(|e| classify_codec(e.into(), Phase::Send))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.inner)
            .poll_close(cx)
            .map_err(|e| classify_codec(e.into(), Phase::Send))
    }
}

/// I/O errors by their cause; a frame the codec rejects is malformed.
fn classify_codec(err: BoxError, phase: Phase) -> Error {
    let err = match err.downcast::<std::io::Error>() {
        Ok(io) => return Error::from_io(*io, phase),
        Err(err) => err,
    };
    match err.downcast::<LinesCodecError>() {
        Ok(lines) => match *lines {
            LinesCodecError::Io(io) => Error::from_io(io, phase),
            other => {
                Error::new(Kind::Protocol(ProtocolFailure::Malformed), phase).with_source(other)
            }
        },
        Err(err) => Error::classify(err, phase),
    }
}
