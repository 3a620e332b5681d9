//! [`RequestBody`] and [`ResponseBody`]: what a [`Client`](crate::Client) sends and returns.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use backstop_classify::{BoxError, Error, Phase};
use backstop_deadline::DeadlineBody;
use backstop_retry::{BufferedReplay, NotReplayable, ReplayHandle, ReplayStrategy};
use backstop_timeout::IdleBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

/// The response body of a [`Client`](crate::Client): the bytes, with every error classified.
///
/// What the client's own stack returns is kept as it is (not boxed: no allocation per response,
/// no virtual call per frame); [`ResponseBody::new`] wraps any other body (boxed), for a stand-in
/// of the client in tests or a service that answers in its place. It is `Send`, `Sync` and
/// `Unpin`, so [`BodyExt`]'s methods (`collect`, `frame`) work on it as they are.
///
/// ```
/// use backstop::ResponseBody;
/// use http_body_util::{BodyExt, Full};
///
/// # async fn demo() -> Result<(), backstop::Error> {
/// let body = ResponseBody::new(Full::new(bytes::Bytes::from_static(b"ok")));
/// assert_eq!(body.collect().await?.to_bytes(), "ok");
/// # Ok(())
/// # }
/// ```
pub struct ResponseBody {
    kind: ResponseKind,
}

/// The body the client's stack returns: hyper's, bounded by the idle timeout (its errors
/// classified there).
pub(super) type AttemptBody = IdleBody<Incoming>;

/// The body of a response of the client's own stack: an [`AttemptBody`] bounded by the call's
/// deadline (added by the client's `Call`, which applies the deadline's rules itself).
pub(super) type StackBody = DeadlineBody<AttemptBody>;

enum ResponseKind {
    Stack(StackBody),
    Boxed(BoxBody<Bytes, Error>),
}

impl ResponseBody {
    /// A response body of `body`, boxed: its errors become [`Error`]s (one that is an [`Error`]
    /// already is kept as it is, see [`Error::classify`]). A body boxed already
    /// (`BoxBody<Bytes, Error>`) converts with `From`, without a second box.
    pub fn new<B>(body: B) -> ResponseBody
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        ResponseBody::from(
            body.map_err(|err| Error::classify(err, Phase::ReadBody))
                .boxed(),
        )
    }

    /// The response the client's stack returned, its body unboxed and bounded by `deadline`
    /// (the instant it must end by, if any).
    #[inline]
    pub(super) fn of_stack(
        res: http::Response<AttemptBody>,
        deadline: Option<tokio::time::Instant>,
    ) -> http::Response<ResponseBody> {
        res.map(|body| ResponseBody {
            kind: ResponseKind::Stack(DeadlineBody::new(body, deadline)),
        })
    }
}

impl From<BoxBody<Bytes, Error>> for ResponseBody {
    fn from(body: BoxBody<Bytes, Error>) -> ResponseBody {
        ResponseBody {
            kind: ResponseKind::Boxed(body),
        }
    }
}

impl Default for ResponseBody {
    /// An empty body.
    fn default() -> ResponseBody {
        ResponseBody::from(BoxBody::default())
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            ResponseKind::Stack(_) => "stack",
            ResponseKind::Boxed(_) => "boxed",
        };
        f.debug_struct("ResponseBody")
            .field("kind", &kind)
            .field("size_hint", &self.size_hint())
            .finish()
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        // Both are `Unpin`: hyper's body is, each wrapper is when its body is, a box is.
        match &mut self.get_mut().kind {
            ResponseKind::Stack(body) => Pin::new(body).poll_frame(cx),
            ResponseKind::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResponseKind::Stack(body) => body.is_end_stream(),
            ResponseKind::Boxed(body) => body.is_end_stream(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResponseKind::Stack(body) => body.size_hint(),
            ResponseKind::Boxed(body) => body.size_hint(),
        }
    }
}

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

// === impl RequestReplay ===

/// How the client's retry layer sends a [`RequestBody`] again, so that the layers below it (and
/// hyper, which moves the request about fourteen times) get a `Request<RequestBody>` of 256
/// bytes rather than one of `ReplayBody<RequestBody>`, a word larger and past libc's unrolled
/// copy.
///
/// Bytes in memory within the replay limit replay as a clone of themselves: no shared slot, no
/// lock, no allocation, and always replayable (as the buffered replay would find them, since it
/// keeps them whole). Anything else — a stream, bytes over the limit or under a zero limit, which
/// are replayable only while no attempt read them — goes through the retry layer's
/// [`BufferedReplay`] as before, each attempt's body boxed into the stream variant (a stream is
/// boxed once already).
pub(crate) struct RequestReplay;

