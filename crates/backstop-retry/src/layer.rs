//! [`RetryLayer`], [`RetryService`] and their [`ResponseFuture`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use backstop_classify::{
    BoxError, Classify, Error, Failure, HttpPolicy, Kind, Outcome, Phase, Retryable,
};
use backstop_deadline::Deadline;
use http::uri::Authority;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, request::Parts};
use http_body::Body;
use pin_project_lite::pin_project;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

use crate::ConfigError;
use crate::backoff::{Backoff, Jitter, MAX_BACKOFF_CAP};
use crate::budget::{RetryBudget, RetryBudgetBuilder};
use crate::info::{MAX_ATTEMPTS_LIMIT, RetryInfo, RetryOverride, StopReason};
use crate::replay::{DEFAULT_REPLAY_LIMIT, Replay, ReplayBody};

/// The largest replay buffer a configuration accepts: 16 MiB.
pub const MAX_REPLAY_LIMIT: usize = 16 * 1024 * 1024;

static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Retries failed requests when that is safe, spaced by jittered backoff or the server's
/// `Retry-After`, within a budget and the request's [`Deadline`].
///
/// See the [crate documentation](crate) for the rules. Build one with [`RetryLayer::builder`];
/// [`RetryLayer::new`] gives the defaults. Services made by one layer (and its clones) share its
/// [`RetryBudget`].
pub struct RetryLayer<P = HttpPolicy> {
    config: Arc<Config<P>>,
}

impl<P> Clone for RetryLayer<P> {
    fn clone(&self) -> Self {
        RetryLayer {
            config: self.config.clone(),
        }
    }
}

impl<P> fmt::Debug for RetryLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.config.fmt(f)
    }
}

struct Config<P> {
    max_attempts: u32,
    backoff: Backoff,
    retry_after_statuses: Vec<StatusCode>,
    retry_after_max: Duration,
    idempotency_key: HeaderName,
    attach_idempotency_key: bool,
    attempt_header: Option<HeaderName>,
    replay_limit: usize,
    budget: Option<RetryBudget>,
    per_host: Option<PerHost>,
    retry_conflict: bool,
    seed: u64,
    /// Numbers the request streams of randomness, so a seeded layer is deterministic.
    sequence: AtomicU64,
    key_seed: u64,
    policy: P,
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
            .field("per_host", &self.per_host.as_ref().map(|p| &p.template))
            .field("retry_conflict", &self.retry_conflict)
            .finish()
    }
}

impl RetryLayer<HttpPolicy> {
    /// The defaults: 3 attempts, full-jitter backoff from 50 ms capped at 5 s, `Retry-After`
    /// honoured on 429 and 503 up to 30 s (a longer one ends the retries), a budget of 20 % +
    /// 10/s over 10 s, bodies replayed up to 64 KiB, 409 not retried unless
    /// [`retry_conflict`](RetryLayerBuilder::retry_conflict) opts in, 400 and 422 never.
    pub fn new() -> RetryLayer<HttpPolicy> {
        RetryLayer {
            config: Arc::new(RetryLayerBuilder::new().into_config()),
        }
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
    /// The budget shared by this layer's services, if any.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.config.budget.as_ref()
    }
}

impl<S: Clone, P> Layer<S> for RetryLayer<P> {
    type Service = RetryService<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            shared: Arc::new(Shared {
                config: self.config.clone(),
                spare: Mutex::new(inner.clone()),
            }),
            inner,
        }
    }
}

/// Builds a [`RetryLayer`]; [`build`](RetryLayerBuilder::build) rejects invalid values.
pub struct RetryLayerBuilder<P = HttpPolicy> {
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    jitter: Jitter,
    retry_after_statuses: Vec<StatusCode>,
    retry_after_max: Duration,
    idempotency_key: HeaderName,
    attach_idempotency_key: bool,
    attempt_header: Option<HeaderName>,
    replay_limit: usize,
    budget: Option<RetryBudget>,
    per_host: Option<RetryBudgetBuilder>,
    retry_conflict: bool,
    seed: Option<u64>,
    policy: P,
}

