//! Bad input: invalid settings are rejected when a layer is built, naming the setting; malformed
//! destinations fail as errors, never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use backstop_classify::{Kind, Phase};
use backstop_timeout::{
    BodyIdleTimeoutLayer, ConfigError, ConnectTimeoutLayer, Http2KeepAlive, IdleTimeoutLayer,
    TcpConnector,
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
        assert_rejected(ConnectTimeoutLayer::new(bad), "connect_timeout");
        assert_rejected(IdleTimeoutLayer::new(bad), "idle_timeout");
        assert_rejected(BodyIdleTimeoutLayer::new(bad), "body_idle_timeout");
        assert_rejected(
            Http2KeepAlive::new(bad, Duration::from_secs(1)),
            "keep_alive_interval",
        );
        assert_rejected(
            Http2KeepAlive::new(Duration::from_secs(1), bad),
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
    // The limits themselves are accepted.
    ConnectTimeoutLayer::new(Duration::from_millis(1)).unwrap();
    ConnectTimeoutLayer::new(backstop_timeout::MAX_CONNECT_TIMEOUT).unwrap();
    IdleTimeoutLayer::new(backstop_timeout::MAX_IDLE_TIMEOUT).unwrap();
}

#[test]
fn keep_alive_derived_from_the_idle_period_fits_inside_it() {
    let idle = IdleTimeoutLayer::new(Duration::from_secs(30)).unwrap();
    let ping = idle.http2_keep_alive();
    assert!(ping.interval() + ping.timeout() < idle.period());
    // Even the shortest period gives valid settings.
    let tiny = IdleTimeoutLayer::new(Duration::from_millis(1)).unwrap();
    assert!(tiny.http2_keep_alive().interval() >= Duration::from_millis(1));
}

#[tokio::test]
async fn a_destination_without_a_host_fails_without_panicking() {
    // No host at all (the system resolver is never reached).
    let uri: http::Uri = "/just/a/path".parse().unwrap();
    let err = TcpConnector::new().oneshot(uri).await.unwrap_err();
    assert_eq!(err.kind(), Kind::Other, "{err}");
    assert_eq!(err.phase(), Phase::Local, "{err}");
}
