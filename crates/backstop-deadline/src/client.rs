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

use crate::ambient::{Budget, Entered};
use tower_layer::Layer;
use tower_service::Service;

use crate::propagate::{Prepared, Propagation};
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
    /// As the [ambient](mod@crate::ambient) deadline, set around the inner `call` and every poll
    /// of the inner future: backstop's retry and [`AttemptTimeout`](crate::AttemptTimeout) read it
    /// with [`Deadline::current`]. The default: it never touches the request, so it allocates
    /// nothing, and a call that completes at once never reads the clock.
    #[default]
    TaskLocal,
    /// Ambiently as above *and* as a [`Deadline`] in the request extensions, for layers that read
    /// only [`Deadline::of`] or that move the request to another task (e.g. tower's `Buffer`).
    /// Costs the extension map's allocations (3 when the request has no extensions yet) and a
    /// clock read per call.
    Extensions,
}

/// The outermost ceiling over a call: every attempt, every backoff sleep and, by default, the
/// response body.
///
/// The effective deadline is the earliest of the layer's own timeout, a [`Deadline`] already on
/// the request, and the [ambient](mod@crate::ambient) deadline of the server handler the call is
/// made from. The layers inside read it with [`Deadline::current`] (retry clamps its backoff to
/// it; [`AttemptTimeout`](crate::AttemptTimeout) bounds each attempt by it): it is
/// [carried](Carry) as their ambient deadline, and optionally in the request extensions. Where
/// it is wanted it is also written into the outgoing headers ([`Propagation`]: gRPC requests by
/// default, plain HTTP ones when turned on). At the deadline the inner future is
/// dropped and the call fails with timed out (deadline), which is never retried.
///
/// # When the clock starts
/// The layer's own timeout counts from the call. When nothing else bounds the call (no deadline
/// on the request, none ambient) and [`Carry::TaskLocal`] is used, the clock is read lazily: at
/// the first moment anything needs the deadline — a layer inside asking for it, the inner future
/// having to wait, or a response body that has yet to stream — rather than in `call`. Until then
/// nothing can have waited on the deadline, and on tokio's clock no time passes within the
/// synchronous `call` and first poll of an `.await`ed call (a paused clock only moves when the
/// runtime parks); in real time, the start moves by the synchronous work done before the first
/// wait (microseconds). Only a response future created and then left unpolled starts its clock
/// at its first poll (a layer inside that asked for the deadline within `call` keeps the earlier
/// instant it was given, so the inner bound is then the tighter one). The propagated header is
/// unaffected: it carries the whole timeout minus the margin either way, never more than is left.
/// In exchange a call answered at once costs no clock read, no timer and no allocation.
///
/// # One timer, not two
/// While an [`AttemptTimeout`](crate::AttemptTimeout) inside is waiting with a timer that fires
/// no later than this deadline, this layer registers no timer of its own: that one wakes the task
/// in time for the deadline to be checked. Its own timer (boxed, so the future it adds to every
/// call stays a few words) is set only when nothing inside bounds the wait sooner — a retry's
/// backoff sleep, or an inner service without an attempt timeout — at the cost of one allocation
/// for that call.
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
    // The headers for the whole timeout left, formatted once (see `Propagation::prepare`).
    prepared: Option<Prepared>,
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
    /// default [`Propagation`] (`grpc-timeout` on gRPC requests, nothing on plain HTTP ones).
    pub fn inherit() -> DeadlineLayer {
        DeadlineLayer {
            timeout: None,
            covers: Covers::Body,
            carry: Carry::TaskLocal,
            propagation: Propagation::new(),
            prepared: None,
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

    /// How the deadline reaches the inner layers (default: [ambiently](Carry::TaskLocal)).
    #[must_use]
    pub fn carry(mut self, carry: Carry) -> Self {
        self.layer.carry = carry;
        self
    }

    /// How the time left is written into the outgoing request (default [`Propagation::new`]:
    /// `grpc-timeout` on gRPC requests only).
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
        layer.prepared = layer.timeout.and_then(|t| layer.propagation.prepare(t));
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

    #[inline]
    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // One call of the inner service, whatever the plan, so the compiler can build the inner
        // future in place instead of copying it (and the request) around.
        let budget = match self.plan(&mut req) {
            Ok(budget) => budget,
            Err(failure) => return ResponseFuture::failed(failure),
        };
        // Ambient for the inner call. A clock started inside meanwhile is not copied back: ours
        // then starts at its first need instead, microseconds later, and the layer inside keeps
        // the earlier instant it computed. In exchange the inner future is built straight into
        // the one returned.
        let _entered = budget.map(Entered::new);
        ResponseFuture {
            state: State::Running {
                inner: self.inner.call(req),
                timer: budget.map(DeadlineTimer::new),
                covers_body: self.layer.covers == Covers::Body,
            },
        }
    }
}