impl<P> fmt::Debug for RetryLayerBuilder<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayerBuilder")
            .field("max_attempts", &self.max_attempts)
            .field("base_delay", &self.base_delay)
            .field("max_delay", &self.max_delay)
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}

impl RetryLayerBuilder<HttpPolicy> {
    fn new() -> Self {
        let backoff = Backoff::default();
        RetryLayerBuilder {
            max_attempts: 3,
            base_delay: backoff.base(),
            max_delay: backoff.cap(),
            jitter: backoff.jitter(),
            retry_after_statuses: vec![
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::SERVICE_UNAVAILABLE,
            ],
            retry_after_max: Duration::from_secs(30),
            idempotency_key: IDEMPOTENCY_KEY.clone(),
            attach_idempotency_key: false,
            attempt_header: None,
            replay_limit: DEFAULT_REPLAY_LIMIT,
            budget: Some(RetryBudget::default()),
            per_host: None,
            retry_conflict: false,
            seed: None,
            policy: HttpPolicy::new(),
        }
    }
}

impl<P> RetryLayerBuilder<P> {
    /// Attempts per request, the first included (default 3, from 1 to
    /// [`MAX_ATTEMPTS_LIMIT`]).
    #[must_use]
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// The first backoff delay before jitter (default 50 ms).
    #[must_use]
    pub fn base_delay(mut self, base: Duration) -> Self {
        self.base_delay = base;
        self
    }

    /// The longest backoff delay, jitter included (default 5 s, at most one hour).
    #[must_use]
    pub fn max_delay(mut self, cap: Duration) -> Self {
        self.max_delay = cap;
        self
    }

