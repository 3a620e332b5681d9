//! Prometheus for the examples: the `metrics` recorder that backstop's `metrics` feature records
//! into, and the route that serves what it holds (`GET /metrics`, the text exposition format).
//!
//! Histograms are rendered as Prometheus histograms (`_bucket`, `_sum`, `_count`) over
//! OpenTelemetry's recommended boundaries for HTTP durations; names and label keys are backstop's
//! with every `.` written `_` (`http.client.request.duration` → `http_client_request_duration`).

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

/// OpenTelemetry's recommended bucket boundaries for `http.*.request.duration`, in seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Installs the Prometheus recorder for the whole process (once: a second call fails) and keeps
/// its histograms drained in the background (the exporter's upkeep, every 5 s).
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&DURATION_BUCKETS)?
        .install_recorder()?;
    // The `# HELP` line of every backstop series.
    backstop::metrics::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// `GET /metrics`: the series in Prometheus' text format. Merge it into an app *after* its
/// `ServerStack` layer, so scrapes are neither shed nor counted as traffic.
pub fn route(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    handle.render(),
                )
            }
        }),
    )
}

/// The port given as `--port <n>` (`0`, a free port, when absent). The examples listen on
/// 127.0.0.1 only.
pub fn port_arg() -> Result<u16, String> {
    let mut args = std::env::args().skip_while(|arg| arg != "--port");
    match (args.next(), args.next()) {
        (None, _) => Ok(0),
        (Some(_), Some(port)) => port
            .parse()
            .map_err(|_| format!("--port: a port number (0 ..= 65535), got {port:?}")),
        (Some(_), None) => Err("--port: a port number is missing".to_owned()),
    }
}
