//! [`ClassifyLayer`]: classifies every response and error once, for every layer outside it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{BoxError, Error};
use crate::failure::{Outcome, Phase};
use crate::policy::{Classify, HttpPolicy};

/// Classifies the responses and errors of the service it wraps.
///
/// - Errors become one typed [`Error`] (kind, phase, retryable; the original kept as `source()`).
/// - Every response gets its [`Outcome`] in its extensions, so outer layers (retry, breaker,
///   metrics) read the verdict instead of re-deriving it.
/// - Errors while reading the response body become [`Error`]s in phase
///   [`ReadBody`](Phase::ReadBody).
/// - When the policy waits for trailers (gRPC), a [`TrailerOutcome`] in the extensions receives
///   the verdict at the end of the body.
///
/// ```
/// use backstop_classify::{ClassifyLayer, Outcome, Kind};
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Empty;
/// use bytes::Bytes;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), backstop_classify::Error> {
/// let svc = ServiceBuilder::new()
///     .layer(ClassifyLayer::new())
///     .service(service_fn(|_req: Request<Empty<Bytes>>| async {
///         let mut res = Response::new(Empty::<Bytes>::new());
///         *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
///         Ok::<_, std::io::Error>(res)
///     }));
/// let res = svc.oneshot(Request::new(Empty::new())).await?;
/// let outcome = Outcome::of(res.extensions()).copied();
/// assert_eq!(
///     outcome.and_then(|o| o.failure().map(|f| f.kind())),
///     Some(Kind::Status(StatusCode::SERVICE_UNAVAILABLE))
/// );
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClassifyLayer<P = HttpPolicy> {
    policy: P,
}

impl ClassifyLayer<HttpPolicy> {
    /// A layer with the default [`HttpPolicy`].
    pub fn new() -> Self {
        ClassifyLayer {
            policy: HttpPolicy::new(),
        }
    }
}

impl<P> ClassifyLayer<P> {
    /// A layer with a policy of your own.
    pub fn with_policy(policy: P) -> Self {
        ClassifyLayer { policy }
    }
}

impl<S, P: Clone> Layer<S> for ClassifyLayer<P> {
    type Service = ClassifyService<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        ClassifyService {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service made by [`ClassifyLayer`].
#[derive(Debug, Clone)]
pub struct ClassifyService<S, P = HttpPolicy> {
    inner: S,
    policy: P,
}

impl<S, P> ClassifyService<S, P> {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: S, policy: P) -> Self {
        ClassifyService { inner, policy }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, P, ReqBody, ResBody> Service<Request<ReqBody>> for ClassifyService<S, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    P: Classify,
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ClassifiedBody<ResBody, P>>;
    type Error = Error;
    type Future = ResponseFuture<S::Future, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|err| classify_with(&self.policy, err.into(), Phase::Local))
    }

    // Always inlined into the layer outside, which then builds this future where it keeps it
    // instead of receiving it and copying it in.
    #[inline(always)]
    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(req),
            policy: Some(self.policy.clone()),
        }
    }
}

/// Classifies `err` with `policy`, unless it already is a backstop [`Error`].
fn classify_with<P: Classify>(policy: &P, err: BoxError, phase_hint: Phase) -> Error {
    match err.downcast::<Error>() {
        Ok(ours) => *ours,
        Err(other) => {
            Error::from_failure(policy.classify_error(&*other, phase_hint)).with_source(other)
        }
    }
}

pin_project! {
    /// The future of [`ClassifyService`].
    #[derive(Debug)]
    pub struct ResponseFuture<F, P> {
        #[pin]
        inner: F,
        policy: Option<P>,
    }
}

impl<F, P, ResBody, E> Future for ResponseFuture<F, P>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Into<BoxError>,
    P: Classify,
    ResBody: Body,
{
    type Output = Result<Response<ClassifiedBody<ResBody, P>>, Error>;

    // Always inlined into the layer outside: the response is then written once, where that
    // layer reads it, instead of being returned and copied again (it is a few hundred bytes).
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(policy) = this.policy.take() else {
            return Poll::Ready(Err(Error::new(crate::Kind::Other, Phase::Local)));
        };
        match result {
            Ok(res) => Poll::Ready(Ok(classify_response(policy, res))),
            Err(err) => Poll::Ready(Err(classify_with(&policy, err.into(), Phase::AwaitHeaders))),
        }
    }
}

/// Stores the verdict in the response's extensions and wraps its body; the head stays where it
/// is (no `into_parts` and `from_parts`, each a copy of the whole head).
#[inline]
fn classify_response<P: Classify, B>(
    policy: P,
    mut res: Response<B>,
) -> Response<ClassifiedBody<B, P>> {
    let outcome = policy.classify_response(res.status(), res.headers());
    res.extensions_mut().insert(outcome);
    let trailers = if policy.watches_trailers(res.status(), res.headers()) {
        let slot = TrailerOutcome::default();
        res.extensions_mut().insert(slot.clone());
        Some(slot)
    } else {
        None
    };
    res.map(|inner| ClassifiedBody {
        inner,
        policy,
        trailers,
    })
}

/// The verdict on a response's trailers, filled in when the body ends.
///
/// Present in a response's extensions only when the policy waits for trailers (gRPC without a
/// status in the headers). Clone it out of the extensions before consuming the body, then read it
/// once the body has ended.
#[derive(Debug, Clone, Default)]
pub struct TrailerOutcome(Arc<OnceLock<Outcome>>);

impl TrailerOutcome {
    /// The verdict, once the body has ended; `None` while it is still streaming.
    pub fn get(&self) -> Option<Outcome> {
        self.0.get().copied()
    }

    fn set(&self, outcome: Outcome) {
        // The first verdict stands; a body cannot end twice.
        let _ = self.0.set(outcome);
    }
}

pin_project! {
    /// A response body whose errors are classified [`Error`]s in phase
    /// [`ReadBody`](Phase::ReadBody), and whose trailers are classified when the policy asks.
    #[derive(Debug)]
    pub struct ClassifiedBody<B, P> {
        #[pin]
        inner: B,
        policy: P,
        trailers: Option<TrailerOutcome>,
    }
}

impl<B, P> ClassifiedBody<B, P> {
    /// Consumes the wrapper, returning the inner body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B, P> Body for ClassifiedBody<B, P>
where
    B: Body,
    B::Error: Into<BoxError>,
    P: Classify,
{
    type Data = B::Data;
    type Error = Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        // Every frame passes through as it came, only its error mapped; the trailer slot, there
        // only when the policy waits for trailers (gRPC), is filled on the way.
        if let Some(slot) = &*this.trailers {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        slot.set(this.policy.classify_trailers(trailers));
                    }
                }
                // A stream that ends without trailers is judged as if they were empty.
                Poll::Ready(None) => {
                    slot.set(this.policy.classify_trailers(&http::HeaderMap::new()));
                }
                Poll::Ready(Some(Err(_))) | Poll::Pending => {}
            }
        }
        polled.map_err(|err| {
            let err = classify_body_error(&*this.policy, err.into());
            if let Some(slot) = &*this.trailers {
                slot.set(Outcome::Failure(err.failure()));
            }
            err
        })
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body error happened after the response head arrived, whatever its chain suggests; a
/// backstop error raised by an inner layer keeps its own classification.
fn classify_body_error<P: Classify>(policy: &P, err: BoxError) -> Error {
    match err.downcast::<Error>() {
        Ok(ours) => *ours,
        Err(other) => {
            let failure = policy.classify_error(&*other, Phase::ReadBody);
            Error::from_failure(failure.with_phase(Phase::ReadBody)).with_source(other)
        }
    }
}
