//! [`RetryLayer`]: the validated configuration every service it makes shares.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use backstop_classify::HttpPolicy;
use http::{HeaderName, StatusCode};
use tower_layer::Layer;

use crate::backoff::Backoff;
use crate::budget::RetryBudget;
use crate::builder::RetryLayerBuilder;
use crate::grpc::GrpcRetryPolicy;
use crate::per_host::PerHost;
use crate::replay::BufferedReplay;
use crate::service::RetryService;

/// Retries failed requests when that is safe, spaced by jittered backoff or the server's
/// `Retry-After`, within a budget and the request's
/// [`Deadline`](backstop_deadline::Deadline).
///
/// See the [crate documentation](crate) for the rules. Build one with [`RetryLayer::builder`];
/// [`RetryLayer::new`] gives the defaults. Services made by one layer (and its clones) share its
/// [`RetryBudget`].
///
/// `R`, the [`ReplayStrategy`](crate::ReplayStrategy), says how a request body is sent again
/// and which body type the inner service gets: [`ReplayBody<B>`](crate::ReplayBody) by default
/// ([`BufferedReplay`]); [`with_replay`](RetryLayer::with_replay) chooses another.
pub struct RetryLayer<P = HttpPolicy, R = BufferedReplay> {
    config: Arc<Config<P>>,
    replay: PhantomData<fn() -> R>,
}

impl<P, R> Clone for RetryLayer<P, R> {
    fn clone(&self) -> Self {
        RetryLayer {
            config: self.config.clone(),
            replay: PhantomData,
        }
    }
}

impl<P, R> fmt::Debug for RetryLayer<P, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.config.fmt(f)
    }
}

/// The layer's settings, checked by [`RetryLayerBuilder::build`], shared by every service and
/// future it makes.
// Laid out by hand (`repr(C)`): what every call reads comes first, on the fewest cache lines
// (two rather than five of this 400-byte struct); what only a retry reads comes after.
#[repr(C)]
pub(crate) struct Config<P> {
    // === read by every call ===
    pub(crate) max_attempts: u32,
    pub(crate) attach_idempotency_key: bool,
    pub(crate) replay_limit: usize,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) attempt_header: Option<HeaderName>,
    pub(crate) policy: P,
    pub(crate) per_host: Option<PerHost>,
    // === read when a retry is considered ===
    /// gRPC's per-method retry policies (A6), `None` when there are none.
    pub(crate) grpc: Option<GrpcRetryPolicy>,
    pub(crate) retry_conflict: bool,
    pub(crate) backoff: Backoff,
    pub(crate) retry_after_statuses: Vec<StatusCode>,
    pub(crate) retry_after_max: Duration,
    pub(crate) idempotency_key: HeaderName,
    pub(crate) seed: u64,
    /// Numbers the request streams of randomness, so a seeded layer is deterministic.
    pub(crate) sequence: AtomicU64,
    pub(crate) key_seed: u64,
}

impl<P> fmt::Debug for Config<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("retry_after_statuses", &self.retry_after_statuses)
            .field("retry_after_max", &self.retry_after_max)
            .field("idempotency_key", &self.idempotency_key)
            .field("attach_idempotency_key", &self.attach_idempotency_key)
            .field("attempt_header", &self.attempt_header)
            .field("replay_limit", &self.replay_limit)
            .field("budget", &self.budget)
            .field("per_host", &self.per_host.as_ref().map(PerHost::template))
            .field("retry_conflict", &self.retry_conflict)
            .field("grpc_methods", &self.grpc)
            .finish()
    }
}

impl RetryLayer<HttpPolicy> {
    /// The defaults: 3 attempts, full-jitter backoff from 50 ms capped at 5 s, `Retry-After`
    /// honoured on 429 and 503 up to 30 s (a longer one ends the retries), a budget of 20 % +
    /// 10/s over 10 s, bodies replayed up to 64 KiB, 409 not retried unless
    /// [`retry_conflict`](RetryLayerBuilder::retry_conflict) opts in, 400 and 422 never.
    pub fn new() -> RetryLayer<HttpPolicy> {
        RetryLayer::from_config(RetryLayerBuilder::new().into_config())
    }

    /// A builder starting from the defaults of [`RetryLayer::new`].
    pub fn builder() -> RetryLayerBuilder<HttpPolicy> {
        RetryLayerBuilder::new()
    }
}

impl Default for RetryLayer<HttpPolicy> {
    fn default() -> Self {
        RetryLayer::new()
    }
}

impl<P> RetryLayer<P> {
    pub(crate) fn from_config(config: Config<P>) -> RetryLayer<P> {
        RetryLayer {
            config: Arc::new(config),
            replay: PhantomData,
        }
    }
}

impl<P, R> RetryLayer<P, R> {
    /// The budget shared by this layer's services, if any.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.config.budget.as_ref()
    }

    /// The same layer (settings, budget) sending request bodies again with the strategy `R2`
    /// instead: its services give the inner service `R2`'s body type.
    pub fn with_replay<R2>(self) -> RetryLayer<P, R2> {
        RetryLayer {
            config: self.config,
            replay: PhantomData,
        }
    }
}

impl<S: Clone, P, R> Layer<S> for RetryLayer<P, R> {
    type Service = RetryService<S, P, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService::new(inner, self.config.clone())
    }
}
