//! [`AttemptTimeoutLayer`]: bounds one attempt, placed inside retry.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use backstop_classify::{BoxError, Error, Failure, Kind, Phase, Timer};
use http::Request;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::ambient::Budget;
use crate::metrics::SIDE_CLIENT;
use crate::propagate::{Prepared, Propagation};
use crate::spare::{AttemptClock, Spares};
use crate::{ConfigError, Deadline, ambient, deadline_failure};

/// The longest attempt timeout [`AttemptTimeoutLayerBuilder::build`] accepts (a day): longer ones
/// are surely a unit mistake. [`AttemptTimeoutLayer::new`] clamps to it.
pub const MAX_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(86_400);

/// Bounds one attempt of a call until its response head arrives. Place it inside retry.
///
/// Each attempt gets `min(attempt timeout, time left)`, where the time left comes from the
/// [`Deadline`] in the request extensions or the [ambient](mod@crate::ambient) one. When the attempt
/// timeout is the shorter, its expiry fails with timed out (attempt), which retry may repeat if the
/// request is idempotent; when the deadline is, it fails with timed out (deadline), which is never
/// retried — also when the two bounds are equal, since nothing of the call's budget is left
/// after it. Where it is wanted ([`Propagation`]: gRPC requests by default, plain HTTP ones when
/// turned on), the time this attempt has is written into the outgoing request, so the callee
/// stops when this attempt is given up.
///
/// Its timer is armed for the earlier of the two bounds, so inside a client
/// [`DeadlineLayer`](crate::DeadlineLayer) built with
/// [`InnerWaits::BoundedByAttemptTimeout`](crate::InnerWaits::BoundedByAttemptTimeout) it is the
/// one timer that wakes the call at the deadline.
///
/// ```
/// use std::time::Duration;
/// use backstop_classify::{Kind, Timer};
/// use backstop_deadline::AttemptTimeoutLayer;
/// use http::{Request, Response};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let svc = ServiceBuilder::new()
///     .layer(AttemptTimeoutLayer::new(Duration::from_millis(300)))
///     .service(service_fn(|_req: Request<()>| async {
///         std::future::pending::<Result<Response<()>, std::io::Error>>().await
///     }));
/// let err = svc.oneshot(Request::new(())).await.unwrap_err();
/// assert_eq!(err.kind(), Kind::TimedOut(Timer::Attempt));
/// assert!(err.failure().may_retry(true)); // a GET may try again
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AttemptTimeoutLayer {
    timeout: Duration,
    propagation: Propagation,
    // The headers for the whole attempt timeout left, formatted once; `None` also when the
    // margin leaves too little to send (see `lazy`).
    prepared: Option<Prepared>,
}

impl AttemptTimeoutLayer {
    /// Attempts bounded by `timeout`, with the default [`Propagation`]: `grpc-timeout` on gRPC
    /// requests, nothing on plain HTTP ones. Never fails, as tower's `TimeoutLayer::new`: a zero
    /// timeout fails every attempt that has to wait, one beyond [`MAX_ATTEMPT_TIMEOUT`] is clamped
    /// to it, and one not longer than the margin plus
    /// [`MIN_PROPAGATED`](crate::propagate::MIN_PROPAGATED) fails the requests that are to carry
    /// a header (gRPC ones) locally. The [builder](AttemptTimeoutLayer::builder) rejects those
    /// instead.
    pub fn new(timeout: Duration) -> AttemptTimeoutLayer {
        AttemptTimeoutLayer::with(timeout.min(MAX_ATTEMPT_TIMEOUT), Propagation::new())
    }

    fn with(timeout: Duration, propagation: Propagation) -> AttemptTimeoutLayer {
        AttemptTimeoutLayer {
            timeout,
            prepared: propagation.prepare(timeout),
            propagation,
        }
    }

    /// Whether an attempt bounded by this timeout alone may start its clock lazily: its headers
    /// were prepared, or none is ever written. (A margin too large for the timeout leaves
    /// nothing to prepare; `Propagation::write` then fails, per request, those that are to carry
    /// a header.) Computed rather than stored: the layer is cloned into every service.
    #[inline]
    fn lazy(&self) -> bool {
        self.prepared.is_some() || !self.propagation.is_enabled()
    }

    /// A builder; see [`AttemptTimeoutLayerBuilder`].
    pub fn builder() -> AttemptTimeoutLayerBuilder {
        AttemptTimeoutLayerBuilder {
            timeout: None,
            propagation: Propagation::new(),
        }
    }
}

