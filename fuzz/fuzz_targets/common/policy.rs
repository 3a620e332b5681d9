//! What a loaded client policy promises, whichever format it came from.

use std::time::Duration;

use backstop::{ConfigError, Policy};

/// A load that failed names a field and a rule; one that succeeded is within every documented
/// bound and survives a round trip through both formats unchanged.
pub fn check(source: &str, loaded: Result<Policy, ConfigError>) {
    let policy = match loaded {
        Ok(policy) => policy,
        Err(err) => {
            assert!(!err.field().is_empty(), "{source:?}: no field in {err}");
            assert!(!err.rule().is_empty(), "{source:?}: no rule in {err}");
            return;
        }
    };
    assert_eq!(
        policy.validate().map_err(|e| e.to_string()),
        Ok(()),
        "{source:?}"
    );
    let (milli, day) = (Duration::from_millis(1), Duration::from_secs(86_400));
    for (name, d) in [
        ("deadline", policy.deadline),
        ("connect_timeout", policy.connect_timeout),
        ("idle_timeout", policy.idle_timeout),
    ] {
        assert!((milli..=day).contains(&d), "{source:?}: {name} = {d:?}");
    }
    let attempt = policy.effective_attempt_timeout();
    assert!(
        attempt >= milli && attempt <= policy.deadline,
        "{source:?}: attempt {attempt:?}"
    );
    let retry = &policy.retry;
    assert!((1..=backstop::retry::MAX_ATTEMPTS_LIMIT).contains(&retry.max_attempts));
    assert!(retry.base_delay <= retry.max_delay);
    assert!(retry.replay_limit <= backstop::retry::MAX_REPLAY_LIMIT);
    assert!((0.0..=1.0).contains(&retry.budget.ratio));
    assert!(policy.breaker.failure_rate > 0.0 && policy.breaker.failure_rate <= 1.0);
    assert!(policy.breaker.open_for <= policy.breaker.max_open_for);

    let toml = toml::to_string(&policy).expect("a policy serializes to TOML");
    let back = Policy::from_toml(&toml).map_err(|e| e.to_string());
    assert_eq!(
        back.as_ref(),
        Ok(&policy),
        "{source:?} through TOML {toml:?}"
    );
    let json = serde_json::to_string(&policy).expect("a policy serializes to JSON");
    let back = Policy::from_json(&json).map_err(|e| e.to_string());
    assert_eq!(
        back.as_ref(),
        Ok(&policy),
        "{source:?} through JSON {json:?}"
    );
}
