//! Bad input: invalid settings are rejected by the checked constructors, naming the setting;
//! `new` takes them as given; malformed
//! destinations fail as errors, never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use backstop_classify::{Kind, Phase};
use backstop_timeout::{
    BodyIdleTimeoutLayer, ConfigError, ConnectTimeoutLayer, ConnectionIdleTimeoutLayer,
    Http2KeepAlive, MAX_CONNECT_TIMEOUT, MAX_IDLE_TIMEOUT, MAX_KEEP_ALIVE, MIN_TIMEOUT,
    ServerIdleTimeout, TcpConnector,
};
use tower::ServiceExt;

const ZERO: Duration = Duration::ZERO;
const SUB_MILLI: Duration = Duration::from_micros(999);
const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);

fn assert_rejected(result: Result<impl std::fmt::Debug, ConfigError>, field: &str) {
    let err = result.unwrap_err();
    assert_eq!(err.field(), field);
    assert!(
        err.to_string()
            .starts_with(&format!("invalid setting `{field}`: must be")),
        "{err}"
    );
}

#[test]
fn zero_tiny_and_absurd_durations_are_rejected_naming_the_setting() {
    for bad in [ZERO, SUB_MILLI, CENTURY, Duration::MAX] {
        assert_rejected(ConnectTimeoutLayer::try_new(bad), "connect_timeout");
        assert_rejected(ConnectionIdleTimeoutLayer::try_new(bad), "idle_timeout");
        assert_rejected(ServerIdleTimeout::try_new(bad), "idle_timeout");
        assert_rejected(BodyIdleTimeoutLayer::try_new(bad), "body_idle_timeout");
        assert_rejected(
            Http2KeepAlive::try_new(bad, Duration::from_secs(1)),
            "keep_alive_interval",
        );
        assert_rejected(
            Http2KeepAlive::try_new(Duration::from_secs(1), bad),
            "keep_alive_timeout",
        );
        assert_rejected(
            TcpConnector::builder().attempt_timeout(bad).build(),
            "attempt_timeout",
        );
        assert_rejected(
            TcpConnector::builder().attempt_delay(bad).build(),
            "attempt_delay",
        );
    }
    // The limits themselves are accepted, and a hair beyond them is not.
    assert_eq!(MIN_TIMEOUT, Duration::from_millis(1));
    ConnectTimeoutLayer::try_new(MIN_TIMEOUT).unwrap();
    ConnectTimeoutLayer::try_new(MAX_CONNECT_TIMEOUT).unwrap();
    assert_rejected(
        ConnectTimeoutLayer::try_new(MAX_CONNECT_TIMEOUT + MIN_TIMEOUT),
        "connect_timeout",
    );
    ConnectionIdleTimeoutLayer::try_new(MAX_IDLE_TIMEOUT).unwrap();
    BodyIdleTimeoutLayer::try_new(MAX_IDLE_TIMEOUT).unwrap();
    ServerIdleTimeout::try_new(MAX_IDLE_TIMEOUT).unwrap();
    Http2KeepAlive::try_new(MAX_KEEP_ALIVE, MIN_TIMEOUT).unwrap();
    assert_rejected(
        Http2KeepAlive::try_new(MAX_KEEP_ALIVE + MIN_TIMEOUT, MIN_TIMEOUT),
        "keep_alive_interval",
    );
}

#[test]
fn new_never_fails_and_keeps_the_value_as_given() {
    // tower-http's rule: a layer's `new` takes what it is given; checking is `try_new`'s.
    assert_eq!(ConnectTimeoutLayer::new(CENTURY).timeout(), CENTURY);
    assert_eq!(ConnectionIdleTimeoutLayer::new(ZERO).period(), ZERO);
    assert_eq!(BodyIdleTimeoutLayer::new(SUB_MILLI).period(), SUB_MILLI);
    assert_eq!(ServerIdleTimeout::new(CENTURY).period(), CENTURY);
    assert_eq!(Http2KeepAlive::new(ZERO, CENTURY).timeout(), CENTURY);
}

#[test]
fn keep_alive_derived_from_the_idle_period_fits_inside_it() {
    let idle = ConnectionIdleTimeoutLayer::new(Duration::from_secs(30));
    let ping = idle.http2_keep_alive();
    assert!(ping.interval() + ping.timeout() < idle.period());
    assert_eq!(
        ServerIdleTimeout::new(idle.period()).http2_keep_alive(),
        ping
    );
    // Even the shortest period gives valid settings.
    let tiny = ConnectionIdleTimeoutLayer::new(MIN_TIMEOUT);
    assert!(tiny.http2_keep_alive().interval() >= MIN_TIMEOUT);
}

#[tokio::test]
async fn a_destination_without_a_host_fails_without_panicking() {
    // No host at all (the system resolver is never reached).
    let uri: http::Uri = "/just/a/path".parse().unwrap();
    let err = TcpConnector::new().oneshot(uri).await.unwrap_err();
    assert_eq!(err.kind(), Kind::Other, "{err}");
    assert_eq!(err.phase(), Phase::Local, "{err}");
}