/// Builds an [`AttemptTimeoutLayer`]; invalid settings are rejected by [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct AttemptTimeoutLayerBuilder {
    timeout: Option<Duration>,
    propagation: Propagation,
}

impl AttemptTimeoutLayerBuilder {
    /// The bound on one attempt (required; greater than zero, at most [`MAX_ATTEMPT_TIMEOUT`]).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How the time this attempt has is written into the outgoing request (default
    /// [`Propagation::new`]: `grpc-timeout` on gRPC requests only).
    #[must_use]
    pub fn propagation(mut self, propagation: Propagation) -> Self {
        self.propagation = propagation;
        self
    }

    /// The layer, or the first rule the settings break, naming the field: `attempt_timeout` must
    /// be set, greater than zero and at most [`MAX_ATTEMPT_TIMEOUT`]; `propagation.margin` plus
    /// [`MIN_PROPAGATED`](crate::propagate::MIN_PROPAGATED) must not exceed it when propagation is
    /// enabled.
    pub fn build(self) -> Result<AttemptTimeoutLayer, ConfigError> {
        let Some(timeout) = self.timeout else {
            return Err(ConfigError::new("attempt_timeout", "must be set"));
        };
        if timeout.is_zero() {
            return Err(ConfigError::new(
                "attempt_timeout",
                "must be greater than zero",
            ));
        }
        if timeout > MAX_ATTEMPT_TIMEOUT {
            return Err(ConfigError::new(
                "attempt_timeout",
                "must be at most one day",
            ));
        }
        self.propagation.validate_against(
            timeout,
            "must be at least 1 ms shorter than attempt_timeout",
        )?;
        Ok(AttemptTimeoutLayer::with(timeout, self.propagation))
    }
}

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptTimeout {
            inner,
            bounds: self.bounds(),
        }
    }
}

impl AttemptTimeoutLayer {
    /// This layer's rule without a service to wrap: for a client that makes its attempts itself
    /// and wants them bounded exactly as [`AttemptTimeout`] bounds them (the header written, the
    /// same timer kept between attempts), in a future of its own. The bounds of one call of
    /// `bounds` share their kept timers with their clones.
    pub fn bounds(&self) -> AttemptBounds {
        AttemptBounds {
            layer: self.clone(),
            spares: Arc::default(),
        }
    }
}

/// The service made by [`AttemptTimeoutLayer`].
///
/// Its attempts hand their timers back when they end, for the next attempts (through this
/// service or its clones) to move to their own deadlines: that is cheaper than registering a new
/// timer with the runtime for every attempt and removing it afterwards.
#[derive(Debug, Clone)]
pub struct AttemptTimeout<S> {
    inner: S,
    bounds: AttemptBounds,
}

impl<S> AttemptTimeout<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqBody> Service<Request<ReqBody>> for AttemptTimeout<S>
where
    S: Service<Request<ReqBody>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|err| Error::classify(err, Phase::Local))
    }

    #[inline]
    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // One call of the inner service, so its future is built in place: the bound too, from
        // its parts, where `AttemptBounds::start`'s finished `AttemptBound` was one more copy.
        match self.bounds.plan(&mut req) {
            Ok((budget, timer)) => ResponseFuture {
                state: State::Running {
                    inner: self.inner.call(req),
                    bound: AttemptBound {
                        clock: AttemptClock::new(budget, self.bounds.spares.clone()),
                        timer,
                    },
                },
            },
            Err(failure) => ResponseFuture::failed(failure),
        }
    }
}

/// What an [`AttemptTimeoutLayer`] bounds attempts by, and the timers its attempts hand back:
/// see [`AttemptTimeoutLayer::bounds`]. Clones share the timers.
#[derive(Debug, Clone)]
pub struct AttemptBounds {
    layer: AttemptTimeoutLayer,
    spares: Arc<Spares>,
}

impl AttemptBounds {
    /// Starts an attempt of `req`: its bound (the earlier of the attempt timeout and the
    /// deadline), with the time it has written into `req` where [`Propagation`] applies; or,
    /// when it must not be sent (the deadline has passed, or too little is left to tell the
    /// callee), why.
    #[inline]
    pub fn start<B>(&self, req: &mut Request<B>) -> Result<AttemptBound, Failure> {
        let (budget, timer) = self.plan(req)?;
        Ok(AttemptBound {
            clock: AttemptClock::new(budget, self.spares.clone()),
            timer,
        })
    }

