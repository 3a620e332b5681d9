//! `/metrics` scraped with a real HTTP client from the running examples: the built `axum_server`
//! and `gateway` binaries (`cargo build --examples`; `cargo test --workspace` builds them) are
//! started with `--serve` on a free loopback port, called so that series exist, scraped with
//! `backstop::Client`, and their Prometheus text searched for the README's series with exact
//! values. The child is killed at the end, and on a panic (a guard that kills it on drop).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use backstop::Client;
use common::bounded;
use http::StatusCode;
use http_body_util::BodyExt;

/// A running example, killed when dropped (at the test's end, or when an assert panics).
struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example binary next to this test's: `target/<profile>/examples/<name>`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/telemetry_prometheus-<hash>
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps");
    let path = profile
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: build the examples first (`cargo build --examples`, or run the whole \
         workspace's tests: `cargo test --workspace` builds them)",
        path.display()
    );
    path
}

/// Starts `name --serve --port 0 --admin-port 0` (two examples may run at once: neither may
/// take the status page's default port, 9901) and waits (at most 20 s) for the address it prints.
fn start(name: &str, banner: &str) -> Running {
    let mut child = Command::new(example(name))
        .args(["--serve", "--port", "0", "--admin-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Guarded from here: a panic below kills the child.
    let mut running = Running {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let (tx, rx) = mpsc::channel();
    let banner = banner.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(addr) = line.strip_prefix(&banner) {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the example prints its address");
    running.addr = addr.parse().unwrap();
    assert!(running.addr.ip().is_loopback(), "{addr}");
    running
}

async fn get(client: &Client, url: &str) -> (StatusCode, String) {
    let res = bounded(client.get(url)).await.unwrap();
    let status = res.status();
    let body = bounded(res.into_body().collect()).await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// The value of the sample `name{labels}` whose label set is exactly `labels` (in any order).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (found, got) = match series.split_once('{') {
            Some((found, rest)) => {
                let mut got: Vec<String> = rest
                    .strip_suffix('}')?
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect();
                got.sort();
                (found, got)
            }
            None => (series, Vec::new()),
        };
        (found == name && got == want).then(|| value.parse().ok())?
    })
}

fn has_type(text: &str, name: &str, kind: &str) -> bool {
    text.lines().any(|l| l == format!("# TYPE {name} {kind}"))
}

#[tokio::test]
async fn axum_server_serves_the_server_series() {
    let running = start("axum_server", "listening on http://");
    let base = format!("http://{}", running.addr);
    let client = Client::builder().max_attempts(1).build().unwrap();
    for _ in 0..2 {
        assert_eq!(get(&client, &format!("{base}/")).await.0, StatusCode::OK);
    }
    assert_eq!(
        get(&client, &format!("{base}/buggy")).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let (status, text) = get(&client, &format!("{base}/metrics")).await;
    assert_eq!(status, StatusCode::OK);

    let name = "http_server_request_duration";
    assert!(has_type(&text, name, "histogram"), "{text}");
    let ok = [
        ("http_request_method", "GET"),
        ("http_route", "/"),
        ("http_response_status_code", "200"),
    ];
    assert_eq!(
        sample(&text, &format!("{name}_count"), &ok),
        Some(2.0),
        "{text}"
    );
    let mut ok_inf = ok.to_vec();
    ok_inf.push(("le", "+Inf"));
    assert_eq!(sample(&text, &format!("{name}_bucket"), &ok_inf), Some(2.0));
    assert!(sample(&text, &format!("{name}_sum"), &ok).is_some());
    let failed = [
        ("http_request_method", "GET"),
        ("http_route", "/buggy"),
        ("http_response_status_code", "500"),
        ("error_type", "http_status"),
    ];
    assert_eq!(
        sample(&text, &format!("{name}_count"), &failed),
        Some(1.0),
        "{text}"
    );
    assert!(has_type(&text, "http_server_active_requests", "gauge"));
    assert_eq!(
        sample(
            &text,
            "http_server_active_requests",
            &[("http_request_method", "GET")]
        ),
        Some(0.0)
    );
    // The scrape itself is not under the stack: never counted.
    assert!(!text.contains("http_route=\"/metrics\""), "{text}");
}

#[tokio::test]
async fn gateway_serves_the_client_retry_and_server_series() {
    let running = start("gateway", "gateway listening on http://");
    let base = format!("http://{}", running.addr);
    let client = Client::builder().max_attempts(1).build().unwrap();
    // The catalog upstream fails twice, then answers: the gateway's client retries twice.
    let (status, _) = get(&client, &format!("{base}/catalog/items")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, text) = get(&client, &format!("{base}/metrics")).await;
    assert_eq!(status, StatusCode::OK);

    let host = [("server_address", "127.0.0.1")];
    assert!(
        has_type(&text, "backstop_retry_attempts", "counter"),
        "{text}"
    );
    assert_eq!(sample(&text, "backstop_retry_attempts", &host), Some(3.0));
    assert_eq!(
        sample(
            &text,
            "backstop_retry_retries",
            &[("server_address", "127.0.0.1"), ("reason", "http_status")]
        ),
        Some(2.0),
        "{text}"
    );
    let call = [
        ("http_request_method", "GET"),
        ("server_address", "127.0.0.1"),
        ("http_response_status_code", "200"),
    ];
    assert!(has_type(&text, "http_client_request_duration", "histogram"));
    assert_eq!(
        sample(&text, "http_client_request_duration_count", &call),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "http_client_active_requests", &host),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "http_client_connection_phase_duration_count",
            &[("phase", "tcp"), ("server_address", "127.0.0.1")]
        ),
        Some(1.0),
        "{text}"
    );
    // The gateway's server side: no route matched in axum (the gateway is its fallback).
    assert_eq!(
        sample(
            &text,
            "http_server_request_duration_count",
            &[
                ("http_request_method", "GET"),
                ("http_response_status_code", "200")
            ]
        ),
        Some(1.0),
        "{text}"
    );
}