    /// The jitter mode (default [`Jitter::Full`]).
    #[must_use]
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Base, cap and jitter at once.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.base_delay = backoff.base();
        self.max_delay = backoff.cap();
        self.jitter = backoff.jitter();
        self
    }

    /// The statuses whose `Retry-After` replaces the backoff (default 429 and 503). gRPC's
    /// `grpc-retry-pushback-ms` is always honoured.
    #[must_use]
    pub fn retry_after_statuses(mut self, statuses: &[StatusCode]) -> Self {
        self.retry_after_statuses = statuses.to_vec();
        self
    }

    /// The longest server-requested wait honoured (default 30 s, at most one hour). A server
    /// that asks for longer (`Retry-After`, `grpc-retry-pushback-ms`) is not retried at all: its
    /// response comes back as it is, so the caller sees its `Retry-After` and no retry goes out
    /// earlier than the server asked.
    #[must_use]
    pub fn retry_after_max(mut self, max: Duration) -> Self {
        self.retry_after_max = max;
        self
    }

    /// The header that marks a non-idempotent request as safe to repeat (default
    /// `idempotency-key`).
    #[must_use]
    pub fn idempotency_key_header(mut self, name: HeaderName) -> Self {
        self.idempotency_key = name;
        self
    }

    /// Attach a fresh idempotency key (a random UUID) to every non-idempotent request that has
    /// none, identical on every attempt, so it may be retried (default off: the server must
    /// understand the header).
    #[must_use]
    pub fn attach_idempotency_key(mut self, attach: bool) -> Self {
        self.attach_idempotency_key = attach;
        self
    }

    /// Send the attempt number (`1`, `2`, …) in this header on every attempt, so servers see
    /// retries (default off).
    #[must_use]
    pub fn attempt_header(mut self, name: HeaderName) -> Self {
        self.attempt_header = Some(name);
        self
    }

    /// The most request-body bytes kept for replay (default 64 KiB, at most
    /// [`MAX_REPLAY_LIMIT`]); a longer body is sent once and not retried.
    #[must_use]
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.replay_limit = bytes;
        self
    }

    /// The budget shared by this layer's services (default: [`RetryBudget::default`]). Pass a
    /// clone of one budget to several layers to share it.
    #[must_use]
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Also give every host (the request URI's authority) a budget of its own built like
    /// `template`, so one failing host cannot spend the retries of the others. A retry then needs
    /// both the host's budget and the client's (if any). Hosts beyond the 10 000th share one
    /// overflow budget. Off by default: it takes a lock per request.
    #[must_use]
    pub fn budget_per_host(mut self, template: RetryBudgetBuilder) -> Self {
        self.per_host = Some(template);
        self
    }

    /// No budget: every retryable failure is retried up to the attempt limit.
    #[must_use]
    pub fn no_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// Retry 409 Conflict, if the request may be retried at all (idempotent or keyed). Default
    /// off: a 409 usually means a lost race (an edit conflict, a version mismatch) that a replay
    /// would lose again; turn it on for servers that answer 409 for "a request with this
    /// `Idempotency-Key` is still in progress".
    #[must_use]
    pub fn retry_conflict(mut self, retry: bool) -> Self {
        self.retry_conflict = retry;
        self
    }

    /// Seeds the jitter, making delays reproducible (default: seeded from the OS). Idempotency
    /// keys are always drawn from an OS-seeded source, so they never repeat across processes.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The policy classifying responses that carry no [`Outcome`] (no `ClassifyLayer` inside
    /// this layer) and errors that are not backstop [`Error`]s.
    pub fn policy<Q: Classify>(self, policy: Q) -> RetryLayerBuilder<Q> {
        RetryLayerBuilder {
            max_attempts: self.max_attempts,
            base_delay: self.base_delay,
            max_delay: self.max_delay,
            jitter: self.jitter,
            retry_after_statuses: self.retry_after_statuses,
            retry_after_max: self.retry_after_max,
            idempotency_key: self.idempotency_key,
            attach_idempotency_key: self.attach_idempotency_key,
            attempt_header: self.attempt_header,
            replay_limit: self.replay_limit,
            budget: self.budget,
            per_host: self.per_host,
            retry_conflict: self.retry_conflict,
            seed: self.seed,
            policy,
        }
    }

    /// The layer, or the first rule broken.
    pub fn build(self) -> Result<RetryLayer<P>, ConfigError> {
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                "max_attempts",
                "must be between 1 and 10 (MAX_ATTEMPTS_LIMIT)",
            ));
        }
        Backoff::new(self.base_delay, self.max_delay, self.jitter)?;
        if self.retry_after_max > MAX_BACKOFF_CAP {
            return Err(ConfigError::new(
                "retry_after_max",
                "must be at most one hour",
            ));
        }
        if self.replay_limit > MAX_REPLAY_LIMIT {
            return Err(ConfigError::new("replay_limit", "must be at most 16 MiB"));
        }
        if self.attempt_header.as_ref() == Some(&self.idempotency_key) {
            return Err(ConfigError::new(
                "attempt_header",
                "must differ from the idempotency key header",
            ));
        }
        let per_host = match &self.per_host {
            Some(template) => Some(PerHost {
                overflow: template.clone().build()?,
                template: template.clone(),
                budgets: Mutex::new(HashMap::new()),
            }),
            None => None,
        };
        let mut config = self.into_config();
        config.per_host = per_host;
        Ok(RetryLayer {
            config: Arc::new(config),
        })
    }

    fn into_config(self) -> Config<P> {
        let mut os = SmallRng::from_os_rng();
        Config {
            max_attempts: self.max_attempts,
            backoff: Backoff::new(self.base_delay, self.max_delay, self.jitter).unwrap_or_default(),
            retry_after_statuses: self.retry_after_statuses,
            retry_after_max: self.retry_after_max,
            idempotency_key: self.idempotency_key,
            attach_idempotency_key: self.attach_idempotency_key,
            attempt_header: self.attempt_header,
            replay_limit: self.replay_limit,
            budget: self.budget,
            per_host: None,
            retry_conflict: self.retry_conflict,
            seed: self.seed.unwrap_or_else(|| os.random()),
            sequence: AtomicU64::new(0),
            key_seed: os.random(),
            policy: self.policy,
        }
    }
}

