//! [`ConfigError`]: an invalid configuration, rejected when it is built.

/// The error of an invalid setting: which one, and the rule it broke (shared by every backstop
/// crate).
pub use backstop_classify::ConfigError;
