//! [`ConfigError`]: an invalid configuration, rejected when a layer is built.

use std::fmt;

/// A configuration rejected by a builder: which field, and the rule it broke.
///
/// ```
/// use std::time::Duration;
/// use backstop_deadline::DeadlineLayer;
///
/// let err = DeadlineLayer::builder().timeout(Duration::ZERO).build().unwrap_err();
/// assert_eq!(err.field(), "timeout");
/// println!("{err}");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    rule: &'static str,
}

impl ConfigError {
    pub(crate) const fn new(field: &'static str, rule: &'static str) -> ConfigError {
        ConfigError { field, rule }
    }

    /// The field that is wrong, e.g. `"timeout"` or `"propagation.margin"`.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The rule it broke, e.g. `"must be greater than zero"`.
    pub fn rule(&self) -> &'static str {
        self.rule
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid deadline configuration: `{}` {}",
            self.field, self.rule
        )
    }
}

impl std::error::Error for ConfigError {}