/// The service made by [`RetryLayer`].
pub struct RetryService<S, P = HttpPolicy> {
    inner: S,
    shared: Arc<Shared<S, P>>,
}

/// What a service and its futures share: one reference count per call for both.
struct Shared<S, P> {
    config: Arc<Config<P>>,
    /// An instance of the inner service for retries, cloned from only when a retry happens: the
    /// first attempt uses the service's own instance, so a call that needs no retry clones no
    /// service (a whole client stack below costs a dozen reference counts and an allocation to
    /// clone).
    spare: Mutex<S>,
}

impl<S: Clone, P> Clone for RetryService<S, P> {
    fn clone(&self) -> Self {
        RetryService {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, P> fmt::Debug for RetryService<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryService")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<S, P> RetryService<S, P> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// Whether `method` is idempotent by RFC 9110 §9.2.2 (GET, HEAD, OPTIONS, TRACE, PUT, DELETE):
/// the rule this layer uses to decide what may be sent twice, for code that must agree with it
/// (e.g. a gateway reserving memory for the bodies this layer will keep).
pub fn is_idempotent_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Marks a request that has not drawn its stream of randomness yet.
const NO_STREAM: u64 = u64::MAX;

const ATTEMPT_VALUES: [&str; MAX_ATTEMPTS_LIMIT as usize] =
    ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];

fn attempt_value(attempt: u32) -> HeaderValue {
    let index = (attempt.max(1) as usize - 1).min(ATTEMPT_VALUES.len() - 1);
    HeaderValue::from_static(ATTEMPT_VALUES[index])
}

/// SplitMix64: decorrelates neighbouring seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A random (version 4) UUID in its usual text form.
fn uuid_v4(high: u64, low: u64) -> Option<HeaderValue> {
    let high = (high & !0xf000) | 0x4000;
    let low = (low & !(0xc << 60)) | (0x8 << 60);
    let text = format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    );
    HeaderValue::from_str(&text).ok()
}

impl<S, P, B, ResBody> Service<Request<B>> for RetryService<S, P>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    P: Classify,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResBody>;
    type Error = Error;
    type Future = ResponseFuture<S, B, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|err| classify(&self.shared.config.policy, err.into(), Phase::Local))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let config = &*self.shared.config;
        let (mut parts, body) = req.into_parts();
        let may_retry = config.max_attempts > 1
            && parts.extensions.get::<RetryOverride>() != Some(&RetryOverride::NeverRetry);
        if may_retry && config.attach_idempotency_key {
            attach_idempotency_key(config, &mut parts);
        }
        if let Some(name) = &config.attempt_header {
            parts.headers.insert(name.clone(), attempt_value(1));
        }
        if let Some(budget) = &config.budget {
            budget.deposit();
        }
        let host_budget = match &config.per_host {
            Some(hosts) => {
                let budget = hosts.budget_for(&parts);
                budget.deposit();
                Some(budget)
            }
            None => None,
        };
        let (body, replay) = if may_retry {
            // A request that may be retried only if it was never sent keeps no bytes. Whether it
            // is idempotent is asked only when there are bytes to keep.
            ReplayBody::replayable(body, || {
                if is_idempotent(&parts, &config.idempotency_key) {
                    config.replay_limit
                } else {
                    0
                }
            })
        } else {
            ReplayBody::once(body)
        };
        // Call the service that was made ready; a retry clones the spare instance, later.
        // The inner service gets the copy and the future keeps the original head. Each branch
        // builds the future itself: one fewer move of the head than a shared `Option`.
        macro_rules! future {
            ($future:expr, $parts:expr) => {
                ResponseFuture {
                    parts: $parts,
                    state: AttemptState::Calling { future: $future },
                    service: None,
                    shared: self.shared.clone(),
                    replay,
                    retries: None,
                    host_budget,
                }
            };
        }
        if may_retry {
            let future = self.inner.call(Request::from_parts(parts.clone(), body));
            future!(future, Some(parts))
        } else {
            let future = self.inner.call(Request::from_parts(parts, body));
            future!(future, None)
        }
    }
}

