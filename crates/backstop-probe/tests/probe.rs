//! The probe, run as a binary against the chaos upstream in this test process: each failing
//! layer is named, timed out or classified, and exits with its own code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;
use std::time::Duration;

use backstop_chaos::{ChaosServer, ConnectionFault, Fault, RetryAfter, closed_port_addr};
use serde_json::Value;

/// Runs the probe off the runtime's threads, bounded in time.
async fn probe(args: &[&str]) -> (i32, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out: Output = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_backstop-probe"))
                .args(&args)
                .env("NO_COLOR", "1")
                .output()
                .unwrap()
        }),
    )
    .await
    .expect("the probe ends on its own")
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_is_a_connect_failure() {
    let addr = closed_port_addr().unwrap();
    let (code, out) = probe(&[&format!("http://{addr}/")]).await;
    assert_eq!(code, 7, "{out}");
    assert!(out.contains("FAILED at tcp connect: refused"), "{out}");
    assert!(
        out.contains(&format!("nothing is listening on {addr}")),
        "{out}"
    );
    assert!(out.contains("ss -tlnp"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_never_completes_times_out_in_tls() {
    let stall = ConnectionFault::TlsStall.start().await.unwrap();
    let url = format!("https://{}/", stall.addr());
    let (code, out) = probe(&[&url, "--connect-timeout", "300ms"]).await;
    assert_eq!(code, 28, "{out}");
    assert!(out.contains("FAILED at tls: timed out"), "{out}");
    assert!(out.contains("openssl s_client -connect"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_names_its_issuer() {
    let chaos = ChaosServer::builder().tls(true).start().await.unwrap();
    let (code, out) = probe(&[&chaos.url("/")]).await;
    assert_eq!(code, 60, "{out}");
    assert!(out.contains("FAILED at tls: tls certificate"), "{out}");
    assert!(
        out.contains("issuer     CN=backstop-chaos test CA"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_before_headers_times_out_awaiting_headers() {
    let chaos = ChaosServer::start().await.unwrap();
    let url = chaos.fault_url(&Fault::StallHeaders { duration: None });
    let (code, out) = probe(&[&url, "--timeout", "400ms"]).await;
    assert_eq!(code, 28, "{out}");
    assert!(
        out.contains("FAILED at http (awaiting headers): timed out"),
        "{out}"
    );
    assert!(out.contains("curl -v"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_shows_status_and_retry_after() {
    let chaos = ChaosServer::start().await.unwrap();
    let url = chaos.fault_url(&Fault::status_retry_after(503, RetryAfter::Seconds(7)));
    let (code, out) = probe(&[&url]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("HTTP/1.1 503 Service Unavailable"), "{out}");
    assert!(out.contains("retry-after     7"), "{out}");
    let (code, out) = probe(&[&url, "--fail"]).await;
    assert_eq!(code, 22, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_plain_http_is_h2c() {
    let chaos = ChaosServer::start().await.unwrap();
    let (code, out) = probe(&[&chaos.url("/"), "--http2"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("HTTP/2.0 200 OK"), "{out}");
    let (code, out) = probe(&[&chaos.url("/")]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("HTTP/1.1 200 OK"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_a_protocol_failure() {
    let chaos = ChaosServer::start().await.unwrap();
    let (code, out) = probe(&[&chaos.fault_url(&Fault::Garbage)]).await;
    assert_eq!(code, 56, "{out}");
    assert!(out.contains("protocol"), "{out}");
}

/// A name through --resolve, TLS trusted through --cacert: every phase timed, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_times_every_phase_and_matches_the_schema() {
    let chaos = ChaosServer::builder().tls(true).start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("backstop-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, chaos.ca_cert_pem().unwrap()).unwrap();
    let port = chaos.addr().port();
    let url = format!("https://localhost:{port}/");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let ca = ca.to_str().unwrap();
    let (code, out) = probe(&[&url, "--resolve", &resolve, "--cacert", ca, "--json"]).await;
    assert_eq!(code, 0, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let schema: Value =
        serde_json::from_str(include_str!("../schema/probe-report.v1.json")).unwrap();
    check(&schema, &report, "$");
    assert_eq!(report["schema_version"], 1);
    let f = |v: &Value| v.as_f64().unwrap();
    let (resolve_ms, tcp, tls) = (
        f(&report["resolve"]["ms"]),
        f(&report["connect"]["ms"]),
        f(&report["tls"]["ms"]),
    );
    let (ttfb, total) = (f(&report["http"]["ttfb_ms"]), f(&report["total_ms"]));
    // Every phase, timed from the moment the connector reported it.
    assert!(resolve_ms > 0.0 && tcp > 0.0 && tls > 0.0, "{out}");
    assert!(resolve_ms + tcp + tls < ttfb && ttfb <= total, "{out}");
    assert_eq!(report["tls"]["details"]["certificate"]["name_match"], true);
    assert_eq!(report["tls"]["details"]["trusted"], true);

    let (code, out) = probe(&[&url, "--resolve", &resolve, "--cacert", ca]).await;
    assert_eq!(code, 0, "{out}");
    for row in [
        "resolve",
        "tcp connect",
        "tls",
        "first byte",
        "body",
        "total",
    ] {
        assert!(out.contains(&format!("  {row}")), "{row}: {out}");
    }
    assert!(out.contains("localhost → 127.0.0.1 (--resolve)"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_reports_percentiles() {
    let chaos = ChaosServer::start().await.unwrap();
    let (code, out) = probe(&[&chaos.url("/"), "--count", "20"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("20 runs, 0 failed"), "{out}");
    assert!(
        out.contains("min") && out.contains("median") && out.contains("p99"),
        "{out}"
    );
    assert!(out.contains("  tcp connect"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_sends_and_prints_what_comes_back() {
    let chaos = ChaosServer::start().await.unwrap();
    let target = chaos.addr().to_string();
    let (code, out) = probe(&[
        "tcp",
        &target,
        "--send",
        "GET / HTTP/1.0\\r\\n\\r\\n",
        "--read-timeout",
        "500ms",
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("HTTP/1.0 200") || out.contains("HTTP/1.1 200"),
        "{out}"
    );
    let (code, out) = probe(&["tcp", &closed_port_addr().unwrap().to_string()]).await;
    assert_eq!(code, 7, "{out}");
}

/// A small JSON Schema check: `type` (with null unions), `required`, `properties`, `items`,
/// `additionalProperties: false`, `const` — what the schema file uses.
fn check(schema: &Value, v: &Value, at: &str) {
    if let Some(c) = schema.get("const") {
        assert_eq!(v, c, "{at}: const");
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "null" => v.is_null(),
            "boolean" => v.is_boolean(),
            "integer" => v.is_u64() || v.is_i64(),
            "number" => v.is_number(),
            "string" => v.is_string(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => false,
        });
        assert!(ok, "{at}: {v} is not {types:?}");
    }
    if let (Some(obj), Some(req)) = (v.as_object(), schema.get("required")) {
        for r in req.as_array().unwrap() {
            assert!(obj.contains_key(r.as_str().unwrap()), "{at}: missing {r}");
        }
    }
    if let (Some(obj), Some(props)) = (v.as_object(), schema.get("properties")) {
        let props = props.as_object().unwrap();
        for (k, val) in obj {
            match props.get(k) {
                Some(s) => check(s, val, &format!("{at}.{k}")),
                None => assert!(
                    schema.get("additionalProperties") != Some(&Value::Bool(false)),
                    "{at}: {k} is not in the schema"
                ),
            }
        }
    }
    if let (Some(arr), Some(items)) = (v.as_array(), schema.get("items")) {
        for (i, item) in arr.iter().enumerate() {
            check(items, item, &format!("{at}[{i}]"));
        }
    }
}
