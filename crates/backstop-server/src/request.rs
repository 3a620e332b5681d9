//! What [`Server`](crate::Server) hands a service: a request whose body is under the idle rule,
//! with the client's address in its extensions.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use backstop_timeout::IdleBody;
use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tower_service::Service;

/// The body of a request served by [`Server`](crate::Server): hyper's [`Incoming`] under the
/// server's idle timeout.
///
/// While the handler waits for the next piece of the body, the idle period runs; when it passes
/// without a byte, the read fails with `TimedOut(Idle)` in `Phase::ReadBody` (a
/// [`backstop_classify::Error`]) — nginx's `client_body_timeout`, between two reads, not over the
/// whole body. A client that sends one byte every few seconds is thus dropped at the idle bound
/// instead of holding its handler, its load-shed slot and its connection until the request
/// deadline: once the handler answers without having read the whole body, hyper closes the
/// connection. The period runs only while the handler waits, so a handler that reads slowly is
/// never blamed on the client.
///
/// It is a plain [`http_body::Body`] of [`Bytes`], so axum extractors and `BodyExt` work on it
/// unchanged; a service written for `Request<Incoming>` takes `Request<IncomingBody>` instead.
#[derive(Debug)]
pub struct IncomingBody {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Timed(IdleBody<Incoming>),
    // The idle timeout is off.
    Plain(Incoming),
}

impl IncomingBody {
    pub(crate) fn new(body: Incoming, idle: Option<Duration>) -> IncomingBody {
        let inner = match idle {
            Some(period) => Inner::Timed(IdleBody::new(body, period)),
            None => Inner::Plain(body),
        };
        IncomingBody { inner }
    }
}

impl Body for IncomingBody {
    type Data = Bytes;
    type Error = backstop_classify::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.inner {
            Inner::Timed(body) => Pin::new(body).poll_frame(cx),
            Inner::Plain(body) => Pin::new(body).poll_frame(cx).map(|frame| {
                frame.map(|frame| {
                    frame.map_err(|err| {
                        backstop_classify::Error::classify(err, backstop_classify::Phase::ReadBody)
                    })
                })
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Timed(body) => body.is_end_stream(),
            Inner::Plain(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Timed(body) => body.size_hint(),
            Inner::Plain(body) => body.size_hint(),
        }
    }
}

/// The client's address, in the extensions of every request served by
/// [`Server`](crate::Server).
///
/// Read it with `req.extensions().get::<PeerAddr>()`, or in axum with
/// `Extension(PeerAddr(addr)): Extension<PeerAddr>`. With the `axum` feature (on by default)
/// the server also inserts axum's `ConnectInfo<SocketAddr>`, so axum's `ConnectInfo` extractor
/// works as it does under `into_make_service_with_connect_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// Turns hyper's request into the one the user's service takes: the body under the idle rule,
/// the peer address in the extensions.
#[derive(Debug, Clone)]
pub(crate) struct Prepare<S> {
    pub(crate) inner: S,
    pub(crate) peer: SocketAddr,
    pub(crate) body_idle: Option<Duration>,
}

impl<S> Service<Request<Incoming>> for Prepare<S>
where
    S: Service<Request<IncomingBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(PeerAddr(self.peer));
        #[cfg(feature = "axum")]
        parts
            .extensions
            .insert(axum::extract::ConnectInfo(self.peer));
        let body = IncomingBody::new(body, self.body_idle);
        self.inner.call(Request::from_parts(parts, body))
    }
}
