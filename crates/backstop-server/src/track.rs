//! [`track_requests`]: tells the streams of [`AxumListener`](crate::AxumListener) when a request
//! is being handled, so that under `axum::serve` too a slow handler is not taken for a silent
//! client, and puts request bodies under the idle rule.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::serve::{IncomingStream, Listener};
use backstop_timeout::{ActiveFuture, IdleBody, ServerActivity, TrackActivity};
use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::listener::AcceptedStream;
use crate::serve::BoxError;

/// Wraps the make-service given to `axum::serve` with backstop's [`listener`](crate::listener),
/// so that a connection's idle timer pauses while one of its requests is being handled, as under
/// [`Server`](crate::Server): a handler that thinks longer than the idle period keeps its
/// connection. Writes stay timed, so a client that stops reading its response is still dropped.
///
/// Each request is marked in progress from the moment it reaches the router until its response
/// body ends or is dropped. Its body is put under the idle rule instead, as [`Server`](crate::Server)
/// does with [`IncomingBody`](crate::IncomingBody): a handler waiting longer than the idle period
/// for the next bytes of its request body gets `TimedOut(Idle)` in `Phase::ReadBody` (axum's
/// extractors answer `400`), so a client trickling its body is not kept for the request deadline.
///
/// The cost: axum wants its own `Body` both ways, so every response body, and with an idle
/// period every request body, is boxed once more.
///
/// ```
/// use std::net::SocketAddr;
/// use std::time::Duration;
/// use axum::{Router, routing::get};
/// use backstop_server::{ServeConfig, listener, track_requests};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let app = Router::new().route(
///     "/report",
///     // Longer than the idle period, and the connection stays.
///     get(|| async {
///         tokio::time::sleep(Duration::from_secs(90)).await;
///         "done\n"
///     }),
/// );
/// let config = ServeConfig::builder()
///     .idle_timeout(Some(Duration::from_secs(60)))
///     .build()?;
/// let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// axum::serve(
///     listener(tcp, config),
///     track_requests(app.into_make_service_with_connect_info::<SocketAddr>()),
/// )
/// .with_graceful_shutdown(async {})
/// .await?;
/// # Ok(())
/// # }
/// ```
pub fn track_requests<M>(make_service: M) -> TrackRequests<M> {
    TrackRequests {
        inner: make_service,
    }
}

/// The make-service made by [`track_requests`]: for each connection of an
/// [`AxumListener`](crate::AxumListener) (or of what [`listener`](crate::listener) returns), the
/// inner make-service's router wrapped in [`Tracked`].
#[derive(Debug, Clone)]
pub struct TrackRequests<M> {
    inner: M,
}

impl<'a, L, M, S> Service<IncomingStream<'a, L>> for TrackRequests<M>
where
    L: Listener<Io = AcceptedStream>,
    M: Service<IncomingStream<'a, L>, Response = S>,
{
    type Response = Tracked<S>;
    type Error = M::Error;
    type Future = TrackRequestsFuture<M::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, stream: IncomingStream<'a, L>) -> Self::Future {
        let activity = stream.io().activity.clone();
        let body_idle = stream.io().idle;
        TrackRequestsFuture {
            inner: self.inner.call(stream),
            activity: Some(activity),
            body_idle,
        }
    }
}

pin_project! {
    /// The future of [`TrackRequests`]: the connection's service, once the inner make-service
    /// has made it.
    #[derive(Debug)]
    pub struct TrackRequestsFuture<F> {
        #[pin]
        inner: F,
        activity: Option<ServerActivity>,
        body_idle: Option<Duration>,
    }
}

impl<F, S, E> Future for TrackRequestsFuture<F>
where
    F: Future<Output = Result<S, E>>,
{
    type Output = Result<Tracked<S>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let service = ready!(this.inner.poll(cx))?;
        // Taken once; a future polled again after completing gets an activity tied to no stream.
        let activity = this.activity.take().unwrap_or_default();
        Poll::Ready(Ok(Tracked {
            inner: activity.layer(service),
            body_idle: *this.body_idle,
        }))
    }
}

/// One connection's service under [`track_requests`]: marks the connection busy while a request
/// is handled, puts the request body under the idle rule, and hands axum its own `Body` back.
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: TrackActivity<S>,
    body_idle: Option<Duration>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Tracked<S>
where
    S: Service<Request<axum::body::Body>, Response = Response<ResBody>>,
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<axum::body::Body>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // `Body::new` of axum's own `Body` (what axum::serve passes) does not box it again.
        let req = match self.body_idle {
            Some(period) => req.map(|body| axum::body::Body::new(IdleBody::new(body, period))),
            None => req.map(axum::body::Body::new),
        };
        TrackedFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    /// The response future of [`Tracked`].
    #[derive(Debug)]
    pub struct TrackedFuture<F> {
        #[pin]
        inner: ActiveFuture<F>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<axum::body::Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = ready!(self.project().inner.poll(cx))?;
        Poll::Ready(Ok(res.map(axum::body::Body::new)))
    }
}
