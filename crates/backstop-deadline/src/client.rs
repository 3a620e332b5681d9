//! The client [`DeadlineLayer`]: one ceiling over the whole call, retries and backoff included.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use backstop_classify::{BoxError, Deadline, Error, Failure, Phase};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_layer::Layer;
use tower_service::Service;

use crate::propagate::Propagation;
use crate::{ConfigError, ambient, deadline_error, deadline_failure};

/// How far a deadline may lie ahead; the same clamp as [`Deadline::after`].
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// What the client deadline covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Covers {
    /// Until the response body has ended: a body still streaming at the deadline fails with timed
    /// out (deadline) in phase [`ReadBody`](Phase::ReadBody). The default.
    #[default]
    Body,
    /// Until the response head arrives; the body then streams for as long as it takes.
    Head,
}

/// How the deadline travels to the layers inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Carry {
    /// As a [`Deadline`] in the request extensions, where backstop's retry and attempt timeout
    /// read it. The default. Costs the extension map's allocations when the request has none.
    #[default]
    Extensions,
    /// As the [ambient](mod@crate::ambient) task-local around the inner call only. Allocation-free,
    /// but only layers that read the ambient deadline ([`AttemptTimeout`](crate::AttemptTimeout))
    /// see it.
    TaskLocal,
}

/// The outermost ceiling over a call: every attempt, every backoff sleep and, by default, the
/// response body.
///
/// The effective deadline is the earliest of the layer's own timeout, a [`Deadline`] already on
/// the request, and the [ambient](mod@crate::ambient) deadline of the server handler the call is made
/// from. It is put in the request extensions for the layers inside (retry clamps its backoff to
/// it; [`AttemptTimeout`](crate::AttemptTimeout) bounds each attempt by it) and written into the
/// outgoing headers ([`Propagation`]). At the deadline the inner future is dropped and the call
/// fails with timed out (deadline), which is never retried.
///
/// ```
/// use std::time::Duration;
/// use backstop_deadline::{Covers, DeadlineLayer};
///
/// let layer = DeadlineLayer::builder()
///     .timeout(Duration::from_secs(2))
///     .covers(Covers::Head)
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), backstop_deadline::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct DeadlineLayer {
    timeout: Option<Duration>,
    covers: Covers,
    carry: Carry,
    propagation: Propagation,
}

impl DeadlineLayer {
    /// A builder; see [`DeadlineLayerBuilder`].
    pub fn builder() -> DeadlineLayerBuilder {
        DeadlineLayerBuilder {
            layer: DeadlineLayer::inherit(),
        }
    }

    /// A layer with no timeout of its own: it enforces and propagates only the deadline it
    /// inherits (from the request or the ambient server handler), covering the body, with the
    /// default [`Propagation`].
    pub fn inherit() -> DeadlineLayer {
        DeadlineLayer {
            timeout: None,
            covers: Covers::Body,
            carry: Carry::Extensions,
            propagation: Propagation::new(),
        }
    }
}

/// Builds a [`DeadlineLayer`]; invalid settings are rejected by [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct DeadlineLayerBuilder {
    layer: DeadlineLayer,
}

impl DeadlineLayerBuilder {
    /// The layer's own ceiling, from the moment the call starts. Must be greater than zero.
    /// Without one, only inherited deadlines apply.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.layer.timeout = Some(timeout);
        self
    }

    /// Whether the deadline covers the response body (default) or only the head.
    #[must_use]
    pub fn covers(mut self, covers: Covers) -> Self {
        self.layer.covers = covers;
        self
    }

    /// How the deadline reaches the inner layers (default: request extensions).
    #[must_use]
    pub fn carry(mut self, carry: Carry) -> Self {
        self.layer.carry = carry;
        self
    }

    /// How the time left is written into the outgoing request (default [`Propagation::new`]).
    ///
    /// When an [`AttemptTimeout`](crate::AttemptTimeout) sits inside, it rewrites the headers for
    /// every attempt; [`Propagation::disabled`] here then saves one header write per call.
    #[must_use]
    pub fn propagation(mut self, propagation: Propagation) -> Self {
        self.layer.propagation = propagation;
        self
    }

    /// The layer, or the first rule the settings break.
    pub fn build(self) -> Result<DeadlineLayer, ConfigError> {
        if let Some(timeout) = self.layer.timeout {
            if timeout.is_zero() {
                return Err(ConfigError::new("timeout", "must be greater than zero"));
            }
            self.layer
                .propagation
                .validate_against(timeout, "must be at least 1 ms shorter than timeout")?;
        }
        let mut layer = self.layer;
        layer.timeout = layer.timeout.map(|t| t.min(FAR_FUTURE));
        Ok(layer)
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by the client [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    layer: DeadlineLayer,
}

impl<S> DeadlineService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for DeadlineService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<DeadlineBody<ResBody>>;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|err| Error::classify(err, Phase::Local))
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let now = Instant::now();
        let own = self.layer.timeout.map(|t| Deadline::at(now + t));
        let Some(deadline) = earliest(earliest(own, Deadline::of(&req)), ambient::current()) else {
            return ResponseFuture::passthrough(self.inner.call(req));
        };
        if deadline.instant() <= now {
            return ResponseFuture::failed(deadline_failure(Phase::Local));
        }
        if let Err(failure) = self
            .layer
            .propagation
            .write(&mut req, deadline.instant(), now)
        {
            return ResponseFuture::failed(failure);
        }
        let covers_body = self.layer.covers == Covers::Body;
        let (future, scoped) = match self.layer.carry {
            Carry::Extensions => {
                crate::carry_in_extensions(&mut req, deadline);
                (self.inner.call(req), false)
            }
            Carry::TaskLocal => {
                let _entered = ambient::Entered::new(deadline);
                (self.inner.call(req), true)
            }
        };
        ResponseFuture::running(future, deadline.instant(), covers_body, scoped)
    }
}

