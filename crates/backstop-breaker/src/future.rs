//! [`ResponseFuture`]: the inner call with its [`Ticket`], or an immediate rejection.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use backstop_classify::{BoxError, Error, Outcome, Phase};
use http::Response;
use pin_project_lite::pin_project;

use crate::gate::rejection;
use crate::ticket::Ticket;

pin_project! {
    /// The future of [`CircuitBreaker`]: the inner call, or an immediate rejection.
    pub struct ResponseFuture<F, Key> {
        // `None`: rejected. A flat struct rather than an enum of states, so the inner future is
        // written where it stays and a rejection is two stores.
        #[pin]
        future: Option<F>,
        // `None` for a call let through unrecorded (metrics-only), and once the result is in.
        ticket: Option<Ticket<Key>>,
    }
}

impl<F, Key> ResponseFuture<F, Key> {
    #[inline]
    pub(crate) fn rejected() -> Self {
        ResponseFuture {
            future: None,
            ticket: None,
        }
    }

    /// The inner call, with its ticket (`None`: let through unrecorded).
    #[inline]
    pub(crate) fn new(future: F, ticket: Option<Ticket<Key>>) -> Self {
        ResponseFuture {
            future: Some(future),
            ticket,
        }
    }
}

impl<F, Key> fmt::Debug for ResponseFuture<F, Key> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match (&self.future, &self.ticket) {
            (None, _) => "rejected",
            (Some(_), Some(_)) => "admitted",
            (Some(_), None) => "passed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<F, E, ResBody, Key> Future for ResponseFuture<F, Key>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Into<BoxError>,
    Key: Clone + fmt::Debug + Send + Sync + 'static,
{
    type Output = Result<Response<ResBody>, Error>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(future) = this.future.as_pin_mut() else {
            return Poll::Ready(Err(rejection()));
        };
        // The output is built first and judged where it lies, so that the response is not
        // copied once more on its way out; the ticket is judged in place, then dropped.
        let output = match ready!(future.poll(cx)) {
            Ok(res) => Ok(res),
            Err(err) => Err(Error::classify(err, Phase::AwaitHeaders)),
        };
        if let Some(ticket) = this.ticket.as_mut() {
            match &output {
                Ok(res) => ticket.finish_response(res),
                Err(err) => ticket.finish(&Outcome::Failure(err.failure())),
            }
            *this.ticket = None;
        }
        Poll::Ready(output)
    }
}