/// Whether `parts` may be sent twice: an idempotent method, an override, or an idempotency key.
fn is_idempotent(parts: &Parts, idempotency_key: &HeaderName) -> bool {
    is_idempotent_method(&parts.method)
        || parts.extensions.get::<RetryOverride>() == Some(&RetryOverride::Idempotent)
        || parts.headers.contains_key(idempotency_key)
}

#[cold]
fn attach_idempotency_key<P>(config: &Config<P>, parts: &mut Parts) {
    if is_idempotent(parts, &config.idempotency_key) {
        return;
    }
    let n = config.sequence.fetch_add(1, Ordering::Relaxed);
    if let Some(key) = uuid_v4(mix(config.key_seed ^ n), mix(!config.key_seed ^ n)) {
        parts.headers.insert(config.idempotency_key.clone(), key);
    }
}

fn classify<P: Classify>(policy: &P, err: BoxError, phase_hint: Phase) -> Error {
    match err.downcast::<Error>() {
        Ok(ours) => *ours,
        Err(other) => {
            Error::from_failure(policy.classify_error(&*other, phase_hint)).with_source(other)
        }
    }
}

pin_project! {
    #[project = AttemptProj]
    enum AttemptState<F, B> {
        Calling { #[pin] future: F },
        // Boxed: a timer is only needed once a retry is due, and it would otherwise double the
        // size of every request's future.
        Waiting { sleep: Option<Pin<Box<Sleep>>>, body: Option<ReplayBody<B>> },
    }
}

pin_project! {
    /// The future of [`RetryService`]: one attempt, then perhaps a delay and another.
    pub struct ResponseFuture<S, B, P>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        // The retained request head, `None` when the request may not be retried.
        parts: Option<Parts>,
        #[pin]
        state: AttemptState<S::Future, B>,
        // The instance retries call, cloned from the spare at the first retry. Boxed: a whole
        // stack instance is large, and most requests never retry, yet every request's future is
        // built and moved with this field in it.
        service: Option<Box<S>>,
        shared: Arc<Shared<S, P>>,
        replay: Replay<B>,
        // Boxed, and made at the first retry: most requests never need it.
        retries: Option<Box<Retries>>,
        host_budget: Option<RetryBudget>,
    }
}

enum Verdict {
    Retry(Duration),
    Stop(StopReason),
}

