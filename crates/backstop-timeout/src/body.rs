//! [`BodyIdleTimeoutLayer`]: fails a response body that stalls mid-stream.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use backstop_classify::{BoxError, Error, Kind, Phase, Timer};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::config::{ConfigError, check_period};
use crate::io::IdleTimedOut;

/// Fails a response body that yields no frame for the idle period while it is being read, with
/// [`Kind::TimedOut`]`(`[`Timer::Idle`]`)` in [`Phase::ReadBody`].
///
/// The period runs only while the reader waits for the next frame: a slow consumer is never
/// blamed on the peer, and a slow but steady drip (a frame at least once per period) never trips
/// it. Errors of the inner service and body become [`backstop_classify::Error`]s.
///
/// ```
/// use std::time::Duration;
/// use backstop_timeout::BodyIdleTimeoutLayer;
/// use tower::ServiceBuilder;
/// # let client = tower::service_fn(|_req: http::Request<()>| async {
/// #     Ok::<_, std::io::Error>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
/// # });
/// let client = ServiceBuilder::new()
///     .layer(BodyIdleTimeoutLayer::new(Duration::from_secs(30)))
///     .service(client);
/// # drop(client);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct BodyIdleTimeoutLayer {
    period: Duration,
}

impl BodyIdleTimeoutLayer {
    /// A layer with idle period `period`, as given (see [`try_new`](Self::try_new)).
    pub fn new(period: Duration) -> Self {
        BodyIdleTimeoutLayer { period }
    }

    /// A layer with idle period `period`, which must lie between [`MIN_TIMEOUT`](crate::MIN_TIMEOUT) and
    /// [`MAX_IDLE_TIMEOUT`](crate::MAX_IDLE_TIMEOUT); otherwise a [`ConfigError`] naming `body_idle_timeout`.
    pub fn try_new(period: Duration) -> Result<Self, ConfigError> {
        check_period("body_idle_timeout", period).map(Self::new)
    }

    /// The idle period.
    pub fn period(&self) -> Duration {
        self.period
    }
}

impl<S> Layer<S> for BodyIdleTimeoutLayer {
    type Service = BodyIdleTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyIdleTimeout {
            inner,
            period: self.period,
        }
    }
}

/// The service made by [`BodyIdleTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct BodyIdleTimeout<S> {
    inner: S,
    period: Duration,
}

impl<S> BodyIdleTimeout<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for BodyIdleTimeout<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<IdleBody<ResBody>>;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|err| Error::classify(err, Phase::Local))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(req),
            period: self.period,
        }
    }
}

pin_project! {
    /// The response future of [`BodyIdleTimeout`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        period: Duration,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<IdleBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        Poll::Ready(match out {
            Ok(res) => Ok(res.map(|body| IdleBody::new(body, *this.period))),
            Err(err) => Err(Error::classify(err, Phase::AwaitHeaders)),
        })
    }
}

pin_project! {
    /// A body failing with `TimedOut(Idle)` when no frame arrives for the period while it is read.
    ///
    /// The timer is boxed, and created only at the first wait that needs it: every layer above
    /// moves the response (body included) on its way out, so the wrapper stays small. The wrapper
    /// is `Unpin` when the inner body is.
    #[derive(Debug)]
    pub struct IdleBody<B> {
        #[pin]
        inner: B,
        // Created on the first wait that needs it, then reused for the body's later waits.
        timer: Option<Pin<Box<Sleep>>>,
        // The period in nanoseconds, not a `Duration` (16 bytes): with it the body of a
        // hyper response is 80 bytes and the response 256, which every layer above moves on
        // the cheap side of memcpy (a `Duration` of up to 584 years fits).
        period_nanos: u64,
        // The deadline of the current wait; `None` when not waiting.
        deadline: Option<Instant>,
        expired: bool,
    }
}

impl<B> IdleBody<B> {
    /// Wraps `body` with idle period `period` (not checked here; the layer checks it).
    pub fn new(body: B, period: Duration) -> Self {
        IdleBody {
            inner: body,
            timer: None,
            period_nanos: u64::try_from(period.as_nanos()).unwrap_or(u64::MAX),
            deadline: None,
            expired: false,
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = Error;

    // Inlined, so the frames of a body that keeps up pass through the wrapper at the cost of
    // a branch; waiting is out of line (`wait`).
    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.expired {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.deadline = None;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                Poll::Ready(Some(Err(Error::classify(err, Phase::ReadBody))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => wait(this.timer, this.deadline, *this.period_nanos, cx).map(|err| {
                *this.expired = true;
                Some(Err(err))
            }),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body's wait for its next frame: registers the timer (created at the first wait, moved only
/// when it fires early), or the idle error once the period has passed without a frame.
#[inline(never)]
fn wait(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: &mut Option<Instant>,
    period_nanos: u64,
    cx: &mut Context<'_>,
) -> Poll<Error> {
    let period = Duration::from_nanos(period_nanos);
    let deadline = *deadline.get_or_insert_with(|| Instant::now() + period);
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    loop {
        ready!(timer.as_mut().poll(cx));
        // Registered for an earlier wait: catch up rather than move the timer on every frame.
        if Instant::now() < deadline {
            timer.as_mut().reset(deadline);
            continue;
        }
        break;
    }
    Poll::Ready(
        Error::new(Kind::TimedOut(Timer::Idle), Phase::ReadBody)
            .with_source(IdleTimedOut { period }),
    )
}
