//! [`ServerIdleTimeout`]: drops server connections on which the client says nothing.

use std::sync::Arc;
use std::time::Duration;

use crate::activity::{Activity, ServerActivity};
use crate::config::{ConfigError, check_period};
use crate::io::{IdleIo, Side};
use crate::keepalive::Http2KeepAlive;

/// Wraps streams accepted by a server (plain TCP, TLS, anything `AsyncRead + AsyncWrite`) so that
/// a client that connects and stays silent — slowloris, a dead peer, a half-open connection — is
/// dropped after the idle period, from the very first read on, which hyper's
/// `header_read_timeout` does not cover (see [`Side::Server`]).
///
/// Not a tower layer: it wraps the IO of each accepted connection, before hyper sees it.
///
/// ```
/// use std::time::Duration;
/// use backstop_timeout::ServerIdleTimeout;
/// use hyper_util::rt::{TokioExecutor, TokioIo};
/// use hyper_util::server::conn::auto;
/// use tower::Layer;
///
/// # async fn accept_loop(listener: tokio::net::TcpListener) -> Result<(), Box<dyn std::error::Error>> {
/// let idle = ServerIdleTimeout::try_new(Duration::from_secs(30))?;
/// loop {
///     let (tcp, _) = listener.accept().await?;
///     let (io, activity) = idle.wrap_tracked(tcp);
///     let service = activity.layer(hyper::service::service_fn(|_req| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("ok")))
///     }));
///     tokio::spawn(async move {
///         let _ = auto::Builder::new(TokioExecutor::new())
///             .serve_connection(TokioIo::new(io), service)
///             .await;
///     });
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerIdleTimeout {
    period: Duration,
}

impl ServerIdleTimeout {
    /// Connections idle for `period` are dropped; `period` as given (see
    /// [`try_new`](Self::try_new)).
    pub fn new(period: Duration) -> Self {
        ServerIdleTimeout { period }
    }

    /// Like [`new`](Self::new), with `period` between [`MIN_TIMEOUT`](crate::MIN_TIMEOUT) and [`MAX_IDLE_TIMEOUT`](crate::MAX_IDLE_TIMEOUT);
    /// otherwise a [`ConfigError`] naming `idle_timeout`.
    pub fn try_new(period: Duration) -> Result<Self, ConfigError> {
        check_period("idle_timeout", period).map(Self::new)
    }

    /// The idle period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Wraps an accepted stream. Give hyper `TokioIo::new(idle.wrap(stream))`.
    pub fn wrap<S>(&self, stream: S) -> IdleIo<S> {
        IdleIo::new(stream, self.period, Side::Server)
    }

    /// Wraps an accepted stream like [`wrap`](Self::wrap), and returns the connection's
    /// [`ServerActivity`]: layer it around the connection's service so that a handler thinking
    /// longer than the period does not get its connection cut.
    pub fn wrap_tracked<S>(&self, stream: S) -> (IdleIo<S>, ServerActivity) {
        let activity = Arc::new(Activity::default());
        let io = IdleIo::new(stream, self.period, Side::Server).with_activity(activity.clone());
        (io, ServerActivity::shared(activity))
    }

    /// HTTP/2 keep-alive PING settings that fit this period
    /// ([`Http2KeepAlive::for_idle_period`]).
    pub fn http2_keep_alive(&self) -> Http2KeepAlive {
        Http2KeepAlive::for_idle_period(self.period)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::{MAX_IDLE_TIMEOUT, MIN_TIMEOUT};

    #[test]
    fn the_period_is_checked_only_by_try_new() {
        assert_eq!(
            ServerIdleTimeout::new(Duration::ZERO).period(),
            Duration::ZERO
        );
        let err = ServerIdleTimeout::try_new(Duration::ZERO).unwrap_err();
        assert_eq!(err.field(), "idle_timeout");
        assert!(ServerIdleTimeout::try_new(MIN_TIMEOUT).is_ok());
        assert!(ServerIdleTimeout::try_new(MAX_IDLE_TIMEOUT + MIN_TIMEOUT).is_err());
    }
}