impl<S, B, P, ResBody> Future for ResponseFuture<S, B, P>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    P: Classify,
    B: Body,
{
    type Output = Result<Response<ResBody>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                AttemptProj::Calling { future } => {
                    let (result, failure) = match ready!(future.poll(cx)) {
                        Ok(mut res) => match response_failure(&this.shared.config.policy, &res) {
                            None => {
                                if let Some(retries) = this.retries {
                                    res.extensions_mut().insert(retries.info);
                                }
                                return Poll::Ready(Ok(res));
                            }
                            Some(failure) => (Ok(res), failure),
                        },
                        Err(err) => {
                            let err = classify(
                                &this.shared.config.policy,
                                err.into(),
                                Phase::AwaitHeaders,
                            );
                            let failure = err.failure();
                            (Err(err), failure)
                        }
                    };
                    let (body, delay) = match next_attempt(
                        &this.shared.config,
                        this.parts.as_ref(),
                        this.replay,
                        this.retries,
                        this.host_budget.as_ref(),
                        result,
                        &failure,
                    ) {
                        Ok(next) => next,
                        Err(output) => return Poll::Ready(output),
                    };
                    let sleep = (!delay.is_zero()).then(|| Box::pin(tokio::time::sleep(delay)));
                    this.state.set(AttemptState::Waiting {
                        sleep,
                        body: Some(body),
                    });
                }
                AttemptProj::Waiting { sleep, body } => {
                    if let Some(timer) = sleep {
                        ready!(timer.as_mut().poll(cx));
                        *sleep = None;
                    }
                    if this.service.is_none() {
                        let spare = match this.shared.spare.lock() {
                            Ok(spare) => S::clone(&spare),
                            Err(poisoned) => S::clone(&poisoned.into_inner()),
                        };
                        *this.service = Some(Box::new(spare));
                    }
                    let Some(service) = this.service.as_mut() else {
                        return Poll::Ready(Err(Error::new(Kind::Other, Phase::Local)));
                    };
                    if let Err(err) = ready!(service.poll_ready(cx)) {
                        let err = classify(&this.shared.config.policy, err.into(), Phase::Local);
                        let info = this.retries.as_ref().map(|r| r.info).unwrap_or_default();
                        return Poll::Ready(Err(record(err, &info)));
                    }
                    let (Some(parts), Some(body)) = (this.parts.as_ref(), body.take()) else {
                        return Poll::Ready(Err(Error::new(Kind::Other, Phase::Local)));
                    };
                    let mut parts = parts.clone();
                    if let Some(name) = &this.shared.config.attempt_header {
                        parts
                            .headers
                            .insert(name.clone(), attempt_value(attempts(this.retries)));
                    }
                    let future = service.call(Request::from_parts(parts, body));
                    this.state.set(AttemptState::Calling { future });
                }
            }
        }
    }
}

/// The failure a response stands for: the [`Outcome`] a classifier left in it, or the policy's
/// verdict when there is none.
#[inline]
fn response_failure<P: Classify, R>(policy: &P, res: &Response<R>) -> Option<Failure> {
    match res.extensions().get::<Outcome>() {
        Some(Outcome::Success) => None,
        Some(Outcome::Failure(failure)) => Some(*failure),
        None => match policy.classify_response(res.status(), res.headers()) {
            Outcome::Success => None,
            Outcome::Failure(failure) => Some(failure),
        },
    }
}

/// The state of a request that has been retried.
struct Retries {
    info: RetryInfo,
    /// The request's stream of randomness, drawn at its first backoff.
    stream: u64,
}

fn attempts(retries: &Option<Box<Retries>>) -> u32 {
    retries
        .as_ref()
        .map_or(1, |retries| retries.info.attempts())
}