fn earliest(a: Option<Deadline>, b: Option<Deadline>) -> Option<Deadline> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.earliest(b)),
        (a, b) => a.or(b),
    }
}

pin_project! {
    /// The response future of the client [`DeadlineService`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    // One variant per situation keeps the future small: it is moved on every call.
    #[derive(Debug)]
    #[project = StateProj]
    enum State<F> {
        // No deadline anywhere: the layer only classifies errors.
        Passthrough {
            #[pin]
            inner: F,
        },
        Running {
            #[pin]
            inner: F,
            #[pin]
            sleep: Option<Sleep>,
            deadline: Instant,
            covers_body: bool,
            scoped: bool,
        },
        Failed {
            failure: Failure,
        },
        Done,
    }
}

impl<F> ResponseFuture<F> {
    fn passthrough(inner: F) -> Self {
        ResponseFuture {
            state: State::Passthrough { inner },
        }
    }

    fn running(inner: F, deadline: Instant, covers_body: bool, scoped: bool) -> Self {
        ResponseFuture {
            state: State::Running {
                inner,
                sleep: None,
                deadline,
                covers_body,
                scoped,
            },
        }
    }

    fn failed(failure: Failure) -> Self {
        ResponseFuture {
            state: State::Failed { failure },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<DeadlineBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        let output = match state.as_mut().project() {
            StateProj::Passthrough { inner } => match inner.poll(cx) {
                Poll::Ready(result) => finish(result, None),
                Poll::Pending => return Poll::Pending,
            },
            StateProj::Running {
                inner,
                mut sleep,
                deadline,
                covers_body,
                scoped,
            } => {
                let deadline = *deadline;
                let entered = scoped.then(|| ambient::Entered::new(Deadline::at(deadline)));
                let polled = inner.poll(cx);
                drop(entered);
                match polled {
                    Poll::Ready(result) => finish(result, covers_body.then_some(deadline)),
                    Poll::Pending => {
                        if sleep.is_none() {
                            // Created on the first wait only: a call answered at once never
                            // touches the timer wheel.
                            sleep.set(Some(sleep_until(deadline)));
                        }
                        match sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
                            // Dropping the inner future (below) is what cancels the attempt in
                            // flight or the backoff sleep of a retry inside.
                            Some(Poll::Ready(())) => Err(deadline_error(Phase::AwaitHeaders)),
                            _ => return Poll::Pending,
                        }
                    }
                }
            }
            StateProj::Failed { failure } => Err(Error::from_failure(*failure)),
            StateProj::Done => Err(crate::polled_after_completion()),
        };
        state.set(State::Done);
        Poll::Ready(output)
    }
}

fn finish<B, E: Into<BoxError>>(
    result: Result<Response<B>, E>,
    body_deadline: Option<Instant>,
) -> Result<Response<DeadlineBody<B>>, Error> {
    match result {
        Ok(res) => Ok(res.map(|body| DeadlineBody::new(body, body_deadline))),
        Err(err) => Err(Error::classify(err, Phase::AwaitHeaders)),
    }
}

pin_project! {
    /// A response body bounded by the client deadline when it [covers the body](Covers::Body);
    /// a transparent wrapper otherwise.
    ///
    /// Inner body errors are classified into [`Error`] in phase [`ReadBody`](Phase::ReadBody).
    /// The timer is boxed, and only once the body first has to wait, so the wrapper stays `Unpin`
    /// when the body is and a body that never waits never allocates.
    #[derive(Debug)]
    pub struct DeadlineBody<B> {
        #[pin]
        inner: B,
        sleep: Option<Pin<Box<Sleep>>>,
        deadline: Option<Instant>,
        expired: bool,
    }
}

impl<B> DeadlineBody<B> {
    /// Wraps `inner`, failing it if it is still streaming at `deadline`.
    pub fn new(inner: B, deadline: Option<Instant>) -> Self {
        DeadlineBody {
            inner,
            sleep: None,
            deadline,
            expired: false,
        }
    }

    /// The deadline this body must end by, if it is bounded.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.expired {
            return Poll::Ready(None);
        }
        // Once the body has had to wait, the timer is armed and checked first, so a body that
        // keeps trickling in cannot outrun the deadline.
        if let Some(Poll::Ready(())) = this.sleep.as_mut().map(|s| s.as_mut().poll(cx)) {
            *this.expired = true;
            return Poll::Ready(Some(Err(deadline_error(Phase::ReadBody))));
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(err))) => {
                Poll::Ready(Some(Err(Error::classify(err, Phase::ReadBody))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let Some(deadline) = *this.deadline else {
                    return Poll::Pending;
                };
                if this.sleep.is_none() {
                    let sleep = this.sleep.insert(Box::pin(sleep_until(deadline)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        *this.expired = true;
                        return Poll::Ready(Some(Err(deadline_error(Phase::ReadBody))));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.expired {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}
