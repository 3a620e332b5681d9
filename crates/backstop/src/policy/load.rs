//! Loading a [`Policy`] from TOML or JSON, with errors that name the field.

use std::fmt;

use super::{ConfigError, Policy};

impl Policy {
    /// Parses a policy from TOML, naming the field of any error.
    pub fn from_toml(text: &str) -> Result<Policy, ConfigError> {
        let de = toml::Deserializer::new(text);
        let policy: Policy = serde_path_to_error::deserialize(de).map_err(path_error)?;
        policy.validate()?;
        Ok(policy)
    }

    /// Parses a policy from JSON, naming the field of any error.
    pub fn from_json(text: &str) -> Result<Policy, ConfigError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let policy: Policy = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
        policy.validate()?;
        Ok(policy)
    }
}

pub(crate) fn path_error<E: fmt::Display>(err: serde_path_to_error::Error<E>) -> ConfigError {
    let path = err.path().to_string();
    let inner = err.into_inner().to_string();
    // toml's messages carry a multi-line excerpt; keep the first line, which says what is wrong.
    let first = inner
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let rule = inner
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::trim)
        .filter(|last| *last != first)
        .map_or_else(|| first.to_owned(), |last| format!("{first}: {last}"));
    let field = match path.as_str() {
        "." => "(root)".to_owned(),
        // An unknown key spelled `""` (`{"": 1}`, `[""]`): named as written, not as nothing.
        "" => "\"\"".to_owned(),
        _ => path,
    };
    ConfigError::new(field, rule)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn toml_errors_name_the_field() {
        let err = Policy::from_toml("retries = 3").err();
        let err = err.map(|e| (e.field().to_owned(), e.rule().to_owned()));
        let (field, rule) = err.unwrap_or_default();
        assert_eq!(field, "retries");
        assert!(rule.contains("unknown field `retries`"), "{rule}");

        let err = Policy::from_toml("[retry]\nbase_delay = \"-5s\"").err();
        assert_eq!(
            err.map(|e| e.field().to_owned()),
            Some("retry.base_delay".to_owned())
        );

        let err = Policy::from_toml("deadline = \"1s\"\nattempt_timeout = \"2s\"").err();
        assert_eq!(
            err.map(|e| e.field().to_owned()),
            Some("attempt_timeout".to_owned())
        );

        let ok = Policy::from_json(
            r#"{"deadline": "250ms", "attempt_timeout": "100ms", "connect_timeout": "50ms"}"#,
        );
        assert_eq!(ok.map(|p| p.deadline), Ok(Duration::from_millis(250)));
    }

    /// The configuration shown in README.md.
    #[test]
    fn the_readme_example_loads() {
        let policy = Policy::from_toml(
            r#"
deadline = "2s"
attempt_timeout = "500ms"
[retry]
max_attempts = 1
[propagation]
http = true
only_to = ["*.internal"]
"#,
        )
        .unwrap();
        assert_eq!(policy.propagation.only_to, ["*.internal"]);
        assert!(policy.propagation.http);
    }
}