/// After a failed attempt: the body of the next one and the delay before it, or what the caller
/// gets.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn next_attempt<P, B: Body, R>(
    config: &Config<P>,
    parts: Option<&Parts>,
    replay: &Replay<B>,
    retries: &mut Option<Box<Retries>>,
    host_budget: Option<&RetryBudget>,
    result: Result<Response<R>, Error>,
    failure: &Failure,
) -> Result<(ReplayBody<B>, Duration), Result<Response<R>, Error>> {
    let mut first = Retries {
        info: RetryInfo::default(),
        stream: NO_STREAM,
    };
    let state = match retries.as_deref_mut() {
        Some(state) => state,
        None => &mut first,
    };
    let Some(parts) = parts else {
        // Never retried: a single attempt was all it had, or an override said never.
        state.info.stop(if config.max_attempts <= 1 {
            StopReason::AttemptsExhausted
        } else {
            StopReason::NotRetryable
        });
        return Err(stopped(result, &state.info));
    };
    let verdict = decide(
        config,
        failure,
        is_idempotent(parts, &config.idempotency_key),
        // The deadline travels ambiently (set by the deadline layer around every poll) or in
        // the retained request head; the earlier wins. Read only when a retry is considered.
        Deadline::current_in(&parts.extensions),
        &state.info,
        replay,
        &mut state.stream,
        host_budget,
    );
    let delay = match verdict {
        Verdict::Stop(reason) => {
            if reason == StopReason::BodyNotReplayable {
                log_not_replayed(replay.can_replay().err(), failure);
            }
            state.info.stop(reason);
            return Err(stopped(result, &state.info));
        }
        Verdict::Retry(delay) => delay,
    };
    let body = match replay.next() {
        Ok(body) => body,
        Err(why) => {
            log_not_replayed(Some(why), failure);
            state.info.stop(StopReason::BodyNotReplayable);
            return Err(stopped(result, &state.info));
        }
    };
    // The failed response is dropped here, freeing its connection before the delay.
    drop(result);
    state.info.record_attempt(delay);
    tracing::debug!(
        attempt = state.info.attempts(),
        delay_ms = delay.as_millis() as u64,
        kind = %failure.kind(),
        phase = %failure.phase(),
        retry_after_ms = failure.retry_after().map(|d| d.as_millis() as u64),
        "retrying request"
    );
    if retries.is_none() {
        *retries = Some(Box::new(first));
    }
    Ok((body, delay))
}

fn finish<B>(mut res: Response<B>, info: &RetryInfo) -> Response<B> {
    if info.attempts() > 1 || info.stopped().is_some() {
        res.extensions_mut().insert(*info);
    }
    res
}

