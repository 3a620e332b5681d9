//! [`DeadlineService`]: decides the deadline of each call and makes it ambient for the inner one.

use std::task::{Context, Poll};

use backstop_classify::{BoxError, Error, Failure, Phase};
use http::{Request, Response};
use http_body::Body;
use tokio::time::Instant;
use tower_service::Service;

use super::future::{DeadlineTimer, State};
use super::{Carry, Covers, DeadlineBody, DeadlineLayer, InnerWaits, ResponseFuture};
use crate::ambient::{self, Budget, Entered};
use crate::metrics::SIDE_CLIENT;
use crate::{Deadline, deadline_failure};

/// The service made by the client [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    layer: DeadlineLayer,
}

impl<S> DeadlineService<S> {
    pub(super) fn new(inner: S, layer: DeadlineLayer) -> Self {
        DeadlineService { inner, layer }
    }

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
        let timer = budget.map(DeadlineTimer::new);
        let covers_body = self.layer.covers == Covers::Body;
        let own_timer = self.layer.inner_waits == InnerWaits::Unbounded;
        // The inner call last, so its future is written straight into the state.
        ResponseFuture {
            state: State::Running {
                inner: self.inner.call(req),
                timer,
                covers_body,
                own_timer,
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
            && self.layer.lazy(timeout)
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
            crate::telemetry::expired(SIDE_CLIENT, None);
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
