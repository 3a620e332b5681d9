//! [`Policy::validate`]: every setting within the bounds of the layer it configures
//! (`bounds.rs`), and the rules between settings.

use super::bounds::{self, PROPAGATED_ATTEMPT_MIN};
use super::{ConfigError, Policy};

impl Policy {
    /// Checks every rule, the cross-field ones included.
    ///
    /// The bounds are those of the layers each setting configures, so a policy that passes
    /// builds a client, and one the layers would reject fails here, naming the policy's field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        bounds::DEADLINE.check(self.deadline)?;
        bounds::CONNECT_TIMEOUT.check(self.connect_timeout)?;
        bounds::IDLE_TIMEOUT.check(self.idle_timeout)?;
        if let Some(attempt) = self.attempt_timeout {
            bounds::ATTEMPT_TIMEOUT.check(attempt)?;
            if attempt > self.deadline {
                return Err(ConfigError::new(
                    "attempt_timeout",
                    format!(
                        "must not exceed deadline ({:?}), got {:?} (leave attempt_timeout unset \
                         to follow the deadline)",
                        self.deadline, attempt
                    ),
                ));
            }
        }
        self.check_propagated_attempt()?;

        let retry = &self.retry;
        bounds::MAX_ATTEMPTS.check(retry.max_attempts)?;
        bounds::MAX_DELAY.check(retry.max_delay)?;
        if retry.base_delay > retry.max_delay {
            return Err(ConfigError::new(
                "retry.base_delay",
                format!(
                    "must not exceed retry.max_delay ({:?}), got {:?}",
                    retry.max_delay, retry.base_delay
                ),
            ));
        }
        bounds::RETRY_AFTER_MAX.check(retry.retry_after_max)?;
        bounds::REPLAY_LIMIT.check(retry.replay_limit)?;
        let budget = &retry.budget;
        bounds::BUDGET_RATIO.check(budget.ratio)?;
        bounds::BUDGET_MIN_PER_SECOND.check(budget.min_per_second)?;
        bounds::BUDGET_WINDOW.check(budget.window)?;

