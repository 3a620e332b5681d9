//! What the retry layer tells the caller and the server: [`RetryInfo`], [`RetryOverride`].

use std::time::Duration;

use http::Response;

/// The most attempts any request may be given, whatever the configuration.
pub const MAX_ATTEMPTS_LIMIT: u32 = 10;

/// A per-request (or per-route) override of the idempotency judgement, read from the request's
/// extensions.
///
/// ```
/// use backstop_retry::RetryOverride;
/// use http::Request;
///
/// // This POST is a search: safe to send twice.
/// let mut req = Request::post("http://127.0.0.1/search").body(()).unwrap();
/// req.extensions_mut().insert(RetryOverride::Idempotent);
/// ```
///
/// For a whole route, insert it with a small layer on that route (e.g. tower's
/// `MapRequestLayer`) in front of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryOverride {
    /// Treat the request as idempotent whatever its method: failures judged
    /// "retry if idempotent" are retried and its body is buffered for replay.
    Idempotent,
    /// Never retry this request, not even a connection refused before it was sent. Its body is
    /// not buffered.
    NeverRetry,
}

/// Why the layer stopped retrying and returned the last failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// The failure may not be retried for this request (its classification, its method, or an
    /// override).
    NotRetryable,
    /// The request used all its attempts.
    AttemptsExhausted,
    /// The next attempt (after its delay, or the server's `Retry-After`) could not finish before
    /// the request's deadline.
    Deadline,
    /// The retry budget is spent.
    BudgetExhausted,
    /// The request body was too large to keep, or was already read, so it cannot be sent again.
    BodyNotReplayable,
    /// The failure was a local rejection (an open circuit breaker, a load shedder): nothing was
    /// sent, and another attempt now would be rejected the same way.
    RejectedLocally,
    /// The server asked for a longer wait (`Retry-After`, `grpc-retry-pushback-ms`) than the
    /// layer's `retry_after_max`: retrying sooner would go against its word.
    ServerWaitTooLong,
}

impl StopReason {
    /// A short name for logs, e.g. `"budget exhausted"`.
    pub const fn name(self) -> &'static str {
        match self {
            StopReason::NotRetryable => "not retryable",
            StopReason::AttemptsExhausted => "attempts exhausted",
            StopReason::Deadline => "deadline",
            StopReason::BudgetExhausted => "budget exhausted",
            StopReason::BodyNotReplayable => "body not replayable",
            StopReason::RejectedLocally => "rejected locally",
            StopReason::ServerWaitTooLong => "server asked to wait too long",
        }
    }

    /// A fixed `snake_case` identifier, the `stop` field of the "retry stopped" event and label of
    /// [`metrics::STOPPED`](crate::metrics::STOPPED), e.g. `"budget_exhausted"`.
    pub const fn label(self) -> &'static str {
        match self {
            StopReason::NotRetryable => "not_retryable",
            StopReason::AttemptsExhausted => "attempts_exhausted",
            StopReason::Deadline => "deadline",
            StopReason::BudgetExhausted => "budget_exhausted",
            StopReason::BodyNotReplayable => "body_not_replayable",
            StopReason::RejectedLocally => "rejected_locally",
            StopReason::ServerWaitTooLong => "server_wait_too_long",
        }
    }
}

/// What happened to a request: how many attempts, the delays slept between them, and why the
/// layer stopped if the last attempt failed.
///
/// The layer puts it in the response's extensions whenever it retried or declined to retry, and
/// in the extensions of every error it returns ([`RetryInfo::of_error`]); when a response
/// carries none the first attempt answered, and [`RetryInfo::of`] reports exactly that (so the
/// success path inserts nothing).
///
/// ```
/// use backstop_retry::RetryInfo;
/// use http::Response;
///
/// let res = Response::new(());
/// let info = RetryInfo::of(&res);
/// assert_eq!(info.attempts(), 1);
/// assert_eq!(info.delays().len(), 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetryInfo {
    attempts: u32,
    /// Microseconds: every delay is capped at one hour, which fits, and the response future
    /// carrying this stays small.
    delays_us: [u32; MAX_ATTEMPTS_LIMIT as usize - 1],
    stopped: Option<StopReason>,
}

impl Default for RetryInfo {
    fn default() -> Self {
        RetryInfo {
            attempts: 1,
            delays_us: [0; MAX_ATTEMPTS_LIMIT as usize - 1],
            stopped: None,
        }
    }
}

impl RetryInfo {
    /// The information carried by `res`, or "one attempt, no delay" when it carries none.
    pub fn of<B>(res: &Response<B>) -> RetryInfo {
        res.extensions()
            .get::<RetryInfo>()
            .copied()
            .unwrap_or_default()
    }

    /// The information carried by an error the layer returned (`None` for an error that did not
    /// come through a retry layer).
    pub fn of_error(err: &backstop_classify::Error) -> Option<RetryInfo> {
        err.extensions().get::<RetryInfo>().copied()
    }

    /// How many attempts were sent (1 when the first one answered).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The delays slept before each retry, in order (microsecond resolution).
    pub fn delays(&self) -> impl ExactSizeIterator<Item = Duration> + '_ {
        let retries = self.attempts.saturating_sub(1) as usize;
        self.delays_us[..retries.min(self.delays_us.len())]
            .iter()
            .map(|us| Duration::from_micros(u64::from(*us)))
    }

    /// The delay slept before retry `index` (0 for the first retry).
    pub fn delay(&self, index: usize) -> Option<Duration> {
        self.delays().nth(index)
    }

    /// The sum of [`delays`](RetryInfo::delays).
    pub fn total_delay(&self) -> Duration {
        self.delays().sum()
    }

    /// Why the layer stopped, when the response is a failure it did not retry further.
    pub fn stopped(&self) -> Option<StopReason> {
        self.stopped
    }

    /// The delay slept before the latest retry; zero before the first.
    pub(crate) fn last_delay(&self) -> Duration {
        let retries = self.attempts.saturating_sub(1) as usize;
        match retries.checked_sub(1).and_then(|i| self.delays_us.get(i)) {
            Some(us) => Duration::from_micros(u64::from(*us)),
            None => Duration::ZERO,
        }
    }

    /// Records one more attempt, made after sleeping `delay_before`.
    ///
    /// For a retry loop outside this crate's layer that reports in the same type (backstop-reqwest
    /// does, so that [`RetryInfo::of_error`] reads its errors too). Delays beyond the
    /// [`MAX_ATTEMPTS_LIMIT`]th attempt are not kept.
    pub fn record_attempt(&mut self, delay_before: Duration) {
        if let Some(slot) = self.delays_us.get_mut(self.attempts as usize - 1) {
            *slot = u32::try_from(delay_before.as_micros()).unwrap_or(u32::MAX);
        }
        self.attempts = self.attempts.saturating_add(1);
    }

    /// Records why retrying stopped (the counterpart of [`RetryInfo::record_attempt`]).
    pub fn stop(&mut self, reason: StopReason) {
        self.stopped = Some(reason);
    }
}
