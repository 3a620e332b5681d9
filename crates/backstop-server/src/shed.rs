//! [`ShedWith503Layer`]: answer `503` + `Retry-After` at once when the server is full, instead of
//! queueing requests until their callers give up.
//!
//! Not named `LoadShed`: tower's `LoadShed` fails the call with an `Overloaded` error when the
//! inner service is not ready; this one counts requests in flight and answers the caller with an
//! HTTP response (`503` + `Retry-After`), whatever the inner service's readiness.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::config::ConfigError;

/// The most requests one [`ShedWith503Layer`] may admit at once.
pub const MAX_IN_FLIGHT: usize = 1 << 20;

/// The `Retry-After` a [`ShedWith503Layer`] may send: 1 s ..= 1 h.
pub const RETRY_AFTER_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);

/// Admits at most `max_in_flight` requests at a time; every request beyond that is answered at
/// once with `503 Service Unavailable` and `Retry-After`, without reaching the handler.
///
/// Queueing an overloaded server's requests only moves the wait into the queue, where callers time
/// out anyway and retry, adding load. Shedding answers fast, tells a well-behaved client when to
/// come back, and keeps the admitted requests fast. A request counts from the call until its
/// response head is ready (a streaming body is not counted).
///
/// All services made from one layer share its limit, so it holds across connections.
///
/// ```
/// use std::time::Duration;
/// use backstop_server::ShedWith503Layer;
///
/// let shed = ShedWith503Layer::new(256).retry_after(Duration::from_secs(1));
/// assert_eq!(shed.in_flight(), 0);
/// // Checked, for settings that come from configuration:
/// assert!(ShedWith503Layer::try_new(0).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct ShedWith503Layer {
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    retry_after: HeaderValue,
    log: Arc<ShedLog>,
}

impl ShedWith503Layer {
    /// At most `max_in_flight` requests at once, clamped to 1 ..= [`MAX_IN_FLIGHT`]; shed ones
    /// are told to retry after 1 s. [`try_new`](Self::try_new) rejects a value out of range
    /// instead.
    pub fn new(max_in_flight: usize) -> ShedWith503Layer {
        let max_in_flight = max_in_flight.clamp(1, MAX_IN_FLIGHT);
        ShedWith503Layer {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            retry_after: HeaderValue::from_static("1"),
            log: Arc::new(ShedLog::new()),
        }
    }

    /// [`new`](Self::new), rejecting a limit outside 1 ..= [`MAX_IN_FLIGHT`] with an error naming
    /// `max_in_flight`.
    pub fn try_new(max_in_flight: usize) -> Result<ShedWith503Layer, ConfigError> {
        if !(1..=MAX_IN_FLIGHT).contains(&max_in_flight) {
            return Err(ConfigError::new(
                "max_in_flight",
                format!("must be between 1 and {MAX_IN_FLIGHT}, got {max_in_flight}"),
            ));
        }
        Ok(ShedWith503Layer::new(max_in_flight))
    }

    /// The `Retry-After` sent with a shed request, in whole seconds, clamped to
    /// [`RETRY_AFTER_RANGE`] (1 s ..= 1 h). [`try_retry_after`](Self::try_retry_after) rejects a
    /// value out of range instead.
    pub fn retry_after(mut self, after: Duration) -> ShedWith503Layer {
        let after = after.clamp(*RETRY_AFTER_RANGE.start(), *RETRY_AFTER_RANGE.end());
        self.retry_after = HeaderValue::from(after.as_secs());
        self
    }

    /// [`retry_after`](Self::retry_after), rejecting a value outside [`RETRY_AFTER_RANGE`] with
    /// an error naming `shed_retry_after`.
    pub fn try_retry_after(self, after: Duration) -> Result<ShedWith503Layer, ConfigError> {
        if !RETRY_AFTER_RANGE.contains(&after) {
            return Err(ConfigError::new(
                "shed_retry_after",
                format!("must be between 1s and 1h, got {after:?}"),
            ));
        }
        Ok(self.retry_after(after))
    }

    /// Requests admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.permits.available_permits()
    }

    /// The limit.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
}

impl<S> Layer<S> for ShedWith503Layer {
    type Service = ShedWith503<S>;

    fn layer(&self, inner: S) -> ShedWith503<S> {
        ShedWith503 {
            inner,
            permits: Arc::clone(&self.permits),
            max_in_flight: self.max_in_flight,
            retry_after: self.retry_after.clone(),
            log: Arc::clone(&self.log),
        }
    }
}

/// The service made by [`ShedWith503Layer`].
#[derive(Debug, Clone)]
pub struct ShedWith503<S> {
    inner: S,
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    retry_after: HeaderValue,
    log: Arc<ShedLog>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ShedWith503<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ShedWith503Future<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => ShedWith503Future {
                state: State::Admitted {
                    inner: self.inner.call(req),
                    permit: Some(permit),
                },
            },
            Err(_) => {
                drop(req);
                let in_flight = self.max_in_flight - self.permits.available_permits();
                self.log.shed(in_flight, self.max_in_flight);
                let mut res = Response::new(ResBody::default());
                *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                res.headers_mut()
                    .insert(http::header::RETRY_AFTER, self.retry_after.clone());
                ShedWith503Future {
                    state: State::Shed {
                        response: Some(res),
                    },
                }
            }
        }
    }
}

pin_project! {
    /// The future of [`ShedWith503`].
    #[derive(Debug)]
    pub struct ShedWith503Future<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F, B> {
        // The request is being handled; the permit is released when its response is ready.
        Admitted {
            #[pin]
            inner: F,
            permit: Option<OwnedSemaphorePermit>,
        },
        // The request was shed; the 503 is ready.
        Shed {
            response: Option<Response<B>>,
        },
    }
}

impl<F, B, E> Future for ShedWith503Future<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Admitted { inner, permit } => {
                let output = std::task::ready!(inner.poll(cx));
                drop(permit.take());
                Poll::Ready(output)
            }
            StateProj::Shed { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_else(|| {
                    // Polled again after completion: answer 503 again rather than panic.
                    let mut res = Response::new(B::default());
                    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    res
                })))
            }
        }
    }
}

/// Reports shed requests: the "request shed" event — at warn level at most once a second per
/// layer (an overload would otherwise log every request it sheds), with how many were shed since
/// the last warning, at debug level in between — and, with the `metrics` feature, the counter
/// [`metrics::SHED`](crate::metrics::SHED).
#[derive(Debug)]
struct ShedLog {
    start: Instant,
    /// When the next warning may be logged, in nanoseconds since `start`.
    next_warning: AtomicU64,
    /// Sheds logged at debug level since the last warning.
    suppressed: AtomicU64,
}

/// The shortest interval between two "request shed" warnings of one layer.
const WARNING_INTERVAL: Duration = Duration::from_secs(1);

impl ShedLog {
    fn new() -> ShedLog {
        ShedLog {
            start: Instant::now(),
            next_warning: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    #[cold]
    #[inline(never)]
    fn shed(&self, in_flight: usize, limit: usize) {
        #[cfg(feature = "metrics")]
        ::metrics::counter!(target: "backstop_server", crate::metrics::SHED).increment(1);
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let next = self.next_warning.load(Ordering::Relaxed);
        let due = now >= next
            && self
                .next_warning
                .compare_exchange(
                    next,
                    now.saturating_add(WARNING_INTERVAL.as_nanos() as u64),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if due {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            tracing::warn!(
                target: "backstop_server",
                in_flight,
                limit,
                suppressed,
                "request shed"
            );
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "backstop_server", in_flight, limit, "request shed");
        }
    }
}