#[allow(clippy::too_many_arguments)]
fn decide<P, B>(
    config: &Config<P>,
    failure: &Failure,
    idempotent: bool,
    deadline: Option<Deadline>,
    info: &RetryInfo,
    replay: &Replay<B>,
    stream: &mut u64,
    host_budget: Option<&RetryBudget>,
) -> Verdict {
    // A call rejected before any I/O (an open breaker, a load shedder) would be rejected again:
    // retrying it only sleeps and spends budget, and hides the rejection behind whatever the
    // last attempt says.
    if failure.phase() == Phase::Local {
        return Verdict::Stop(match failure.kind() {
            // Too little time was left to send the request at all.
            Kind::TimedOut(backstop_classify::Timer::Deadline) => StopReason::Deadline,
            _ => StopReason::RejectedLocally,
        });
    }
    let retryable = match failure.kind() {
        Kind::Status(StatusCode::CONFLICT) if config.retry_conflict => Retryable::IfIdempotent,
        _ => failure.retryable(),
    };
    let allowed = match retryable {
        Retryable::Safe => true,
        Retryable::IfIdempotent => idempotent,
        Retryable::Never => false,
    };
    if !allowed {
        return Verdict::Stop(StopReason::NotRetryable);
    }
    if info.attempts() >= config.max_attempts {
        return Verdict::Stop(StopReason::AttemptsExhausted);
    }
    if replay.can_replay().is_err() {
        return Verdict::Stop(StopReason::BodyNotReplayable);
    }
    let server_wait = failure.retry_after().filter(|_| match failure.kind() {
        Kind::Status(status) => config.retry_after_statuses.contains(&status),
        Kind::Grpc(_) => true,
        _ => false,
    });
    let delay = match server_wait {
        // Going back sooner than the server asked is what its `Retry-After` forbids; the caller
        // gets the response with the header, to wait or give up as it sees fit.
        Some(wait) if wait > config.retry_after_max => {
            return Verdict::Stop(StopReason::ServerWaitTooLong);
        }
        Some(wait) => wait,
        None => {
            // Each request draws from its own stream, numbered at its first retry, so a seeded
            // layer repeats its delays whatever the interleaving of successful requests.
            if *stream == NO_STREAM {
                *stream = config.sequence.fetch_add(1, Ordering::Relaxed) & !NO_STREAM;
            }
            let retry = u64::from(info.attempts() - 1);
            let mut rng = SmallRng::seed_from_u64(mix(config.seed ^ mix(*stream) ^ mix(!retry)));
            let delay = config
                .backoff
                .delay(info.attempts() - 1, info.last_delay(), &mut rng);
            // tokio's timer ticks in whole milliseconds; a delay it can actually sleep is the
            // one reported.
            Duration::from_millis(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
        }
    };
    // The deadline travels in the retained request head, read only when a retry is considered.
    if let Some(deadline) = deadline {
        // The next attempt must be able to start before the deadline, not merely wake at it.
        if delay >= deadline.remaining() {
            return Verdict::Stop(StopReason::Deadline);
        }
    }
    let host_refuses = host_budget.filter(|budget| !budget.try_withdraw());
    let refuses = host_refuses.or_else(|| {
        config
            .budget
            .as_ref()
            .filter(|budget| !budget.try_withdraw())
    });
    if let Some(budget) = refuses {
        report_exhausted(budget, info, failure);
        return Verdict::Stop(StopReason::BudgetExhausted);
    }
    Verdict::Retry(delay)
}

/// Says why a body could not be sent again: the caller's error keeps the real failure's kind, so
/// the reason (too large, already read, failed) is told here and in the stop reason.
#[cold]
fn log_not_replayed(why: Option<&'static str>, failure: &Failure) {
    tracing::debug!(
        kind = %failure.kind(),
        why = why.unwrap_or("the request body cannot be replayed"),
        "not retried: the request body cannot be sent again"
    );
}

/// Logs an exhausted budget: at warn level at most once a second per budget (an outage would
/// otherwise log every failed request), counting the exhaustions logged at debug level since.
fn report_exhausted(budget: &RetryBudget, info: &RetryInfo, failure: &Failure) {
    match budget.warning_due() {
        Some(suppressed) => tracing::warn!(
            attempts = info.attempts(),
            kind = %failure.kind(),
            suppressed,
            "retry budget exhausted; returning the failure ({suppressed} more since the last \
             warning)"
        ),
        None => tracing::debug!(
            attempts = info.attempts(),
            kind = %failure.kind(),
            "retry budget exhausted; returning the failure"
        ),
    }
}

/// What the caller gets when the layer stops: the last response, or the last error with its
/// kind untouched (the real failure, not the reason retrying stopped), both carrying the record
/// of the call.
fn stopped<R>(result: Result<Response<R>, Error>, info: &RetryInfo) -> Result<Response<R>, Error> {
    match result {
        Ok(res) => Ok(finish(res, info)),
        Err(err) => Err(record(err, info)),
    }
}

/// Records the call's attempts and delays, and why it stopped, in an error.
#[cold]
fn record(mut err: Error, info: &RetryInfo) -> Error {
    err.extensions_mut().insert(*info);
    err.with_attempts(info.attempts())
}

/// The most hosts given a budget of their own; the rest share the overflow budget, so a client
/// calling unbounded host names cannot grow the map without limit.
const MAX_HOSTS: usize = 10_000;

struct PerHost {
    template: RetryBudgetBuilder,
    budgets: Mutex<HashMap<Authority, RetryBudget>>,
    overflow: RetryBudget,
}

impl PerHost {
    fn budget_for(&self, parts: &Parts) -> RetryBudget {
        let authority = parts.uri.authority().cloned().or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|host| Authority::try_from(host.as_bytes()).ok())
        });
        let Some(authority) = authority else {
            return self.overflow.clone();
        };
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(budget) = budgets.get(&authority) {
            return budget.clone();
        }
        if budgets.len() >= MAX_HOSTS {
            return self.overflow.clone();
        }
        // The template was validated when the layer was built.
        let budget = self
            .template
            .clone()
            .build()
            .unwrap_or_else(|_| self.overflow.clone());
        budgets.insert(authority, budget.clone());
        budget
    }
}
