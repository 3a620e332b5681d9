//! [`RetryLayerBuilder`]: every setting of a [`RetryLayer`], and the one place they are checked
//! against the bounds exported here.

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use backstop_classify::{Classify, HttpPolicy};
use http::{HeaderName, StatusCode};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::ConfigError;
use crate::backoff::{Backoff, Jitter, MAX_BACKOFF_CAP};
use crate::budget::{RetryBudget, RetryBudgetBuilder};
use crate::grpc::GrpcRetryPolicy;
use crate::idempotency::IDEMPOTENCY_KEY;
use crate::info::MAX_ATTEMPTS_LIMIT;
use crate::layer::{Config, RetryLayer};
use crate::per_host::PerHost;
use crate::replay::DEFAULT_REPLAY_LIMIT;

/// The values [`RetryLayerBuilder::max_attempts`] accepts: 1 to [`MAX_ATTEMPTS_LIMIT`].
pub const MAX_ATTEMPTS_RANGE: RangeInclusive<u32> = 1..=MAX_ATTEMPTS_LIMIT;

/// The largest replay buffer a configuration accepts: 16 MiB.
pub const MAX_REPLAY_LIMIT: usize = 16 * 1024 * 1024;

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
    grpc: Option<GrpcRetryPolicy>,
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
    pub(crate) fn new() -> Self {
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
            grpc: None,
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

    /// gRPC's per-method retry policies (gRFC A6's `retryPolicy`): the gRPC methods whose listed
    /// status codes are retried although the call (an HTTP/2 `POST`) reached the server, and how
    /// many attempts each gets instead of [`max_attempts`](Self::max_attempts). A gRPC call to a
    /// method it does not cover gets only the retries of a call that was never sent or never
    /// processed. See [`GrpcRetryPolicy`] for the rules and where they differ from A6.
    #[must_use]
    pub fn grpc_methods(mut self, methods: GrpcRetryPolicy) -> Self {
        self.grpc = Some(methods);
        self
    }

    /// Seeds the jitter, making delays reproducible (default: seeded from the OS). Idempotency
    /// keys are always drawn from an OS-seeded source, so they never repeat across processes.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The policy classifying responses that carry no
    /// [`Outcome`](backstop_classify::Outcome) (no `ClassifyLayer` inside
    /// this layer) and errors that are not backstop [`Error`](backstop_classify::Error)s.
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
            grpc: self.grpc,
            seed: self.seed,
            policy,
        }
    }

    /// The layer, or the first rule broken (the bounds exported here, the backoff's, and each
    /// [`MethodRetry`](crate::MethodRetry) of [`grpc_methods`](Self::grpc_methods): 2 to
    /// [`MAX_ATTEMPTS_LIMIT`] attempts, at least one retryable code and never `OK`).
    pub fn build(self) -> Result<RetryLayer<P>, ConfigError> {
        if !MAX_ATTEMPTS_RANGE.contains(&self.max_attempts) {
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
        if let Some(grpc) = &self.grpc {
            grpc.check()?;
        }
        let per_host = match &self.per_host {
            Some(template) => Some(PerHost::new(template.clone())?),
            None => None,
        };
        let mut config = self.into_config();
        config.per_host = per_host;
        Ok(RetryLayer::from_config(config))
    }

    /// The configuration as set, unchecked: [`build`](RetryLayerBuilder::build) checks it first,
    /// and the defaults need no checking.
    pub(crate) fn into_config(self) -> Config<P> {
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
            grpc: self.grpc,
            seed: self.seed.unwrap_or_else(|| os.random()),
            sequence: AtomicU64::new(0),
            key_seed: os.random(),
            policy: self.policy,
        }
    }
}