impl<S> DeadlineService<S> {
    /// The deadline this call runs under (`None`: no deadline anywhere), with the headers
    /// written and the extension inserted as configured; or why it must not be sent.
    #[inline]
    fn plan<B>(&self, req: &mut Request<B>) -> Result<Option<Budget>, Failure> {
        if let Some(timeout) = self.layer.timeout
            && self.layer.carry == Carry::TaskLocal
            && ambient::peek().is_none()
            && Deadline::of(req).is_none()
        {
            // Only our own timeout applies: it starts when first needed (see "When the clock
            // starts"), and its headers are the prepared ones.
            if let Some(prepared) = &self.layer.prepared {
                self.layer.propagation.write_prepared(req, prepared);
            }
            return Ok(Some(Budget::NotStarted(timeout)));
        }
        let now = Instant::now();
        let own = self.layer.timeout.map(|t| Deadline::at(now + t));
        let Some(deadline) = earliest(earliest(own, Deadline::of(req)), ambient::current()) else {
            return Ok(None);
        };
        if deadline.instant() <= now {
            return Err(deadline_failure(Phase::Local));
        }
        self.layer.propagation.write(req, deadline.instant(), now)?;
        if self.layer.carry == Carry::Extensions {
            crate::carry_in_extensions(req, deadline);
        }
        Ok(Some(Budget::At(deadline)))
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
        Running {
            #[pin]
            inner: F,
            // `None`: no deadline anywhere, the layer only classifies errors. (One variant for
            // both cases lets the inner future be built in place.) Boxed when armed: with an
            // attempt timeout inside reporting its wakes it rarely is (see
            // `poll_expired_unless_woken`), and the future stays small.
            timer: Option<DeadlineTimer>,
            covers_body: bool,
        },
        Failed {
            failure: Failure,
        },
        Done,
    }
}

type DeadlineTimer = crate::timer::Timer<Pin<Box<Sleep>>>;

impl<F> ResponseFuture<F> {
    fn failed(failure: Failure) -> Self {
        ResponseFuture {
            state: State::Failed { failure },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    E: Into<BoxError>,
{
    type Output = Result<Response<DeadlineBody<B>>, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        let output = match state.as_mut().project() {
            StateProj::Running {
                inner,
                timer,
                covers_body,
            } => {
                let Some(timer) = timer else {
                    return inner.poll(cx).map(|res| finish(res, None));
                };
                let mut timer = Pin::new(timer);
                let watch = crate::timer::WakeWatch::new();
                let polled = timer.as_mut().run(|| inner.poll(cx));
                let wake_by = watch.finish();
                match polled {
                    Poll::Ready(Ok(res)) => {
                        // A body that has already ended cannot outlive the deadline: no need to
                        // start the clock for it.
                        let body_deadline = (*covers_body && !res.body().is_end_stream())
                            .then(|| timer.as_mut().deadline().instant());
                        // The inner future has finished; returning without replacing the state
                        // lets the response be built where the caller wants it.
                        return Poll::Ready(Ok(
                            res.map(|body| DeadlineBody::new(body, body_deadline))
                        ));
                    }
                    Poll::Ready(Err(err)) => Err(Error::classify(err, Phase::AwaitHeaders)),
                    // Dropping the inner future (below) is what cancels the attempt in flight or
                    // the backoff sleep of a retry inside.
                    // An attempt timer inside that fires first wakes us in time: one timer
                    // per attempt instead of two.
                    Poll::Pending => match timer.poll_expired_unless_woken(cx, wake_by) {
                        Poll::Ready(()) => Err(deadline_error(Phase::AwaitHeaders)),
                        Poll::Pending => return Poll::Pending,
                    },
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
        bound: Bound,
    }
}

// One enum, not an instant beside an optional timer and a flag: the wrapper is moved with every
// response.
#[derive(Debug)]
enum Bound {
    Unbounded,
    Until(Instant),
    Armed(Pin<Box<Sleep>>),
    Expired,
}

impl<B> DeadlineBody<B> {
    /// Wraps `inner`, failing it if it is still streaming at `deadline`.
    pub fn new(inner: B, deadline: Option<Instant>) -> Self {
        DeadlineBody {
            inner,
            bound: deadline.map_or(Bound::Unbounded, Bound::Until),
        }
    }

    /// The deadline this body must end by, if it is bounded.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.bound {
            Bound::Unbounded | Bound::Expired => None,
            Bound::Until(at) => Some(*at),
            Bound::Armed(sleep) => Some(sleep.deadline()),
        }
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
        let deadline = match this.bound {
            Bound::Unbounded => return this.inner.poll_frame(cx).map(classify_frame),
            Bound::Expired => return Poll::Ready(None),
            Bound::Until(at) => *at,
            // Once the body has had to wait, the timer is armed and checked first, so a body that
            // keeps trickling in cannot outrun the deadline.
            Bound::Armed(sleep) => {
                if sleep.as_mut().poll(cx).is_ready() {
                    *this.bound = Bound::Expired;
                    return Poll::Ready(Some(Err(deadline_error(Phase::ReadBody))));
                }
                sleep.deadline()
            }
        };
        // Whenever the inner body is left pending, the timer below is armed for the deadline:
        // a timer inside that would fire no earlier (the body idle timeout's) can be skipped.
        let polled = {
            let _enforced = backstop_classify::ambient::Enforced::new(deadline);
            this.inner.poll_frame(cx)
        };
        if polled.is_pending()
            && let Bound::Until(at) = *this.bound
        {
            let mut sleep = Box::pin(sleep_until(at));
            if sleep.as_mut().poll(cx).is_ready() {
                *this.bound = Bound::Expired;
                return Poll::Ready(Some(Err(deadline_error(Phase::ReadBody))));
            }
            *this.bound = Bound::Armed(sleep);
        }
        polled.map(classify_frame)
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.bound, Bound::Expired) || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if matches!(self.bound, Bound::Expired) {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

fn classify_frame<D, E: Into<BoxError>>(
    polled: Option<Result<Frame<D>, E>>,
) -> Option<Result<Frame<D>, Error>> {
    polled.map(|frame| frame.map_err(|err| Error::classify(err, Phase::ReadBody)))
}
