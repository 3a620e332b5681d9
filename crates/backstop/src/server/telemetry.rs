//! [`RequestTelemetry`]: the `http.server.request` span of every request a [`ServerStack`]
//! serves, and with the `metrics` feature `http.server.request.duration` and
//! `http.server.active_requests` (see [`crate::metrics`]).
//!
//! The route (`http.route`) is axum's [`MatchedPath`], which axum's router puts in the request
//! before the layers of `Router::layer` and `Router::route_layer` see it; a request no route
//! matched (a fallback) has none, and the raw path is never used instead (it would put every
//! distinct URL in a label). When stacks are nested (one on the router, a tighter one on a
//! route), only the outermost observes a request: the request carries a marker past it.
//!
//! [`ServerStack`]: crate::ServerStack

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::MatchedPath;
use backstop_classify::{Kind, Outcome};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;
use tracing::Span;
use tracing::field::Empty;

/// The service that observes each request around a [`ServerStack`](crate::ServerStack)'s rules:
/// its span, entered whenever the rules and the handler are polled (so a
/// [`Client`](crate#features) call inside the handler is its child), and its metrics.
#[derive(Debug, Clone)]
pub struct RequestTelemetry<S> {
    inner: S,
}

impl<S> RequestTelemetry<S> {
    pub(super) fn new(inner: S) -> Self {
        RequestTelemetry { inner }
    }
}

/// In a request's extensions once a [`RequestTelemetry`] observes it, so that a nested one
/// does not count it twice.
#[derive(Debug, Clone, Copy)]
struct Observed;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestTelemetry<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = RequestTelemetryFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        if req.extensions().get::<Observed>().is_some() {
            return RequestTelemetryFuture {
                inner: self.inner.call(req),
                observing: None,
            };
        }
        req.extensions_mut().insert(Observed);
        let route = req.extensions().get::<MatchedPath>().cloned();
        let span = request_span(&req, route.as_ref());
        #[cfg(feature = "metrics")]
        let active = recorded::Active::start(req.method(), route.as_ref());
        let inner = span.in_scope(|| self.inner.call(req));
        RequestTelemetryFuture {
            inner,
            observing: Some(Observing {
                span,
                #[cfg(feature = "metrics")]
                active,
            }),
        }
    }
}

fn request_span<B>(req: &Request<B>, route: Option<&MatchedPath>) -> Span {
    let method = req.method();
    let span = tracing::info_span!(
        target: "backstop",
        "http.server.request",
        otel.name = Empty,
        otel.kind = "server",
        http.request.method = method.as_str(),
        http.route = route.map(MatchedPath::as_str),
        url.scheme = req.uri().scheme_str(),
        http.response.status_code = Empty,
        error.type = Empty,
    );
    if !span.is_disabled() {
        match route {
            Some(route) => span.record(
                "otel.name",
                tracing::field::display(format_args!("{method} {}", route.as_str())),
            ),
            None => span.record("otel.name", method.as_str()),
        };
    }
    span
}

/// What an observed request carries until its response head leaves.
struct Observing {
    span: Span,
    #[cfg(feature = "metrics")]
    active: recorded::Active,
}

impl Observing {
    fn finish<B, E>(self, result: &Result<Response<B>, E>) {
        let (status, error) = match result {
            Ok(res) => {
                let error = match Outcome::of(res.extensions()) {
                    Some(Outcome::Failure(failure)) => Some(failure.kind().label()),
                    _ => None,
                };
                (Some(res.status()), error)
            }
            // The handler's own error type: nothing to classify it by.
            Err(_) => (None, Some(Kind::Other.label())),
        };
        if !self.span.is_disabled() {
            if let Some(status) = status {
                self.span
                    .record("http.response.status_code", status.as_u16());
            }
            if let Some(error) = error {
                self.span.record("error.type", error);
            }
        }
        #[cfg(feature = "metrics")]
        self.active.finish(status, error);
        // `self.active` drops here: the request leaves `http.server.active_requests`.
    }
}

pin_project! {
    /// The future of [`RequestTelemetry`].
    pub struct RequestTelemetryFuture<F> {
        #[pin]
        inner: F,
        observing: Option<Observing>,
    }
}

impl<F> std::fmt::Debug for RequestTelemetryFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTelemetryFuture")
            .field("observed", &self.observing.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for RequestTelemetryFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.observing {
            Some(observing) => {
                let _entered = observing.span.enter();
                ready!(this.inner.poll(cx))
            }
            None => ready!(this.inner.poll(cx)),
        };
        if let Some(observing) = this.observing.take() {
            observing.finish(&result);
        }
        Poll::Ready(result)
    }
}

#[cfg(feature = "metrics")]
mod recorded {
    use std::sync::Arc;

    use axum::extract::MatchedPath;
    use http::{Method, StatusCode};
    use metrics::{Key, Label};
    use tokio::time::Instant;

    use crate::metrics::{
        ERROR_TYPE, METHOD, ROUTE, SERVER_ACTIVE_REQUESTS, SERVER_REQUEST_DURATION, STATUS_CODE,
    };
    use crate::telemetry::keys::{self, KeyCache};
    use crate::telemetry::{method_label, route_label, status_label};

    /// `http.server.active_requests`, by method.
    static ACTIVE: KeyCache<&'static str> = KeyCache::new();
    /// `http.server.request.duration`, by method, route, status and error type.
    type DurationLabels = (
        &'static str,
        Option<Arc<str>>,
        Option<&'static str>,
        Option<&'static str>,
    );
    static DURATIONS: KeyCache<DurationLabels> = KeyCache::new();

    /// A request in flight: counted in `http.server.active_requests` until dropped (answered,
    /// or dropped with its connection).
    pub(super) struct Active {
        method: &'static str,
        route: Option<Arc<str>>,
        started: Instant,
    }

    impl Active {
        pub(super) fn start(method: &Method, route: Option<&MatchedPath>) -> Active {
            let method = method_label(method);
            active(method, 1.0);
            Active {
                method,
                route: route.map(|route| route_label(route.as_str())),
                started: Instant::now(),
            }
        }

        pub(super) fn finish(&self, status: Option<StatusCode>, error: Option<&'static str>) {
            let elapsed = self.started.elapsed().as_secs_f64();
            DURATIONS.with(
                (
                    self.method,
                    self.route.clone(),
                    status.map(status_label),
                    error,
                ),
                |(method, route, status, error)| {
                    let mut labels = vec![Label::new(METHOD, *method)];
                    if let Some(route) = route {
                        labels.push(Label::new(ROUTE, route.clone()));
                    }
                    if let Some(status) = status {
                        labels.push(Label::new(STATUS_CODE, *status));
                    }
                    if let Some(error) = error {
                        labels.push(Label::new(ERROR_TYPE, *error));
                    }
                    Key::from_parts(SERVER_REQUEST_DURATION, labels)
                },
                |key| keys::histogram(key, elapsed),
            );
        }
    }

    impl Drop for Active {
        fn drop(&mut self) {
            active(self.method, -1.0);
        }
    }

    fn active(method: &'static str, delta: f64) {
        ACTIVE.with(
            method,
            |method| Key::from_parts(SERVER_ACTIVE_REQUESTS, vec![Label::new(METHOD, *method)]),
            |key| keys::gauge(key, delta),
        );
    }
}
