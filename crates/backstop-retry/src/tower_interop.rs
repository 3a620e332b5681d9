//! backstop's [`RetryBudget`] and [`Backoff`] in tower's own [`Retry`](tower::retry::Retry)
//! (feature `tower-retry`).
//!
//! - [`RetryBudget`] implements [`tower::retry::budget::Budget`]: `deposit` is
//!   [`RetryBudget::deposit`], `withdraw` is [`RetryBudget::try_withdraw`], so a policy sees the
//!   same ratio, floor and window as [`RetryLayer`](crate::RetryLayer) would apply.
//! - [`BackoffMaker`] implements [`tower::retry::backoff::MakeBackoff`]; the [`BackoffSession`]
//!   it makes implements [`tower::retry::backoff::Backoff`] and sleeps, on tokio's clock, the
//!   delays a [`RetryLayer`](crate::RetryLayer) with the same backoff and seed computes for its
//!   retries 1, 2, 3…
//!
//! What tower's `Retry` leaves to the policy stays with the policy: which failures are retried,
//! how many attempts, `Retry-After`, the request's deadline, body replay, and logging an
//! exhausted budget. [`RetryLayer`](crate::RetryLayer) does all of these itself.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::backoff::Backoff;
use crate::budget::RetryBudget;
use crate::random::{NO_STREAM, mix, next_stream};

/// The budget as tower's: the same state, shared with every clone and with any
/// [`RetryLayer`](crate::RetryLayer) given this budget.
///
/// Unlike tower's [`TpsBudget`](tower::retry::budget::TpsBudget), the ratio is honoured to four
/// decimal places (tower turns a ratio `r ≤ 1` into a cost of `⌊1/r⌋` deposits per retry, so 0.6
/// allows a retry for every request), the window runs from 100 ms to one hour (tower: 1 s to 60 s),
/// the floor counts fractions of a second of the window, and an invalid setting is an error from
/// [`RetryBudgetBuilder::build`](crate::RetryBudgetBuilder::build) rather than a panic. A clone
/// shares the budget, so a policy holds a `RetryBudget` where tower's examples hold an
/// `Arc<TpsBudget>`.
impl tower::retry::budget::Budget for RetryBudget {
    /// Records one request: call it once per original request, never for a retry.
    fn deposit(&self) {
        RetryBudget::deposit(self);
    }

    /// Takes one retry; `false` when the budget is spent.
    fn withdraw(&self) -> bool {
        self.try_withdraw()
    }
}

/// Makes a [`BackoffSession`] per request: tower's
/// [`MakeBackoff`](tower::retry::backoff::MakeBackoff) for backstop's [`Backoff`].
///
/// Seeded with the seed of a [`RetryLayer`](crate::RetryLayer) that has the same backoff, the
/// `n`th session to retry sleeps exactly the delays the layer gives the `n`th request it
/// retries: delays drawn from a stream of randomness per request, numbered when the request first
/// backs off, and truncated to whole milliseconds (tokio's timer resolution) as the layer does.
/// Clones share the numbering.
///
/// ```
/// use std::time::Duration;
/// use backstop_retry::{Backoff, BackoffMaker, Jitter};
/// use tower::retry::backoff::MakeBackoff;
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), Jitter::Full)?;
/// let mut maker = BackoffMaker::with_seed(backoff, 42);
/// let mut session = maker.make_backoff();
/// for _ in 0..10 {
///     assert!(session.next_delay() <= Duration::from_secs(2));
/// }
/// # Ok::<(), backstop_retry::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct BackoffMaker {
    backoff: Backoff,
    seed: u64,
    sequence: Arc<AtomicU64>,
}

impl fmt::Debug for BackoffMaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The seed stays out of logs, as the layer's does.
        f.debug_struct("BackoffMaker")
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl BackoffMaker {
    /// Sessions spaced by `backoff`, with jitter seeded from the operating system.
    pub fn new(backoff: Backoff) -> BackoffMaker {
        BackoffMaker::with_seed(backoff, SmallRng::from_os_rng().random())
    }

    /// Sessions spaced by `backoff`, with reproducible jitter: the seed given to
    /// [`RetryLayerBuilder::seed`](crate::RetryLayerBuilder::seed) gives the layer's delays.
    pub fn with_seed(backoff: Backoff, seed: u64) -> BackoffMaker {
        BackoffMaker {
            backoff,
            seed,
            sequence: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The backoff the sessions follow.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }
}

impl tower::retry::backoff::MakeBackoff for BackoffMaker {
    type Backoff = BackoffSession;

    fn make_backoff(&mut self) -> BackoffSession {
        BackoffSession {
            maker: self.clone(),
            stream: NO_STREAM,
            retries: 0,
            previous: Duration::ZERO,
        }
    }
}

/// The delays of one request's retries: tower's [`Backoff`](tower::retry::backoff::Backoff),
/// made by a [`BackoffMaker`].
///
/// A clone starts a new session (retry 1, a stream of its own once it backs off), as tower's
/// trait asks: a policy that holds a session and is cloned for each request by tower's
/// [`Retry`](tower::retry::Retry) gives every request its own.
pub struct BackoffSession {
    maker: BackoffMaker,
    /// The request's stream of randomness, drawn at the first delay as the layer does, so
    /// sessions that never back off leave the numbering alone.
    stream: u64,
    retries: u32,
    previous: Duration,
}

impl Clone for BackoffSession {
    fn clone(&self) -> Self {
        BackoffSession {
            maker: self.maker.clone(),
            stream: NO_STREAM,
            retries: 0,
            previous: Duration::ZERO,
        }
    }
}

impl fmt::Debug for BackoffSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackoffSession")
            .field("backoff", &self.maker.backoff)
            .field("retries", &self.retries)
            .field("previous", &self.previous)
            .finish_non_exhaustive()
    }
}

impl BackoffSession {
    /// The delay before the next retry, advancing the session without sleeping (what
    /// [`next_backoff`](tower::retry::backoff::Backoff::next_backoff) sleeps).
    pub fn next_delay(&mut self) -> Duration {
        if self.stream == NO_STREAM {
            self.stream = next_stream(&self.maker.sequence);
        }
        // The same derivation as the layer's decision, so one seed gives one set of delays.
        let retry = u64::from(self.retries);
        let mut rng =
            SmallRng::seed_from_u64(mix(self.maker.seed ^ mix(self.stream) ^ mix(!retry)));
        let delay = self
            .maker
            .backoff
            .delay(self.retries, self.previous, &mut rng);
        let delay = Duration::from_millis(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        self.retries = self.retries.saturating_add(1);
        self.previous = delay;
        delay
    }

    /// How many delays the session has given.
    pub fn retries(&self) -> u32 {
        self.retries
    }
}

impl tower::retry::backoff::Backoff for BackoffSession {
    type Future = tokio::time::Sleep;

    fn next_backoff(&mut self) -> tokio::time::Sleep {
        tokio::time::sleep(self.next_delay())
    }
}
