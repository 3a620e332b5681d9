//! [`ConfigError`]: an invalid configuration, rejected when it is built.

use std::fmt;

/// An invalid retry configuration, naming the field and the rule it broke.
///
/// ```
/// use backstop_retry::RetryLayer;
///
/// let err = RetryLayer::builder().max_attempts(0).build().unwrap_err();
/// assert_eq!(err.field(), "max_attempts");
/// println!("{err}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    rule: &'static str,
}

impl ConfigError {
    pub(crate) const fn new(field: &'static str, rule: &'static str) -> ConfigError {
        ConfigError { field, rule }
    }

    /// The field that was rejected, e.g. `"max_attempts"`.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The rule it broke, e.g. `"must be between 1 and 10"`.
    pub fn rule(&self) -> &'static str {
        self.rule
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid retry configuration: `{}` {}",
            self.field, self.rule
        )
    }
}

impl std::error::Error for ConfigError {}
