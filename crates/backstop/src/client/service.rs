//! [`Client`] as a [`tower_service::Service`]: what lets a client sit at the bottom of a stack a
//! user writes (`ServiceBuilder::new().map_request(..).service(client)`), or be called with
//! `tower::ServiceExt::oneshot`.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use backstop_classify::{BoxError, Error};
use bytes::{Buf, Bytes};
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Empty, Full};

use super::{Client, RequestBody, ResponseBody};

/// A `Client` is a `Service` for requests of any body whose chunks are [`Buf`]s.
///
/// Bodies already in memory stay as they are: a [`RequestBody`], a [`Full<Bytes>`] and an
/// [`Empty<Bytes>`] are recognised by their type and sent exactly as [`Client::send`] sends them
/// (not boxed, not copied; what a retry keeps of them is the same reference-counted [`Bytes`]).
/// Any other body is streamed ([`RequestBody::stream`]): boxed once, each chunk turned into
/// [`Bytes`] (free when it already is one, a copy otherwise), its size hint passed on. Either
/// way a retry replays the body only up to the policy's `replay_limit`
/// ([`ClientBuilder::replay_limit`](crate::ClientBuilder::replay_limit)); a larger one is sent
/// once, and a failure after it was sent stops retrying with `StopReason::BodyNotReplayable`
/// in the error's [`CallInfo`](crate::CallInfo).
///
/// `poll_ready` is always ready: nothing is reserved before a call. The breaker and the retry
/// budget decide per call, inside it, once the destination is known; a refused call is an error
/// of that call (`Kind::BreakerOpen`, `Kind::BudgetExhausted`), never a client that stops being
/// ready, which would stall every destination behind one host's breaker.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use backstop::Client;
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// let client = Client::builder().max_attempts(1).build()?;
/// // A stack of the user's own, with the client at the bottom.
/// let stack = ServiceBuilder::new()
///     .map_request(|mut req: http::Request<Full<Bytes>>| {
///         req.headers_mut().insert("x-team", http::HeaderValue::from_static("checkout"));
///         req
///     })
///     .service(client.clone());
/// let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
/// let req = http::Request::get(format!("http://{closed}/")).body(Full::new(Bytes::new()))?;
/// let err = stack.oneshot(req).await.unwrap_err();
/// assert_eq!(err.kind(), backstop::Kind::Refused);
/// # Ok(())
/// # }
/// ```
impl<B> tower_service::Service<Request<B>> for Client
where
    B: Body + Send + 'static,
    B::Data: Buf + Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Error;
    type Future = ClientFuture;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> ClientFuture {
        // The future must own what it uses (`'static`, as `ServiceBuilder` stacks and `oneshot`
        // need): a clone is two reference counts, see `Client`'s `Clone`.
        let client = self.clone();
        let req = req.map(request_body);
        ClientFuture {
            inner: Box::pin(async move { client.send_body(super::Outgoing::Request(req)).await }),
        }
    }
}

/// The future of [`Client`]'s `Service::call`: the response (with its
/// [`CallInfo`](crate::CallInfo)) or the classified error.
pub struct ClientFuture {
    inner: Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Error>> + Send>>,
}

impl fmt::Debug for ClientFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientFuture").finish_non_exhaustive()
    }
}

impl Future for ClientFuture {
    type Output = Result<Response<ResponseBody>, Error>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

/// `body` as a [`RequestBody`]: the in-memory bodies as they are, any other one streamed.
///
/// Stable Rust has no specialisation, so the in-memory types are recognised at run time through
/// `Any` (a type-id comparison, no allocation): this keeps a `Full<Bytes>` on the same unboxed
/// path as `Client::send`, where the streaming path would box it and call `copy_to_bytes` (free
/// for `Bytes`, but an indirection per frame).
pub(super) fn request_body<B>(body: B) -> RequestBody
where
    B: Body + Send + 'static,
    B::Data: Buf + Send,
    B::Error: Into<BoxError>,
{
    let mut slot = Some(body);
    if let Some(body) = take::<RequestBody, B>(&mut slot) {
        return body;
    }
    if let Some(body) = take::<Full<Bytes>, B>(&mut slot) {
        return body.into();
    }
    if let Some(body) = take::<Empty<Bytes>, B>(&mut slot) {
        return body.into();
    }
    match slot {
        Some(body) => RequestBody::stream(
            body.map_frame(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))),
        ),
        // Not reached: `take` empties the slot only when it returns the body.
        None => RequestBody::empty(),
    }
}

/// The body in `slot`, when it is a `T`.
fn take<T: 'static, B: 'static>(slot: &mut Option<B>) -> Option<T> {
    (slot as &mut dyn Any)
        .downcast_mut::<Option<T>>()
        .and_then(Option::take)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn kind(body: &RequestBody) -> String {
        format!("{body:?}")
    }

    #[test]
    fn bodies_in_memory_are_kept_as_they_are_and_others_streamed() {
        let full = request_body(Full::new(Bytes::from_static(b"abc")));
        assert!(kind(&full).contains("\"full\""), "{full:?}");
        assert_eq!(full.size_hint().exact(), Some(3));
        let empty = request_body(Empty::<Bytes>::new());
        assert!(kind(&empty).contains("\"full\""), "{empty:?}");
        let own = request_body(RequestBody::stream(Full::new(Bytes::from_static(b"x"))));
        assert!(kind(&own).contains("\"stream\""), "{own:?}");
        // A body of another chunk type goes through the streaming path, bytes intact.
        let other = request_body(Full::new(&b"hello"[..]));
        assert!(kind(&other).contains("\"stream\""), "{other:?}");
    }

    #[tokio::test]
    async fn a_streamed_body_of_another_chunk_type_keeps_its_bytes() {
        let other = request_body(Full::new(std::collections::VecDeque::from(
            b"hello".to_vec(),
        )));
        let bytes = other.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, Bytes::from_static(b"hello"));
    }
}
