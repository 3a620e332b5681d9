//! [`Http2KeepAlive`]: HTTP/2 PING heartbeats, so idle detection fires only on dead peers.

use std::time::Duration;

use crate::config::{ConfigError, MAX_KEEP_ALIVE, MIN_TIMEOUT, check_duration};

/// HTTP/2 keep-alive PING settings for hyper's client and server builders.
///
/// A PING every `interval`; a connection whose PING is not answered within `timeout` is closed.
/// With PINGs flowing, a live HTTP/2 connection always has bytes moving, so an idle timeout
/// ([`ConnectionIdleTimeoutLayer`](crate::ConnectionIdleTimeoutLayer),
/// [`ServerIdleTimeout`](crate::ServerIdleTimeout)) on it only ever fires on a peer that is truly
/// gone. [`for_idle_period`](Self::for_idle_period) gives settings that fit an idle period.
///
/// ```
/// use std::time::Duration;
/// use backstop_timeout::Http2KeepAlive;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
///
/// let ping = Http2KeepAlive::try_new(Duration::from_secs(10), Duration::from_secs(5))?;
/// let mut builder = Client::builder(TokioExecutor::new());
/// ping.apply_to_client(&mut builder);
/// # Ok::<(), backstop_timeout::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2KeepAlive {
    interval: Duration,
    timeout: Duration,
    while_idle: bool,
}

impl Http2KeepAlive {
    /// PINGs every `interval`, each answered within `timeout`, also while no stream is open;
    /// both as given (see [`try_new`](Self::try_new)).
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        Http2KeepAlive {
            interval,
            timeout,
            while_idle: true,
        }
    }

    /// Like [`new`](Self::new), with both between [`MIN_TIMEOUT`] and [`MAX_KEEP_ALIVE`];
    /// otherwise a [`ConfigError`] naming `keep_alive_interval` or `keep_alive_timeout`.
    pub fn try_new(interval: Duration, timeout: Duration) -> Result<Self, ConfigError> {
        Ok(Http2KeepAlive::new(
            check_duration("keep_alive_interval", interval, MIN_TIMEOUT, MAX_KEEP_ALIVE)?,
            check_duration("keep_alive_timeout", timeout, MIN_TIMEOUT, MAX_KEEP_ALIVE)?,
        ))
    }

    /// Settings that fit an idle period: a PING every third of the period, each allowed a third
    /// of the period for its answer (at least [`MIN_TIMEOUT`]), also while no stream is open.
    pub fn for_idle_period(period: Duration) -> Self {
        let third = (period / 3).max(MIN_TIMEOUT);
        Http2KeepAlive::new(third, third)
    }

    /// Whether a client also PINGs while no stream is open (default `true`: a pooled connection
    /// then stays provably alive). Servers always PING.
    #[must_use]
    pub fn while_idle(mut self, while_idle: bool) -> Self {
        self.while_idle = while_idle;
        self
    }

    /// The PING interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How long a PING may go unanswered.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets the PINGs (and the tokio timer they need) on hyper-util's client builder. With the
    /// `http2` feature.
    #[cfg(feature = "http2")]
    pub fn apply_to_client(&self, builder: &mut hyper_util::client::legacy::Builder) {
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .http2_keep_alive_interval(self.interval)
            .http2_keep_alive_timeout(self.timeout)
            .http2_keep_alive_while_idle(self.while_idle);
    }

    /// Sets the PINGs (and the tokio timer they need) on hyper-util's auto server builder. With
    /// the `http2-server` feature.
    #[cfg(feature = "http2-server")]
    pub fn apply_to_server<E>(&self, builder: &mut hyper_util::server::conn::auto::Builder<E>) {
        builder
            .http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(self.interval)
            .keep_alive_timeout(self.timeout);
    }
}
