//! [`ConfigError`]: invalid settings are rejected when a layer is built, never at call time.

use std::fmt;
use std::time::Duration;

/// A setting was rejected when the layer was built.
///
/// The message names the setting and the rule it broke, e.g.
/// `connect_timeout: must be at least 1ms, got 0ns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    rule: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, rule: impl Into<String>) -> ConfigError {
        ConfigError {
            field,
            rule: rule.into(),
        }
    }

    /// The setting that was rejected, e.g. `"idle_timeout"`.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The rule it broke, in words.
    pub fn rule(&self) -> &str {
        &self.rule
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

impl std::error::Error for ConfigError {}

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
            "connect_timeout: must be at least 1ms, got 0ns"
        );
        let huge = check_duration("connect_timeout", Duration::MAX, max).unwrap_err();
        assert!(
            huge.to_string()
                .starts_with("connect_timeout: must be at most 60s")
        );
        assert_eq!(
            check_duration("connect_timeout", Duration::from_secs(1), max),
            Ok(Duration::from_secs(1))
        );
    }
}
