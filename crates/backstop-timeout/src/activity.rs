//! [`ServerActivity`]: tells a server connection's [`IdleIo`](crate::IdleIo) when a request is
//! being handled, so a slow handler is not mistaken for a silent client.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// Requests in progress on one connection.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    in_progress: AtomicUsize,
}

impl Activity {
    pub(crate) fn is_busy(&self) -> bool {
        self.in_progress.load(Ordering::Acquire) > 0
    }
}

/// The activity of one server connection, from
/// [`ServerIdleTimeout::wrap_tracked`](crate::ServerIdleTimeout::wrap_tracked).
///
/// As a [`Layer`] around the connection's service, it marks the connection busy from the moment a
/// request reaches the service until its response body is finished (or dropped). While busy, the
/// connection's pending read is not timed — hyper keeps one pending to notice a client hanging up
/// — so a handler that thinks longer than the idle period is not cut. Writes stay timed: a
/// response the client stops reading still fails after the period.
#[derive(Debug, Clone)]
pub struct ServerActivity {
    activity: Arc<Activity>,
}

impl Default for ServerActivity {
    fn default() -> Self {
        ServerActivity::new()
    }
}

impl ServerActivity {
    /// An activity attached to no IO: layered around a connection's service it still tells
    /// whether the connection has a request in progress, e.g. so a server shutting down can close
    /// idle connections at once and drain only the busy ones.
    pub fn new() -> Self {
        ServerActivity::shared(Arc::new(Activity::default()))
    }

    pub(crate) fn shared(activity: Arc<Activity>) -> Self {
        ServerActivity { activity }
    }

    /// Whether a request is being handled right now.
    pub fn is_busy(&self) -> bool {
        self.activity.is_busy()
    }

    fn enter(&self) -> Busy {
        self.activity.in_progress.fetch_add(1, Ordering::AcqRel);
        Busy {
            activity: self.activity.clone(),
        }
    }
}

impl<S> Layer<S> for ServerActivity {
    type Service = TrackActivity<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrackActivity {
            inner,
            activity: self.clone(),
        }
    }
}

/// Marks one request in progress until dropped.
#[derive(Debug)]
struct Busy {
    activity: Arc<Activity>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.activity.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The service made by [`ServerActivity`]: a tower `Service` over a tower service, a hyper
/// `Service` over a hyper service. Errors of the inner service pass through unchanged.
#[derive(Debug, Clone)]
pub struct TrackActivity<S> {
    inner: S,
    activity: ServerActivity,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TrackActivity<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ActiveBody<ResBody>>;
    type Error = S::Error;
    type Future = ActiveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let busy = self.activity.enter();
        ActiveFuture {
            inner: self.inner.call(req),
            busy: Some(busy),
        }
    }
}

/// The same for hyper's own `Service` trait, so it wraps a `hyper::service::service_fn`
/// directly.
impl<S, ReqBody, ResBody> hyper::service::Service<Request<ReqBody>> for TrackActivity<S>
where
    S: hyper::service::Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ActiveBody<ResBody>>;
    type Error = S::Error;
    type Future = ActiveFuture<S::Future>;

    fn call(&self, req: Request<ReqBody>) -> Self::Future {
        let busy = self.activity.enter();
        ActiveFuture {
            inner: self.inner.call(req),
            busy: Some(busy),
        }
    }
}

pin_project! {
    /// The response future of [`TrackActivity`].
    #[derive(Debug)]
    pub struct ActiveFuture<F> {
        #[pin]
        inner: F,
        busy: Option<Busy>,
    }
}

impl<F, B, E> Future for ActiveFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ActiveBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx))?;
        let busy = this.busy.take();
        Poll::Ready(Ok(res.map(|inner| ActiveBody { inner, busy })))
    }
}

pin_project! {
    /// A response body keeping its connection marked busy until it ends or is dropped.
    #[derive(Debug)]
    pub struct ActiveBody<B> {
        #[pin]
        inner: B,
        busy: Option<Busy>,
    }
}

impl<B: Body> Body for ActiveBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            this.busy.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
