//! The client deadline's [`ResponseFuture`]: the inner call run under the ambient deadline, and
//! failed at the deadline unless the response head arrived first.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use backstop_classify::{BoxError, Error, Failure, Phase};
use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::DeadlineBody;
use crate::deadline_error;
use crate::metrics::SIDE_CLIENT;

pin_project! {
    /// The response future of the client [`DeadlineService`](super::DeadlineService).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        pub(super) state: State<F>,
    }
}

pin_project! {
    // One variant per situation keeps the future small: it is moved on every call.
    #[derive(Debug)]
    #[project = StateProj]
    pub(super) enum State<F> {
        Running {
            #[pin]
            inner: F,
            // `None`: no deadline anywhere, the layer only classifies errors. (One variant for
            // both cases lets the inner future be built in place.) Boxed when armed: with an
            // attempt timeout inside bounding every wait it never is
            // (`InnerWaits::BoundedByAttemptTimeout`), and the future stays small.
            timer: Option<DeadlineTimer>,
            covers_body: bool,
            // `false` when the attempt timeout inside wakes the call at the deadline.
            own_timer: bool,
        },
        Failed {
            failure: Failure,
        },
        Done,
    }
}

pub(super) type DeadlineTimer = crate::timer::Timer;

impl<F> ResponseFuture<F> {
    pub(super) fn failed(failure: Failure) -> Self {
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
                own_timer,
            } => {
                let Some(timer) = timer else {
                    return inner.poll(cx).map(|res| finish(res, None));
                };
                let mut timer = Pin::new(timer);
                match timer.as_mut().run(|| inner.poll(cx)) {
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
                    Poll::Pending if *own_timer => match timer.poll_expired(cx) {
                        Poll::Ready(()) => {
                            crate::telemetry::expired(SIDE_CLIENT, None);
                            Err(deadline_error(Phase::AwaitHeaders))
                        }
                        Poll::Pending => return Poll::Pending,
                    },
                    // The attempt timeout inside wakes the call at the deadline (see
                    // `InnerWaits::BoundedByAttemptTimeout`). The clock starts all the same: the
                    // call has had to wait, and every later attempt reads the same instant.
                    Poll::Pending => {
                        timer.deadline();
                        return Poll::Pending;
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
