//! [`ServeConfig`]: the server's timeouts and limits, validated when built.

use std::time::Duration;

use backstop_timeout::{Http2KeepAlive, ServerIdleTimeout};

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
/// | `max_connections` (open connections; at the cap the server stops accepting) | 10 000 | 1 ..= 1 000 000 |
///
/// The idle timeout covers request bodies too, like nginx's `client_body_timeout`: a handler
/// waiting longer than the period for the next piece of its request body gets an error instead of
/// being held by a client that sends a byte now and then (see [`IncomingBody`](crate::IncomingBody)).
///
/// Why 10 000 connections: far above what one instance serves well at once, so it never limits
/// normal traffic, yet a bound on what a flood of idle or slow connections can pin (each holds a
/// file descriptor and some tens of KiB of buffers: about half a GiB at the cap). With the common
/// soft file limit of 1 024 the process runs out of descriptors first, which the accept loop
/// survives by backing off; raise `RLIMIT_NOFILE` above the cap to let the cap decide.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle: Option<ServerIdleTimeout>,
    pub(crate) drain_timeout: Duration,
    pub(crate) accept_backoff: Duration,
    pub(crate) http2_max_concurrent_streams: u32,
    pub(crate) http2_keep_alive: Option<Http2KeepAlive>,
    pub(crate) max_connections: usize,
}

/// The default cap on open connections (see [`ServeConfig`] for why).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The highest cap on open connections accepted.
const MAX_MAX_CONNECTIONS: usize = 1_000_000;

impl Default for ServeConfig {
    fn default() -> Self {
        // The defaults are within their bounds by construction; fall back field by field so no
        // panic is possible even if a bound changes.
        ServeConfig {
            header_read_timeout: Duration::from_secs(10),
            idle: Some(ServerIdleTimeout::new(Duration::from_secs(60))),
            drain_timeout: Duration::from_secs(30),
            accept_backoff: Duration::from_millis(5),
            http2_max_concurrent_streams: 200,
            http2_keep_alive: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
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
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

    /// The header read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        self.header_read_timeout
    }

    /// The idle timeout on accepted streams, if on.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle.as_ref().map(ServerIdleTimeout::period)
    }

    /// How long shutdown waits for in-flight requests.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    /// The most connections open at once.
    pub fn max_connections(&self) -> usize {
        self.max_connections
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
    max_connections: usize,
}

impl ServeConfigBuilder {
    /// How long a client may take to send a complete request head (and the TLS handshake).
    #[must_use]
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Drop a connection when no byte moves for this long while one is awaited, and fail a
    /// request body read that waits this long for the next bytes; `None` turns both off (not
    /// recommended: a silent client then holds its connection, and a trickling one its handler,
    /// until the request deadline or forever).
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

    /// The most connections open at once (default 10 000). At the cap the server stops
    /// accepting — new connections wait in the listen backlog, they are neither accepted and
    /// closed nor refused — until an open connection ends.
    #[must_use]
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
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
        if !(1..=MAX_MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(ConfigError::new(
                "max_connections",
                format!(
                    "must be between 1 and {MAX_MAX_CONNECTIONS}, got {}",
                    self.max_connections
                ),
            ));
        }
        let idle = match self.idle_timeout {
            Some(period) => Some(ServerIdleTimeout::try_new(period)?),
            None => None,
        };
        Ok(ServeConfig {
            header_read_timeout: self.header_read_timeout,
            idle,
            drain_timeout: self.drain_timeout,
            accept_backoff: self.accept_backoff,
            http2_max_concurrent_streams: self.http2_max_concurrent_streams,
            http2_keep_alive: self.http2_keep_alive,
            max_connections: self.max_connections,
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
        for bad in [0, 1_000_001] {
            let err = ServeConfig::builder().max_connections(bad).build().err();
            assert_eq!(err.as_ref().map(|e| e.field()), Some("max_connections"));
        }
        assert_eq!(
            ServeConfig::default().max_connections(),
            DEFAULT_MAX_CONNECTIONS
        );
    }
}
