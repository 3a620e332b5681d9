//! The bounds of every setting of this crate, and [`ConfigError`] for a value outside them.
//!
//! Constructors (`new`) take values as given; the checked constructors (`try_new`, the
//! builders' `build`) and a caller's own validation (the `backstop` facade's `Policy`) use these
//! bounds, so one set of numbers applies everywhere.

use std::time::Duration;

/// The error of an invalid setting: which one, and the rule it broke (shared by every backstop
/// crate).
pub use backstop_classify::ConfigError;

/// The shortest bound any timer of this crate accepts (1 ms): below a millisecond, tokio's timer
/// wheel cannot honour it.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// The longest connect bound accepted (10 minutes): anything longer is a configuration mistake.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(600);

/// The longest idle period accepted (24 hours), for connections, bodies and server streams.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The longest HTTP/2 keep-alive PING interval or timeout accepted (1 hour).
pub const MAX_KEEP_ALIVE: Duration = Duration::from_secs(3600);

/// Checks an idle period against [`MIN_TIMEOUT`]..=[`MAX_IDLE_TIMEOUT`].
pub(crate) fn check_period(field: &'static str, period: Duration) -> Result<Duration, ConfigError> {
    check_duration(field, period, MIN_TIMEOUT, MAX_IDLE_TIMEOUT)
}

/// Rejects durations outside `min..=max` (zero, sub-millisecond, absurdly long), naming `field`.
pub(crate) fn check_duration(
    field: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    if value < min {
        return Err(ConfigError::new(
            field,
            format!("must be at least {min:?}, got {value:?}"),
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
        let zero = check_duration("connect_timeout", Duration::ZERO, MIN_TIMEOUT, max).unwrap_err();
        assert_eq!(zero.field(), "connect_timeout");
        assert_eq!(
            zero.to_string(),
            "invalid setting `connect_timeout`: must be at least 1ms, got 0ns"
        );
        let huge = check_duration("connect_timeout", Duration::MAX, MIN_TIMEOUT, max).unwrap_err();
        assert!(
            huge.to_string()
                .starts_with("invalid setting `connect_timeout`: must be at most 60s")
        );
        assert_eq!(
            check_duration("connect_timeout", Duration::from_secs(1), MIN_TIMEOUT, max),
            Ok(Duration::from_secs(1))
        );
    }
}