/// What [`RequestReplay`] keeps of a body between attempts.
pub(crate) enum KeptBody {
    /// Bytes in memory within the replay limit (or none): each attempt sends a clone.
    Bytes(Bytes),
    /// Shared between attempts by the buffered replay.
    Buffered(ReplayHandle<RequestBody>),
}

impl ReplayStrategy<RequestBody> for RequestReplay {
    type Body = RequestBody;
    type Kept = KeptBody;

    // Inlined into the retry layer's call, where most requests (GET, HEAD, DELETE) come with no
    // body: the empty one is passed on, and an empty one kept, without a clone or a drop.
    #[inline(always)]
    fn keep(body: RequestBody, limit: usize) -> (RequestBody, KeptBody) {
        match body.kind {
            BodyKind::Full(bytes) if bytes.is_empty() => {
                (RequestBody::full(bytes), KeptBody::Bytes(Bytes::new()))
            }
            BodyKind::Full(bytes) if bytes.len() <= limit => {
                (RequestBody::full(bytes.clone()), KeptBody::Bytes(bytes))
            }
            kind => buffered(RequestBody { kind }, limit),
        }
    }

    #[inline]
    fn once(body: RequestBody) -> RequestBody {
        match body.kind {
            // Bytes in memory never fail: the buffered replay would pass them on untouched.
            BodyKind::Full(bytes) => RequestBody::full(bytes),
            // Wrapped as before, so that a failing stream's error reads the same (`Other`, while
            // sending) to the layers below.
            kind => RequestBody::stream(BufferedReplay::once(RequestBody { kind })),
        }
    }

    #[inline]
    fn replay(kept: &KeptBody) -> Result<RequestBody, NotReplayable> {
        match kept {
            KeptBody::Bytes(bytes) => Ok(RequestBody::full(bytes.clone())),
            KeptBody::Buffered(handle) => BufferedReplay::replay(handle).map(RequestBody::stream),
        }
    }

    #[inline]
    fn can_replay(kept: &KeptBody) -> Result<(), NotReplayable> {
        match kept {
            KeptBody::Bytes(_) => Ok(()),
            KeptBody::Buffered(handle) => {
                <BufferedReplay as ReplayStrategy<RequestBody>>::can_replay(handle)
            }
        }
    }
}

