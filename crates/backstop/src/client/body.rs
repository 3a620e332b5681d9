//! [`RequestBody`] and [`ResponseBody`]: what a [`Client`](crate::Client) sends and returns.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use backstop_classify::{BoxError, Error};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Full};

/// The response body of a [`Client`](crate::Client): the bytes, with every error classified.
pub type ResponseBody = BoxBody<Bytes, Error>;

/// The request body a [`Client`](crate::Client) sends: bytes held in memory, or a stream.
///
/// Bytes in memory ([`Full`], [`Bytes`], made with `.into()` or [`RequestBody::full`]) cost
/// nothing beyond themselves: they are not boxed. A stream ([`RequestBody::stream`]) is boxed
/// once and sent as it is read; a retry replays the bytes the retry layer kept of it (up to the
/// policy's `replay_limit`, see [`crate::RetryPolicy`]), so a stream larger than that is sent
/// once and not retried after any of it was sent.
///
/// ```no_run
/// use backstop::{Client, RequestBody};
/// use bytes::Bytes;
///
/// # async fn demo(client: Client, upload: axum::body::Body) -> Result<(), backstop::Error> {
/// // In memory: a `Full<Bytes>` or `Bytes` body is sent as it is.
/// let req = http::Request::put("http://127.0.0.1:3000/small")
///     .body(Bytes::from_static(b"{}"))
///     .map_err(|e| backstop::Error::new(backstop::Kind::Other, backstop::Phase::Local).with_source(e))?;
/// client.send(req).await?;
///
/// // Streamed: here, the body an axum handler received, passed on as it arrives.
/// let req = http::Request::put("http://127.0.0.1:3000/large")
///     .body(RequestBody::stream(upload))
///     .map_err(|e| backstop::Error::new(backstop::Kind::Other, backstop::Phase::Local).with_source(e))?;
/// client.send(req).await?;
/// # Ok(())
/// # }
/// ```
pub struct RequestBody {
    kind: BodyKind,
}

enum BodyKind {
    // The bytes not yet sent, empty once sent. Not `Full<Bytes>`: its `Option<Bytes>` takes the
    // niche this enum's tag now uses, so the body (in every request, moved through every layer)
    // is 32 bytes rather than 40, and a `Request` of it 256 rather than 264.
    Full(Bytes),
    Stream(UnsyncBoxBody<Bytes, BoxError>),
}

impl RequestBody {
    /// A body of `bytes`, held in memory.
    pub fn full(bytes: impl Into<Bytes>) -> RequestBody {
        RequestBody {
            kind: BodyKind::Full(bytes.into()),
        }
    }

    /// An empty body.
    pub fn empty() -> RequestBody {
        RequestBody::full(Bytes::new())
    }

    /// A streamed body: sent as `body` yields it. Its `size_hint` is passed on, so one that
    /// declares more bytes than the retry's `replay_limit` is never buffered for replay.
    pub fn stream<B>(body: B) -> RequestBody
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        RequestBody {
            kind: BodyKind::Stream(body.map_err(Into::into).boxed_unsync()),
        }
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            BodyKind::Full(_) => "full",
            BodyKind::Stream(_) => "stream",
        };
        f.debug_struct("RequestBody")
            .field("kind", &kind)
            .field("size_hint", &self.size_hint())
            .finish()
    }
}

impl Default for RequestBody {
    fn default() -> RequestBody {
        RequestBody::empty()
    }
}

impl From<Full<Bytes>> for RequestBody {
    fn from(mut body: Full<Bytes>) -> RequestBody {
        // `Full` answers its one frame at once, without a waker: this takes its bytes out.
        let mut cx = Context::from_waker(Waker::noop());
        let bytes = match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
            Poll::Ready(Some(Err(never))) => match never {},
            Poll::Ready(None) | Poll::Pending => Bytes::new(),
        };
        RequestBody::full(bytes)
    }
}

impl From<Bytes> for RequestBody {
    fn from(bytes: Bytes) -> RequestBody {
        RequestBody::full(bytes)
    }
}

impl From<http_body_util::Empty<Bytes>> for RequestBody {
    fn from(_: http_body_util::Empty<Bytes>) -> RequestBody {
        RequestBody::empty()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // The stream is boxed, so `Unpin`.
        match &mut self.get_mut().kind {
            BodyKind::Full(bytes) if bytes.is_empty() => Poll::Ready(None),
            BodyKind::Full(bytes) => Poll::Ready(Some(Ok(Frame::data(std::mem::take(bytes))))),
            BodyKind::Stream(body) => Pin::new(body).poll_frame(cx),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full(bytes) => bytes.is_empty(),
            BodyKind::Stream(body) => body.is_end_stream(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full(bytes) => SizeHint::with_exact(bytes.len() as u64),
            BodyKind::Stream(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_request_of_bytes_in_memory_stays_within_memcpys_unrolled_copy() {
        // Every layer above retry moves this request; past 256 bytes libc's memcpy loops.
        assert_eq!(std::mem::size_of::<RequestBody>(), 32);
        assert_eq!(std::mem::size_of::<http::Request<RequestBody>>(), 256);
    }

    #[tokio::test]
    async fn bytes_in_memory_are_one_frame_then_the_end_whichever_way_they_came() {
        for body in [
            RequestBody::full(Bytes::from_static(b"abc")),
            RequestBody::from(Full::new(Bytes::from_static(b"abc"))),
            RequestBody::from(Bytes::from_static(b"abc")),
        ] {
            assert!(!body.is_end_stream());
            assert_eq!(body.size_hint().exact(), Some(3));
            let mut body = std::pin::pin!(body);
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"abc"));
            assert!(body.is_end_stream());
            assert_eq!(body.size_hint().exact(), Some(0));
            assert!(body.frame().await.is_none());
        }
        for body in [
            RequestBody::empty(),
            RequestBody::from(Full::new(Bytes::new())),
            RequestBody::from(http_body_util::Empty::<Bytes>::new()),
        ] {
            assert!(body.is_end_stream());
            assert_eq!(body.size_hint().exact(), Some(0));
            assert!(std::pin::pin!(body).frame().await.is_none());
        }
    }
}