        let breaker = &self.breaker;
        bounds::CONSECUTIVE_FAILURES.check(breaker.consecutive_failures)?;
        bounds::FAILURE_RATE.check(breaker.failure_rate)?;
        bounds::WINDOW_CALLS.check(breaker.window_calls)?;
        bounds::MINIMUM_CALLS.check(breaker.minimum_calls)?;
        if breaker.minimum_calls > breaker.window_calls {
            return Err(ConfigError::new(
                "breaker.minimum_calls",
                format!(
                    "must not exceed breaker.window_calls ({}), got {}: the failure rate would \
                     never be judged",
                    breaker.window_calls, breaker.minimum_calls
                ),
            ));
        }
        bounds::HALF_OPEN_PROBES.check(breaker.half_open_probes)?;
        bounds::OPEN_FOR.check(breaker.open_for)?;
        if breaker.open_for > breaker.max_open_for {
            return Err(ConfigError::new(
                "breaker.open_for",
                format!(
                    "must not exceed breaker.max_open_for ({:?}), got {:?}",
                    breaker.max_open_for, breaker.open_for
                ),
            ));
        }
        bounds::MAX_OPEN_FOR.check(breaker.max_open_for)?;
        if breaker.enabled && !breaker.single_call_may_trip {
            // The breaker counts attempts: a call allowed as many attempts as a rule needs
            // failures could open the breaker for every caller on its own.
            let rules = [
                ("breaker.consecutive_failures", breaker.consecutive_failures),
                ("breaker.minimum_calls", breaker.minimum_calls),
            ];
            for (field, threshold) in rules {
                if threshold > 0 && retry.max_attempts >= threshold {
                    return Err(ConfigError::new(
                        "retry.max_attempts",
                        format!(
                            "must be below {field} ({threshold}), got {}: the breaker counts \
                             attempts, so one call's own retries would open it for every caller; \
                             lower one of them, or set breaker.single_call_may_trip = true",
                            retry.max_attempts
                        ),
                    ));
                }
            }
        }
        self.propagation.to_propagation().map(drop)
    }

    /// While the deadline is propagated, each attempt must leave the callee some time after the
    /// margin (see [`PROPAGATED_ATTEMPT_MIN`]). An attempt timeout that follows the deadline is
    /// blamed on the deadline, the setting the user chose.
    fn check_propagated_attempt(&self) -> Result<(), ConfigError> {
        let propagated = self.propagation.http || self.propagation.grpc;
        let attempt = self.effective_attempt_timeout();
        if !propagated || attempt >= PROPAGATED_ATTEMPT_MIN {
            return Ok(());
        }
        let field = if self.attempt_timeout.is_some() {
            "attempt_timeout"
        } else {
            "deadline"
        };
        Err(ConfigError::new(
            field,
            format!(
                "must be at least {PROPAGATED_ATTEMPT_MIN:?} while the deadline is propagated \
                 (10ms margin + 1ms for the callee), got {attempt:?}; or turn propagation.grpc \
                 and propagation.http off"
            ),
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::DEFAULT_ATTEMPT_TIMEOUT;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Policy::default().validate(), Ok(()));
    }

    #[test]
    fn cross_field_rules_name_the_field() {
        let policy = Policy {
            attempt_timeout: Some(Duration::from_secs(60)),
            ..Policy::default()
        };
        assert_eq!(
            policy.validate().map_err(|e| e.field().to_owned()),
            Err("attempt_timeout".into())
        );

        let mut policy = Policy::default();
        policy.retry.base_delay = Duration::from_secs(10);
        assert_eq!(
            policy.validate().map_err(|e| e.field().to_owned()),
            Err("retry.base_delay".into())
        );

        let mut policy = Policy::default();
        policy.retry.max_attempts = 0;
        assert_eq!(
            policy.validate().map_err(|e| e.field().to_owned()),
            Err("retry.max_attempts".into())
        );

        let mut policy = Policy::default();
        policy.retry.budget.ratio = 10.5;
        assert_eq!(
            policy.validate().map_err(|e| e.field().to_owned()),
            Err("retry.budget.ratio".into())
        );

        let mut policy = Policy::default();
        policy.breaker.minimum_calls = 4;
        policy.breaker.window_calls = 3;
        assert_eq!(
            policy.validate().map_err(|e| e.field().to_owned()),
            Err("breaker.minimum_calls".into())
        );
    }

    #[test]
    fn a_deadline_alone_is_valid_and_the_attempt_timeout_follows_it() {
        let policy = Policy {
            deadline: Duration::from_millis(300),
            ..Policy::default()
        };
        assert_eq!(policy.validate(), Ok(()));
        assert_eq!(policy.attempt_timeout, None);
        assert_eq!(
            policy.effective_attempt_timeout(),
            Duration::from_millis(300)
        );
        assert_eq!(
            Policy::default().effective_attempt_timeout(),
            DEFAULT_ATTEMPT_TIMEOUT
        );

        // One the user set and that contradicts the deadline is still an error naming both.
        let policy = Policy {
            attempt_timeout: Some(Duration::from_secs(10)),
            ..policy
        };
        let err = policy.validate().unwrap_err();
        assert_eq!(err.field(), "attempt_timeout");
        assert!(err.rule().contains("deadline"), "{}", err.rule());
    }

    #[test]
    fn one_calls_retries_cannot_trip_the_breaker_unless_allowed() {
        let mut policy = Policy::default();
        policy.retry.max_attempts = 5;
        let err = policy.validate().unwrap_err();
        assert_eq!(err.field(), "retry.max_attempts");
        assert!(
            err.rule().contains("breaker.consecutive_failures (5)"),
            "{}",
            err.rule()
        );

        let mut policy = Policy::default();
        policy.retry.max_attempts = 4;
        policy.breaker.minimum_calls = 4;
        let err = policy.validate().unwrap_err();
        assert!(
            err.rule().contains("breaker.minimum_calls (4)"),
            "{}",
            err.rule()
        );

        policy.breaker.single_call_may_trip = true;
        assert_eq!(policy.validate(), Ok(()));
        policy.breaker.single_call_may_trip = false;
        policy.breaker.enabled = false;
        assert_eq!(policy.validate(), Ok(()));
    }

    #[test]
    fn an_invalid_propagation_header_names_the_field() {
        let mut policy = Policy::default();
        policy.propagation.http = true;
        policy.propagation.header = "bad header".into();
        assert_eq!(policy.validate().unwrap_err().field(), "propagation.header");
        let mut policy = Policy::default();
        policy.propagation.http = true;
        policy.propagation.only_to = vec!["a b".into()];
        assert_eq!(
            policy.validate().unwrap_err().field(),
            "propagation.only_to"
        );
    }
}
