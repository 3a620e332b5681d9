//! [`Policy::overlay`]: how a policy applied to a builder composes with the setters called
//! before and after it.

use super::{BreakerPolicy, BudgetPolicy, Policy, PropagationPolicy, RetryPolicy};

impl Policy {
    /// Applies `over` on top of this policy: every field `over` sets to something other than its
    /// default replaces this one's; the fields it leaves at their defaults keep what this policy
    /// has. So a builder's setters and `policy()` compose in call order, whichever comes first.
    pub(crate) fn overlay(&mut self, over: Policy) {
        // Destructured field by field, so a field added to `Policy` cannot be forgotten here.
        let Policy {
            deadline,
            deadline_covers_body,
            attempt_timeout,
            connect_timeout,
            idle_timeout,
            retry,
            breaker,
            propagation,
        } = over;
        let d = Policy::default();
        set(&mut self.deadline, deadline, d.deadline);
        set(
            &mut self.deadline_covers_body,
            deadline_covers_body,
            d.deadline_covers_body,
        );
        set(
            &mut self.attempt_timeout,
            attempt_timeout,
            d.attempt_timeout,
        );
        set(
            &mut self.connect_timeout,
            connect_timeout,
            d.connect_timeout,
        );
        set(&mut self.idle_timeout, idle_timeout, d.idle_timeout);

        let RetryPolicy {
            max_attempts,
            base_delay,
            max_delay,
            jitter,
            retry_after_max,
            replay_limit,
            attach_idempotency_key,
            retry_conflict,
            budget,
        } = retry;
        let (r, dr) = (&mut self.retry, d.retry);
        set(&mut r.max_attempts, max_attempts, dr.max_attempts);
        set(&mut r.base_delay, base_delay, dr.base_delay);
        set(&mut r.max_delay, max_delay, dr.max_delay);
        set(&mut r.jitter, jitter, dr.jitter);
        set(&mut r.retry_after_max, retry_after_max, dr.retry_after_max);
        set(&mut r.replay_limit, replay_limit, dr.replay_limit);
        set(
            &mut r.attach_idempotency_key,
            attach_idempotency_key,
            dr.attach_idempotency_key,
        );
        set(&mut r.retry_conflict, retry_conflict, dr.retry_conflict);
        let BudgetPolicy {
            enabled,
            ratio,
            min_per_second,
            window,
        } = budget;
        let (b, db) = (&mut r.budget, dr.budget);
        set(&mut b.enabled, enabled, db.enabled);
        set(&mut b.ratio, ratio, db.ratio);
        set(&mut b.min_per_second, min_per_second, db.min_per_second);
        set(&mut b.window, window, db.window);

        let BreakerPolicy {
            enabled,
            consecutive_failures,
            failure_rate,
            window_calls,
            minimum_calls,
            open_for,
            max_open_for,
            half_open_probes,
            single_call_may_trip,
        } = breaker;
        let (b, db) = (&mut self.breaker, d.breaker);
        set(&mut b.enabled, enabled, db.enabled);
        set(
            &mut b.consecutive_failures,
            consecutive_failures,
            db.consecutive_failures,
        );
        set(&mut b.failure_rate, failure_rate, db.failure_rate);
        set(&mut b.window_calls, window_calls, db.window_calls);
        set(&mut b.minimum_calls, minimum_calls, db.minimum_calls);
        set(&mut b.open_for, open_for, db.open_for);
        set(&mut b.max_open_for, max_open_for, db.max_open_for);
        set(
            &mut b.half_open_probes,
            half_open_probes,
            db.half_open_probes,
        );
        set(
            &mut b.single_call_may_trip,
            single_call_may_trip,
            db.single_call_may_trip,
        );

        let PropagationPolicy {
            http,
            header,
            only_to,
            grpc,
        } = propagation;
        let (p, dp) = (&mut self.propagation, d.propagation);
        set(&mut p.http, http, dp.http);
        set(&mut p.header, header, dp.header);
        set(&mut p.only_to, only_to, dp.only_to);
        set(&mut p.grpc, grpc, dp.grpc);
    }
}

/// Replaces `dst` with `value` unless `value` is the default.
fn set<T: PartialEq>(dst: &mut T, value: T, default: T) {
    if value != default {
        *dst = value;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::JitterMode;

    #[test]
    fn overlay_keeps_what_the_overlay_leaves_at_its_default() {
        let mut base = Policy::default();
        base.retry.max_attempts = 1;
        base.connect_timeout = Duration::from_millis(200);
        let mut over = Policy {
            deadline: Duration::from_secs(2),
            ..Policy::default()
        };
        over.retry.jitter = JitterMode::Equal;
        base.overlay(over);
        assert_eq!(base.retry.max_attempts, 1);
        assert_eq!(base.connect_timeout, Duration::from_millis(200));
        assert_eq!(base.deadline, Duration::from_secs(2));
        assert_eq!(base.retry.jitter, JitterMode::Equal);
    }
}
