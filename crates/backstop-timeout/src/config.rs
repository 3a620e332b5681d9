//! [`ConfigError`]: invalid settings are rejected when a layer is built, never at call time.

use std::time::Duration;

/// The error of an invalid setting: which one, and the rule it broke (shared by every backstop
/// crate).
pub use backstop_classify::ConfigError;

/// The shortest bound any timer accepts: below a millisecond, tokio's timer wheel cannot honour it.
pub(crate) const MIN_BOUND: Duration = Duration::from_millis(1);

/// Rejects zero, sub-millisecond and absurdly long durations.
pub(crate) fn check_duration(
    field: &'static str,
    value: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    if value < MIN_BOUND {
        return Err(ConfigError::new(
            field,
            format!("must be at least {MIN_BOUND:?}, got {value:?}"),
        ));
    }
    if value > max {
        return Err(ConfigError::new(
            field,
            format!("must be at most {max:?}, got {value:?}"),
        ));
    }
    Ok(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_absurd_are_rejected_with_the_field_named() {
        let max = Duration::from_secs(60);
        let zero = check_duration("connect_timeout", Duration::ZERO, max).unwrap_err();
        assert_eq!(zero.field(), "connect_timeout");
        assert_eq!(
            zero.to_string(),
            "invalid setting `connect_timeout`: must be at least 1ms, got 0ns"
        );
        let huge = check_duration("connect_timeout", Duration::MAX, max).unwrap_err();
        assert!(
            huge.to_string()
                .starts_with("invalid setting `connect_timeout`: must be at most 60s")
        );
        assert_eq!(
            check_duration("connect_timeout", Duration::from_secs(1), max),
            Ok(Duration::from_secs(1))
        );
    }
}