/// A body the buffered replay shares between attempts; out of line, off the in-memory path.
#[inline(never)]
fn buffered(body: RequestBody, limit: usize) -> (RequestBody, KeptBody) {
    if body.is_end_stream() {
        // As the buffered replay does with a body at its end: dropped, replayed for free.
        return (RequestBody::empty(), KeptBody::Bytes(Bytes::new()));
    }
    let (body, handle) = BufferedReplay::keep(body, limit);
    (RequestBody::stream(body), KeptBody::Buffered(handle))
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

    #[test]
    fn a_response_body_is_send_sync_and_unpin_and_small_enough_to_move() {
        fn send_sync_unpin<T: Send + Sync + Unpin>() {}
        send_sync_unpin::<ResponseBody>();
        // The stack's body is moved out through every layer with its response as it is: the
        // choice of the boxed one takes no room beside it (the enum's tag is in a niche).
        assert_eq!(
            std::mem::size_of::<ResponseBody>(),
            std::mem::size_of::<StackBody>()
        );
        // And the response the layers move is well under memcpy's unrolled copy (256 bytes):
        // hyper's body with the idle and deadline wrappers, no policy carried beside it.
        assert_eq!(std::mem::size_of::<http::Response<ResponseBody>>(), 208);
    }

    #[tokio::test]
    async fn a_body_given_to_response_body_new_keeps_its_frames_and_its_errors_are_classified() {
        let body = ResponseBody::new(Full::new(Bytes::from_static(b"abc")));
        assert!(format!("{body:?}").contains("\"boxed\""), "{body:?}");
        assert_eq!(body.size_hint().exact(), Some(3));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");

        let empty = ResponseBody::default();
        assert!(empty.is_end_stream());
        assert!(empty.collect().await.unwrap().to_bytes().is_empty());

        // A body failing with an error that says nothing of where: classified as a failure to
        // read the body, the failure kept as its source.
        struct Failing;
        impl Body for Failing {
            type Data = Bytes;
            type Error = BoxError;
            fn poll_frame(
                self: Pin<&mut Self>,
                _cx: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
                Poll::Ready(Some(Err("the stand-in failed".into())))
            }
        }
        let err = ResponseBody::new(Failing)
            .frame()
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.phase(), Phase::ReadBody, "{err:?}");
        assert!(
            format!("{err:?}").contains("the stand-in failed"),
            "{err:?}"
        );
    }

    #[test]
    fn below_the_retry_layer_a_request_is_the_callers_256_bytes() {
        // The body type the retry layer gives the layers below it and hyper: `RequestBody`
        // itself (this fails to compile if it changes), so the request stays within 256 bytes.
        fn same<T>(_: std::marker::PhantomData<T>, _: std::marker::PhantomData<T>) {}
        type Below = <RequestReplay as ReplayStrategy<RequestBody>>::Body;
        same(
            std::marker::PhantomData::<Below>,
            std::marker::PhantomData::<RequestBody>,
        );
        assert_eq!(std::mem::size_of::<http::Request<Below>>(), 256);
    }

    /// A streamed body yielding these frames, last first, each at once.
    struct Frames(Vec<Result<&'static [u8], &'static str>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop().map(|frame| match frame {
                Ok(data) => Ok(Frame::data(Bytes::from_static(data))),
                Err(why) => Err(why.into()),
            }))
        }
    }

    async fn read(body: RequestBody) -> Result<Bytes, BoxError> {
        Ok(body.collect().await?.to_bytes())
    }

    #[tokio::test]
    async fn bytes_within_the_limit_replay_as_themselves_after_being_sent() {
        let (first, kept) = RequestReplay::keep(RequestBody::full("abc"), 3);
        assert!(matches!(&kept, KeptBody::Bytes(_)));
        assert_eq!(first.size_hint().exact(), Some(3));
        assert_eq!(read(first).await.unwrap(), "abc");
        for _ in 0..2 {
            assert!(RequestReplay::can_replay(&kept).is_ok());
            let again = RequestReplay::replay(&kept).unwrap();
            assert_eq!(again.size_hint().exact(), Some(3));
            assert_eq!(read(again).await.unwrap(), "abc");
        }
        let (empty, kept) = RequestReplay::keep(RequestBody::empty(), 0);
        assert!(empty.is_end_stream());
        assert!(RequestReplay::replay(&kept).unwrap().is_end_stream());
    }

    #[tokio::test]
    async fn bytes_over_the_limit_or_under_a_zero_limit_replay_only_while_unread() {
        for limit in [0, 2] {
            let (first, kept) = RequestReplay::keep(RequestBody::full("abc"), limit);
            assert!(matches!(&kept, KeptBody::Buffered(_)));
            assert_eq!(first.size_hint().exact(), Some(3));
            // The first attempt never read: the next one sends it all.
            drop(first);
            let second = RequestReplay::replay(&kept).unwrap();
            assert_eq!(read(second).await.unwrap(), "abc");
            // The second read it and failed: nothing of it was kept.
            assert!(RequestReplay::can_replay(&kept).is_err());
            assert!(RequestReplay::replay(&kept).is_err());
        }
    }

    #[tokio::test]
    async fn a_stream_replays_what_was_kept_of_it_within_the_limit() {
        let stream = || RequestBody::stream(Frames(vec![Ok(&b"cd"[..]), Ok(&b"ab"[..])]));
        let (first, kept) = RequestReplay::keep(stream(), 4);
        assert!(matches!(&kept, KeptBody::Buffered(_)));
        assert_eq!(read(first).await.unwrap(), "abcd");
        assert!(RequestReplay::can_replay(&kept).is_ok());
        assert_eq!(
            read(RequestReplay::replay(&kept).unwrap()).await.unwrap(),
            "abcd"
        );

        let (first, kept) = RequestReplay::keep(stream(), 3);
        assert_eq!(read(first).await.unwrap(), "abcd");
        assert!(RequestReplay::can_replay(&kept).is_err());
    }

    #[tokio::test]
    async fn a_stream_sent_once_fails_as_a_send_failure_of_ours() {
        let failing = RequestBody::stream(Frames(vec![Err("broken")]));
        let err = read(RequestReplay::once(failing)).await.unwrap_err();
        let ours = err.downcast::<Error>().unwrap();
        assert_eq!(ours.kind(), backstop_classify::Kind::Other);
        assert_eq!(ours.phase(), backstop_classify::Phase::Send);
        // Bytes in memory are sent as they are.
        let once = RequestReplay::once(RequestBody::full("abc"));
        assert!(matches!(once.kind, BodyKind::Full(_)));
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
