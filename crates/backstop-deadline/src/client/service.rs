//! [`DeadlineService`]: decides the deadline of each call and makes it ambient for the inner one.

use std::task::{Context, Poll};

use backstop_classify::{BoxError, Error, Phase};
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::future::{DeadlineTimer, State};
use super::{Covers, DeadlineBody, DeadlineLayer, InnerWaits, ResponseFuture};
use crate::ambient::Entered;

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
        let budget = match self.layer.plan(&mut req) {
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
