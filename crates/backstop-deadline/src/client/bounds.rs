//! [`DeadlineBounds`] and [`CallDeadline`]: the client deadline's rules for a caller that makes
//! its calls itself (as `backstop::Client` does) instead of stacking [`DeadlineLayer`]'s service,
//! and whose every wait an attempt timeout inside bounds.
//!
//! The layer's service keeps a deadline that starts when first needed, and a timer of its own
//! for inner waits nobody else bounds. A caller that has read the clock when its call started,
//! with an [`AttemptTimeout`](crate::AttemptTimeout) inside that wakes it at the deadline
//! ([`InnerWaits::BoundedByAttemptTimeout`]), needs neither: its deadline is an instant from the
//! start, made ambient around the call and each poll, and handed to the response body.

use backstop_classify::Failure;
use http::Request;
use tokio::time::Instant;

use super::{Covers, DeadlineLayer, InnerWaits};
use crate::ambient::{Budget, Entered};
use crate::{ConfigError, Deadline};

impl DeadlineLayer {
    /// This layer's rules as [`DeadlineBounds`], for a caller that makes its calls itself.
    ///
    /// The bounds keep no timer, so they need the layer built with
    /// [`InnerWaits::BoundedByAttemptTimeout`] (an attempt timeout inside wakes the call at the
    /// deadline); any other setting is refused, naming `inner_waits`.
    pub fn bounds(&self) -> Result<DeadlineBounds, ConfigError> {
        if self.inner_waits != InnerWaits::BoundedByAttemptTimeout {
            return Err(ConfigError::new(
                "inner_waits",
                "must be BoundedByAttemptTimeout for bounds(): they keep no timer of their own",
            ));
        }
        Ok(DeadlineBounds {
            layer: self.clone(),
        })
    }
}

/// A client [`DeadlineLayer`]'s rules for a caller that makes its calls itself, from
/// [`DeadlineLayer::bounds`]: the same deadline (the layer's timeout, or an earlier one carried by
/// the request or ambient), the same headers, the same refusal of a call whose deadline has
/// passed, without a future around the call.
///
/// ```
/// use std::time::Duration;
/// use backstop_deadline::{Deadline, DeadlineLayer, InnerWaits};
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bounds = DeadlineLayer::builder()
///     .timeout(Duration::from_secs(2))
///     .inner_waits(InnerWaits::BoundedByAttemptTimeout)
///     .build()?
///     .bounds()?;
/// let mut req = http::Request::new(());
/// let started = Instant::now();
/// let deadline = bounds
///     .start(&mut req, started)
///     .expect("not out of time")
///     .expect("the layer's own timeout");
/// assert_eq!(deadline.deadline().instant(), started + Duration::from_secs(2));
/// // Around each poll of the call, the layers inside see it.
/// let seen = {
///     let _ambient = deadline.enter();
///     Deadline::current(&req)
/// };
/// assert_eq!(seen, Some(deadline.deadline()));
/// // And the response body must end by then (the deadline covers it by default).
/// assert_eq!(deadline.body_deadline(), Some(started + Duration::from_secs(2)));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DeadlineBounds {
    layer: DeadlineLayer,
}

impl DeadlineBounds {
    /// Starts a call of `req`, whose caller read the clock at `now` when the call started: its
    /// deadline (`None` when none applies: the layer has no timeout of its own and none is
    /// carried or ambient), with the time left written into `req` where
    /// [`Propagation`](crate::Propagation) applies; or, when it must not be sent (the deadline
    /// has passed, or too little is left to tell the callee), why.
    #[inline]
    pub fn start<B>(
        &self,
        req: &mut Request<B>,
        now: Instant,
    ) -> Result<Option<CallDeadline>, Failure> {
        let covers_body = self.layer.covers == Covers::Body;
        Ok(self.layer.plan(req)?.map(|budget| CallDeadline {
            at: budget.start_at(now),
            own: matches!(budget, Budget::NotStarted(_)),
            covers_body,
        }))
    }

    /// Makes `deadline` ambient for the call itself (`Service::call` of the layers inside),
    /// until the guard is dropped. With only the layer's own timeout, as a budget that has not
    /// started: an attempt timeout inside shorter than it then reads no clock to compare the
    /// two (it starts no earlier than the call, so the shorter timeout is the earlier bound).
    #[inline]
    pub fn enter_call(&self, deadline: &CallDeadline) -> Entered {
        match self.layer.timeout {
            Some(timeout) if deadline.own => Entered::new(Budget::NotStarted(timeout)),
            _ => deadline.enter(),
        }
    }
}

