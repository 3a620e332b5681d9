//! [`ServeConfig`]: the server's timeouts and limits, validated when built.

use std::time::Duration;

use backstop_timeout::{Http2KeepAlive, IdleTimeoutLayer};

/// The error of an invalid setting: which one, and the rule it broke (shared by every backstop
/// crate).
pub use backstop_classify::ConfigError;

/// The server's timeouts and limits. Build with [`ServeConfig::builder`]; `Default` gives the
/// documented defaults.
///
/// | setting | default | bounds |
/// |---|---|---|
/// | `header_read_timeout` (also bounds the TLS handshake) | 10 s | 1 ms ..= 10 min |
/// | `idle_timeout` (no byte in either direction while one is awaited) | 60 s | 1 ms ..= 24 h, or off |
/// | `drain_timeout` | 30 s | 0 ..= 10 min |
/// | `accept_backoff` (first pause after a failed accept; doubles up to 1 s) | 5 ms | 1 ms ..= 1 s |
/// | `http2_max_concurrent_streams` | 200 | 1 ..= 10 000 |
/// | `http2_keep_alive` | off | see `Http2KeepAlive` |
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle: Option<IdleTimeoutLayer>,
    pub(crate) drain_timeout: Duration,
    pub(crate) accept_backoff: Duration,
    pub(crate) http2_max_concurrent_streams: u32,
    pub(crate) http2_keep_alive: Option<Http2KeepAlive>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        // The defaults are within their bounds by construction; fall back field by field so no
        // panic is possible even if a bound changes.
        ServeConfig {
            header_read_timeout: Duration::from_secs(10),
            idle: IdleTimeoutLayer::new(Duration::from_secs(60)).ok(),
            drain_timeout: Duration::from_secs(30),
            accept_backoff: Duration::from_millis(5),
            http2_max_concurrent_streams: 200,
            http2_keep_alive: None,
        }
    }
}

impl ServeConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ServeConfigBuilder {
        ServeConfigBuilder {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(60)),
            drain_timeout: Duration::from_secs(30),
            accept_backoff: Duration::from_millis(5),
            http2_max_concurrent_streams: 200,
            http2_keep_alive: None,
        }
    }

    /// The header read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        self.header_read_timeout
    }

    /// The idle timeout on accepted streams, if on.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle.as_ref().map(IdleTimeoutLayer::period)
    }

    /// How long shutdown waits for in-flight requests.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }
}

/// Builds a [`ServeConfig`], checking every value in [`build`](ServeConfigBuilder::build).
#[derive(Debug, Clone)]
pub struct ServeConfigBuilder {
    header_read_timeout: Duration,
    idle_timeout: Option<Duration>,
    drain_timeout: Duration,
    accept_backoff: Duration,
    http2_max_concurrent_streams: u32,
    http2_keep_alive: Option<Http2KeepAlive>,
}

impl ServeConfigBuilder {
    /// How long a client may take to send a complete request head (and the TLS handshake).
    #[must_use]
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Drop a connection when no byte moves for this long while one is awaited; `None` turns it
    /// off (not recommended: a silent client then holds its connection forever).
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long shutdown waits for in-flight requests before abandoning them.
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// The first pause after a failed accept (it doubles on each further failure, up to 1 s).
    #[must_use]
    pub fn accept_backoff(mut self, backoff: Duration) -> Self {
        self.accept_backoff = backoff;
        self
    }

    /// The most concurrent streams one HTTP/2 connection may open.
    #[must_use]
    pub fn http2_max_concurrent_streams(mut self, max: u32) -> Self {
        self.http2_max_concurrent_streams = max;
        self
    }

    /// HTTP/2 keep-alive PINGs, so a dead peer is noticed on a long-lived connection.
    #[must_use]
    pub fn http2_keep_alive(mut self, keep_alive: Option<Http2KeepAlive>) -> Self {
        self.http2_keep_alive = keep_alive;
        self
    }

    /// Checks every setting.
    pub fn build(self) -> Result<ServeConfig, ConfigError> {
        ConfigError::check_between(
            "header_read_timeout",
            self.header_read_timeout,
            Duration::from_millis(1),
            Duration::from_secs(600),
        )?;
        ConfigError::check_between(
            "drain_timeout",
            self.drain_timeout,
            Duration::ZERO,
            Duration::from_secs(600),
        )?;
        ConfigError::check_between(
            "accept_backoff",
            self.accept_backoff,
            Duration::from_millis(1),
            Duration::from_secs(1),
        )?;
        if !(1..=10_000).contains(&self.http2_max_concurrent_streams) {
            return Err(ConfigError::new(
                "http2_max_concurrent_streams",
                format!(
                    "must be between 1 and 10000, got {}",
                    self.http2_max_concurrent_streams
                ),
            ));
        }
        let idle = match self.idle_timeout {
            Some(period) => Some(
                IdleTimeoutLayer::new(period)
                    .map_err(|err| ConfigError::new("idle_timeout", err.rule().to_owned()))?,
            ),
            None => None,
        };
        Ok(ServeConfig {
            header_read_timeout: self.header_read_timeout,
            idle,
            drain_timeout: self.drain_timeout,
            accept_backoff: self.accept_backoff,
            http2_max_concurrent_streams: self.http2_max_concurrent_streams,
            http2_keep_alive: self.http2_keep_alive,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_build() {
        let config = ServeConfig::builder().build();
        assert!(config.is_ok());
        assert_eq!(
            ServeConfig::default().idle_timeout(),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = ServeConfig::builder()
            .header_read_timeout(Duration::ZERO)
            .build()
            .err();
        assert_eq!(err.as_ref().map(|e| e.field()), Some("header_read_timeout"));
        let err = ServeConfig::builder()
            .drain_timeout(Duration::from_secs(86_400))
            .build()
            .err();
        assert_eq!(err.as_ref().map(|e| e.field()), Some("drain_timeout"));
        let err = ServeConfig::builder()
            .idle_timeout(Some(Duration::ZERO))
            .build()
            .err();
        assert_eq!(err.as_ref().map(|e| e.field()), Some("idle_timeout"));
        let err = ServeConfig::builder()
            .http2_max_concurrent_streams(0)
            .build()
            .err();
        assert_eq!(
            err.as_ref().map(|e| e.field()),
            Some("http2_max_concurrent_streams")
        );
    }
}