    /// What bounds this attempt and which timer it counts as, with the headers written; or why
    /// it must not be sent.
    #[inline]
    fn plan<B>(&self, req: &mut Request<B>) -> Result<(Budget, Timer), Failure> {
        let timeout = self.layer.timeout;
        // With no deadline on the request and none ambient, or only an ambient one whose clock
        // has not started, the attempt's clock is read only if it has to wait. A deadline that
        // has not started starts no earlier than this call, so the timeouts compare as their
        // instants would: a shorter attempt timeout is the earlier bound; an equal one ends with
        // the call's budget (whichever timer fires first, the deadline layer's or ours).
        if self.layer.lazy() && Deadline::of(req).is_none() {
            let timer = match ambient::peek() {
                None => Some(Timer::Attempt),
                Some(Budget::NotStarted(outer)) if timeout < outer => Some(Timer::Attempt),
                // Nothing would be left of the call's budget when this attempt ends: its expiry
                // is the deadline's, and must not be retried.
                Some(Budget::NotStarted(outer)) if timeout == outer => Some(Timer::Deadline),
                _ => None,
            };
            if let Some(timer) = timer {
                if let Some(prepared) = &self.layer.prepared {
                    self.layer.propagation.write_prepared(req, prepared);
                }
                return Ok((Budget::NotStarted(timeout), timer));
            }
        }
        // Reading the deadline may start its clock; reading ours only afterwards means a
        // deadline starting with this attempt never looks later than an equal bound of ours
        // (time passes between two readings of a real clock). Both bounds are then instants
        // compared against this one `now`.
        let deadline = Deadline::current(req);
        let now = Instant::now();
        let own = now + timeout;
        match deadline {
            // Equal counts as the deadline: nothing of the call's budget is left after it.
            Some(deadline) if deadline.instant() <= own => {
                if deadline.instant() <= now {
                    crate::telemetry::expired(SIDE_CLIENT, None);
                    return Err(deadline_failure(Phase::Local));
                }
                self.layer.propagation.write(req, deadline.instant(), now)?;
                Ok((Budget::At(deadline), Timer::Deadline))
            }
            _ => {
                self.layer.propagation.write(req, own, now)?;
                Ok((Budget::At(Deadline::at(own)), Timer::Attempt))
            }
        }
    }
}

/// The bound on one attempt, from [`AttemptBounds::start`]. Its timer is armed only when the
/// attempt first has to wait, and handed back to the bounds for a later attempt when this is dropped.
#[derive(Debug)]
pub struct AttemptBound {
    clock: AttemptClock,
    timer: Timer,
}

impl AttemptBound {
    /// Ready with the attempt's timeout error once its time is up: timed out (attempt), or
    /// timed out (deadline) when the deadline was the earlier bound, in phase awaiting headers
    /// (the request may have reached the peer). Poll it when the attempt has to wait.
    #[inline]
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Error> {
        ready!(self.clock.poll_expired(cx));
        if self.timer == Timer::Deadline {
            crate::telemetry::expired(SIDE_CLIENT, None);
        }
        Poll::Ready(Error::new(Kind::TimedOut(self.timer), Phase::AwaitHeaders))
    }
}

impl<F> ResponseFuture<F> {
    fn failed(failure: Failure) -> Self {
        ResponseFuture {
            state: State::Failed { failure },
        }
    }
}

pin_project! {
    /// The response future of [`AttemptTimeout`].
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
            bound: AttemptBound,
        },
        Failed {
            failure: Failure,
        },
        Done,
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        let output = match state.as_mut().project() {
            StateProj::Running { inner, bound } => match inner.poll(cx) {
                // The inner future has finished: nothing to cancel, and returning at once lets
                // the response be built where the caller wants it.
                Poll::Ready(Ok(res)) => return Poll::Ready(Ok(res)),
                Poll::Ready(Err(err)) => Err(Error::classify(err, Phase::AwaitHeaders)),
                // The request may have reached the peer: an attempt timeout is retryable only for
                // idempotent requests (phase "awaiting headers").
                Poll::Pending => match bound.poll_expired(cx) {
                    Poll::Ready(err) => Err(err),
                    Poll::Pending => return Poll::Pending,
                },
            },
            StateProj::Failed { failure } => Err(Error::from_failure(*failure)),
            StateProj::Done => Err(crate::polled_after_completion()),
        };
        // Dropping the inner future here is what cancels an attempt that ran out of time.
        state.set(State::Done);
        Poll::Ready(output)
    }
}