/// The deadline of one call, from [`DeadlineBounds::start`]: ambient around the call
/// ([`DeadlineBounds::enter_call`]) and each poll of it ([`enter`](Self::enter)), and the bound
/// of the response body ([`body_deadline`](Self::body_deadline)). Three words: a caller keeps it
/// for the whole call.
#[derive(Debug, Clone, Copy)]
pub struct CallDeadline {
    /// The deadline, counted from the caller's start.
    at: Deadline,
    /// Only the layer's own timeout applies (nothing earlier carried or ambient).
    own: bool,
    covers_body: bool,
}

impl CallDeadline {
    /// The call's deadline.
    pub fn deadline(&self) -> Deadline {
        self.at
    }

    /// Makes the deadline ambient for a poll of the call's future, until the guard is dropped:
    /// a retry inside decides and starts its next attempt within it.
    #[inline]
    pub fn enter(&self) -> Entered {
        Entered::new(Budget::At(self.at))
    }

    /// The instant the response body must end by, for
    /// [`DeadlineBody::new`](super::DeadlineBody::new): the deadline when it
    /// [covers the body](Covers::Body), `None` otherwise.
    #[inline]
    pub fn body_deadline(&self) -> Option<Instant> {
        self.covers_body.then_some(self.at.instant())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use backstop_classify::{Kind, Phase, Timer};

    use super::*;
    use crate::ambient;

    fn call_bounds(timeout: Option<Duration>, covers: Covers) -> DeadlineBounds {
        let mut builder = DeadlineLayer::builder()
            .covers(covers)
            .inner_waits(InnerWaits::BoundedByAttemptTimeout);
        if let Some(timeout) = timeout {
            builder = builder.timeout(timeout);
        }
        builder.build().unwrap().bounds().unwrap()
    }

    #[test]
    fn bounds_without_an_attempt_timeout_inside_are_refused_naming_the_setting() {
        let err = DeadlineLayer::new(Duration::from_secs(1))
            .bounds()
            .expect_err("the layer's default waits are unbounded");
        assert_eq!(err.field(), "inner_waits");
    }

    #[tokio::test(start_paused = true)]
    async fn the_call_runs_under_its_own_timeout_from_the_start_the_caller_read() {
        let bounds = call_bounds(Some(Duration::from_secs(30)), Covers::Body);
        let started = Instant::now();
        tokio::time::advance(Duration::from_millis(5)).await;
        let deadline = bounds
            .start(&mut Request::new(()), started)
            .unwrap()
            .expect("its own timeout");
        let at = started + Duration::from_secs(30);
        assert_eq!(deadline.deadline().instant(), at);
        assert_eq!(deadline.body_deadline(), Some(at));
        // The call itself sees a budget not started (an attempt timeout inside compares
        // timeouts, not instants); its polls see the instant.
        {
            let _call = bounds.enter_call(&deadline);
            assert_eq!(
                ambient::peek(),
                Some(Budget::NotStarted(Duration::from_secs(30)))
            );
        }
        {
            let _poll = deadline.enter();
            assert_eq!(ambient::peek(), Some(Budget::At(deadline.deadline())));
        }
        assert_eq!(ambient::peek(), None, "restored after each");
        // Not covering the body: no bound for it.
        let head_only = call_bounds(Some(Duration::from_secs(30)), Covers::Head);
        let deadline = head_only.start(&mut Request::new(()), started).unwrap();
        assert_eq!(deadline.and_then(|d| d.body_deadline()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_carried_or_ambient_wins_and_none_anywhere_is_none() {
        let bounds = call_bounds(Some(Duration::from_secs(30)), Covers::Body);
        let started = Instant::now();
        let mut req = Request::new(());
        let carried = Deadline::after(Duration::from_secs(3));
        carried.apply(&mut req);
        let deadline = bounds.start(&mut req, started).unwrap().unwrap();
        assert_eq!(deadline.deadline(), carried);
        {
            let _call = bounds.enter_call(&deadline);
            assert_eq!(ambient::peek(), Some(Budget::At(carried)));
        }
        let handler = Deadline::after(Duration::from_secs(1));
        let deadline = ambient::sync_scope(handler, || {
            bounds.start(&mut Request::new(()), started).unwrap()
        });
        assert_eq!(deadline.map(|d| d.deadline()), Some(handler));
        // No timeout of its own, nothing carried or ambient: no deadline.
        let inherit = call_bounds(None, Covers::Body);
        assert!(
            inherit
                .start(&mut Request::new(()), started)
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_whose_deadline_has_passed_is_refused_before_it_is_sent() {
        let bounds = call_bounds(Some(Duration::from_secs(30)), Covers::Body);
        let passed = Deadline::at(Instant::now());
        let failure = ambient::sync_scope(passed, || {
            bounds.start(&mut Request::new(()), Instant::now())
        })
        .expect_err("the caller's deadline has passed");
        assert_eq!(
            (failure.kind(), failure.phase()),
            (Kind::TimedOut(Timer::Deadline), Phase::Local)
        );
    }
}
