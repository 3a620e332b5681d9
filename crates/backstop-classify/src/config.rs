//! [`ConfigError`]: the one error every backstop builder returns for an invalid setting.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// An invalid setting, rejected when a layer is built (never at call time): which setting, and
/// the rule it broke.
///
/// ```
/// use std::time::Duration;
/// use backstop_classify::ConfigError;
///
/// let err = ConfigError::check_between("idle_timeout", Duration::ZERO, Duration::from_millis(1), Duration::from_secs(60))
///     .unwrap_err()
///     .within("route /catalog");
/// assert_eq!(err.field(), "route /catalog.idle_timeout");
/// assert_eq!(err.to_string(), "invalid setting `route /catalog.idle_timeout`: must be between 1ms and 60s, got 0ns");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: Cow<'static, str>,
    rule: Cow<'static, str>,
}

impl ConfigError {
    /// The setting `field` broke `rule`.
    pub fn new(field: impl Into<Cow<'static, str>>, rule: impl Into<Cow<'static, str>>) -> Self {
        ConfigError {
            field: field.into(),
            rule: rule.into(),
        }
    }

    /// The setting, e.g. `"attempt_timeout"` or, nested, `"retry.base_delay"`.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The rule it broke, in words.
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// The same error with its field nested under `prefix` (a section, a route):
    /// `prefix.field`.
    #[must_use]
    pub fn within(self, prefix: &str) -> ConfigError {
        ConfigError {
            field: Cow::Owned(format!("{prefix}.{}", self.field)),
            rule: self.rule,
        }
    }

    /// Accepts `value` if it lies within `min ..= max`, else names `field` and the range.
    pub fn check_between(
        field: &'static str,
        value: Duration,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        if value < min || value > max {
            Err(ConfigError::new(
                field,
                format!("must be between {min:?} and {max:?}, got {value:?}"),
            ))
        } else {
            Ok(value)
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid setting `{}`: {}", self.field, self.rule)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for std::io::Error {
    /// An invalid setting as an `InvalidInput` I/O error, for start-up code returning `io::Result`.
    fn from(err: ConfigError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, err)
    }
}
