//! The gateway between real peers: `curl` as the client, `nginx` as the upstream. nginx logs
//! every header it received (the test writes its configuration into a temporary directory and
//! reads its access log), so what the gateway forwards is checked at a server the gateway's code
//! did not write. Loopback only; nginx runs as a child process of the test, never as a service.
//!
//! A missing peer fails the test with the command that installs it (`scripts/test` installs
//! both): these tests never skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::serve_axum;
use std::collections::HashMap;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backstop::Gateway;

/// Where a peer binary is: on `PATH`, or in the sbin directories a non-root `PATH` may lack.
/// Panics, naming how to get it, when it is nowhere.
fn peer(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let candidates = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name));
    for candidate in candidates {
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "{name} not found (these tests run it as a real peer): run scripts/test, which installs \
         it, or apt-get install {name}"
    );
}

/// Polls `ready` every 10 ms, at most 200 times (about 2 s): readiness, not a sleep.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    for _ in 0..200 {
        if ready() {
            return;
        }
        if start.elapsed() > Duration::from_secs(5) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what}: not within {:?}", start.elapsed());
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The request fields nginx logs, one tab-separated line per request (`-` for an absent header).
const LOGGED: [(&str, &str); 23] = [
    ("port", "$server_port"),
    ("method", "$request_method"),
    ("uri", "$request_uri"),
    ("protocol", "$server_protocol"),
    ("host", "$http_host"),
    ("x-forwarded-for", "$http_x_forwarded_for"),
    ("x-forwarded-proto", "$http_x_forwarded_proto"),
    ("x-forwarded-host", "$http_x_forwarded_host"),
    ("forwarded", "$http_forwarded"),
    ("via", "$http_via"),
    ("proxy-authorization", "$http_proxy_authorization"),
    ("proxy-connection", "$http_proxy_connection"),
    ("connection", "$http_connection"),
    ("keep-alive", "$http_keep_alive"),
    ("te", "$http_te"),
    ("trailer", "$http_trailer"),
    ("upgrade", "$http_upgrade"),
    ("request-timeout-ms", "$http_request_timeout_ms"),
    ("grpc-timeout", "$http_grpc_timeout"),
    ("x-internal", "$http_x_internal"),
    ("x-secret-hop", "$http_x_secret_hop"),
    ("x-end-to-end", "$http_x_end_to_end"),
    ("content-type", "$http_content_type"),
];

/// One request as nginx received it.
#[derive(Debug)]
struct Received(HashMap<&'static str, String>);

impl Received {
    /// A logged field, `None` when nginx logged `-` (absent).
    fn get(&self, field: &str) -> Option<&str> {
        let value = self.0.get(field).map(String::as_str);
        assert!(value.is_some(), "{field} is not logged");
        value.filter(|v| *v != "-")
    }
}

static INSTANCE: AtomicUsize = AtomicUsize::new(0);

/// An nginx process, child of the test, serving two ports on 127.0.0.1 from a configuration in
/// its own temporary directory; killed (and the directory removed) on drop, so also when an
/// assertion fails — the directory is then kept for its logs.
struct Nginx {
    child: Child,
    dir: PathBuf,
    /// The upstream of the `/catalog` route.
    catalog: u16,
    /// The upstream of the `/payments` route.
    payments: u16,
}

impl Nginx {
    fn start() -> Nginx {
        let binary = peer("nginx");
        let dir = std::env::temp_dir().join(format!(
            "backstop-nginx-{}-{}",
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // The ports are picked by binding port 0 and releasing it; another process may take one
        // in between, so a start that fails to bind is retried with new ones.
        let mut last_error = String::new();
        for _ in 0..5 {
            let (catalog, payments) = (free_port(), free_port());
            if catalog == payments {
                continue;
            }
            fs::write(dir.join("nginx.conf"), config(&dir, catalog, payments)).unwrap();
            let stderr = fs::File::create(dir.join("stderr.log")).unwrap();
            let child = Command::new(&binary)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-g")
                .arg("daemon off; master_process off;")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            let mut nginx = Nginx {
                child,
                dir: dir.clone(),
                catalog,
                payments,
            };
            match nginx.wait_listening() {
                Ok(()) => return nginx,
                Err(why) => last_error = why,
            }
            // Dropping it kills it; the directory is reused.
            nginx.dir = PathBuf::new();
        }
        panic!("nginx did not start (config and logs in {dir:?}): {last_error}");
    }

    /// Waits (bounded) until both ports accept connections, or nginx exits.
    fn wait_listening(&mut self) -> Result<(), String> {
        let start = Instant::now();
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!(
                    "nginx exited ({status}): {}{}",
                    read(&self.dir.join("stderr.log")),
                    read(&self.dir.join("error.log"))
                ));
            }
            let up = [self.catalog, self.payments].iter().all(|&port| {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_ok()
            });
            if up {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(5) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!(
            "not listening after {:?}: {}",
            start.elapsed(),
            read(&self.dir.join("error.log"))
        ))
    }

    fn url(&self, port: u16, path: &str) -> String {
        format!("http://127.0.0.1:{port}{path}")
    }

    /// Every request nginx has logged so far.
    fn received(&self) -> Vec<Received> {
        read(&self.dir.join("access.log"))
            .lines()
            .map(|line| {
                let values: Vec<&str> = line.split('\t').collect();
                assert_eq!(values.len(), LOGGED.len(), "access log line {line:?}");
                Received(
                    LOGGED
                        .iter()
                        .zip(values)
                        .map(|((name, _), value)| (*name, value.to_owned()))
                        .collect(),
                )
            })
            .collect()
    }

    /// The request logged with `uri` (nginx writes its log line once it has answered, so this
    /// waits for it, bounded).
    fn request(&self, uri: &str) -> Received {
        wait_for(&format!("nginx logs a request for {uri}"), || {
            self.received().iter().any(|r| r.get("uri") == Some(uri))
        });
        let mut matching: Vec<Received> = self
            .received()
            .into_iter()
            .filter(|r| r.get("uri") == Some(uri))
            .collect();
        assert_eq!(matching.len(), 1, "requests for {uri}: {matching:?}");
        matching.pop().unwrap()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.dir.as_os_str().is_empty() {
            return;
        }
        if std::thread::panicking() {
            eprintln!("nginx's configuration and logs are kept in {:?}", self.dir);
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// nginx's configuration: everything it writes inside `dir`, both ports on 127.0.0.1, every
/// request logged with the headers it received, `200 ok` for everything, and `/catalog/internal`
/// answering with a `Connection` header that names one of its other headers.
fn config(dir: &Path, catalog: u16, payments: u16) -> String {
    let dir = dir.display();
    let format: Vec<&str> = LOGGED.iter().map(|(_, variable)| *variable).collect();
    let format = format.join("\t");
    // The temporary directories of modules this nginx was built without are not directives.
    let modules = Command::new(peer("nginx"))
        .arg("-V")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stderr).into_owned())
        .unwrap_or_default();
    let temp_paths: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .filter(|module| !modules.contains(&format!("--without-http_{module}_module")))
        .map(|module| format!("    {module}_temp_path {dir}/{module}_temp;\n"))
        .collect();
    format!(
        r#"
error_log {dir}/error.log info;
pid {dir}/nginx.pid;
events {{
    worker_connections 64;
}}
http {{
{temp_paths}    log_format peers '{format}';
    access_log {dir}/access.log peers;
    server {{
        listen 127.0.0.1:{catalog};
        listen 127.0.0.1:{payments};
        server_name peers;
        location / {{
            return 200 "ok\n";
        }}
        location = /catalog/internal {{
            add_header Connection "X-Internal" always;
            add_header X-Internal "secret" always;
            return 200 "ok\n";
        }}
    }}
}}
"#
    )
}

/// The gateway in front of `nginx`: `/catalog` to one of its ports, `/payments` to the other,
/// served by axum with the client's address, on 127.0.0.1.
async fn serve_gateway(nginx: &Nginx) -> SocketAddr {
    let table = format!(
        r#"
[[route]]
prefix = "/catalog"
upstream = "http://127.0.0.1:{catalog}"

[[route]]
prefix = "/payments"
upstream = "http://127.0.0.1:{payments}"
"#,
        catalog = nginx.catalog,
        payments = nginx.payments
    );
    let gateway = Gateway::from_toml(&table).unwrap();
    serve_axum(axum::Router::new().fallback_service(gateway)).await
}

/// What curl got.
#[derive(Debug)]
struct CurlAnswer {
    status: u16,
    /// Names lower-cased, in order, repeated ones kept.
    headers: Vec<(String, String)>,
    body: String,
}

impl CurlAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Runs the real curl against a 127.0.0.1 URL (off the async runtime: it blocks), no proxy,
/// bounded in time, the response head dumped before the body.
async fn curl(url: &str, args: &[&str]) -> CurlAnswer {
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let mut command = Command::new(peer("curl"));
    command
        .args(["-sS", "--max-time", "10", "--noproxy", "*", "-D", "-"])
        .args(args)
        .arg(url)
        .stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {args:?} {url}: {}\n{}{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (head, body) = stdout
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head from curl: {stdout:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').expect("a header line");
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    CurlAnswer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// What a client sends that must stop at the gateway, or be replaced there.
const CLIENT_HOP_HEADERS: [&str; 12] = [
    "-H",
    "Connection: X-Secret-Hop",
    "-H",
    "X-Secret-Hop: 1",
    "-H",
    "Proxy-Authorization: Basic Z2F0ZXdheTpzZWNyZXQ=",
    "-H",
    "TE: trailers",
    "-H",
    "Upgrade: websocket",
    "-H",
    "X-End-To-End: kept",
];

const CLIENT_CLAIMS: [&str; 10] = [
    "-H",
    "X-Forwarded-For: 6.6.6.6",
    "-H",
    "X-Forwarded-Proto: https",
    "-H",
    "X-Forwarded-Host: evil.invalid",
    "-H",
    "Forwarded: for=6.6.6.6",
    "-H",
    "request-timeout-ms: 999999",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_behind_the_gateway_receives_no_hop_by_hop_headers_and_true_forwarding_headers() {
    let nginx = Nginx::start();
    let gateway = serve_gateway(&nginx).await;
    let headers: Vec<&str> = CLIENT_HOP_HEADERS
        .iter()
        .chain(&CLIENT_CLAIMS)
        .copied()
        .collect();

    // The control: straight to nginx, curl's headers all arrive, so their absence behind the
    // gateway is the gateway's doing.
    let direct = curl(&nginx.url(nginx.catalog, "/catalog/direct"), &headers).await;
    assert_eq!(direct.status, 200);
    let sent = nginx.request("/catalog/direct");
    for field in [
        "connection",
        "x-secret-hop",
        "proxy-authorization",
        "te",
        "upgrade",
        "x-forwarded-for",
        "request-timeout-ms",
    ] {
        assert!(
            sent.get(field).is_some(),
            "curl did not send {field}: {sent:?}"
        );
    }

    // Through the gateway.
    let res = curl(&format!("http://{gateway}/catalog/items?page=2"), &headers).await;
    assert_eq!((res.status, res.body.as_str()), (200, "ok\n"), "{res:?}");
    assert_eq!(res.header("via"), Some("1.1 backstop"), "{res:?}");
    let got = nginx.request("/catalog/items?page=2");
    assert_eq!(got.get("port"), Some(nginx.catalog.to_string().as_str()));
    for field in [
        "x-secret-hop",
        "proxy-authorization",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "forwarded",
        "request-timeout-ms",
        "grpc-timeout",
    ] {
        assert_eq!(got.get(field), None, "{field} reached nginx: {got:?}");
    }
    // The gateway's own connection to nginx may say keep-alive or close; never the client's.
    if let Some(connection) = got.get("connection") {
        let connection = connection.to_ascii_lowercase();
        assert!(
            !connection.contains("x-secret-hop") && !connection.contains("upgrade"),
            "the client's Connection reached nginx: {got:?}"
        );
    }
    assert_eq!(got.get("x-end-to-end"), Some("kept"), "{got:?}");
    // The client is not a trusted proxy: its claims are replaced by what the gateway saw.
    assert_eq!(got.get("x-forwarded-for"), Some("127.0.0.1"), "{got:?}");
    assert_eq!(got.get("x-forwarded-proto"), Some("http"), "{got:?}");
    assert_eq!(
        got.get("x-forwarded-host"),
        Some(gateway.to_string().as_str()),
        "{got:?}"
    );
    assert_eq!(got.get("via"), Some("1.1 backstop"), "{got:?}");
    assert_eq!(
        got.get("host"),
        Some(format!("127.0.0.1:{}", nginx.catalog).as_str()),
        "{got:?}"
    );
    assert_eq!(got.get("method"), Some("GET"));

    // gRPC keeps `TE: trailers` (written again for the next hop); other requests do not.
    let grpc = curl(
        &format!("http://{gateway}/payments/grpc"),
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/grpc",
            "-H",
            "TE: trailers",
            "-H",
            "grpc-timeout: 100S",
            "--data-binary",
            "",
        ],
    )
    .await;
    assert_eq!(grpc.status, 200, "{grpc:?}");
    let got = nginx.request("/payments/grpc");
    assert_eq!(got.get("te"), Some("trailers"), "{got:?}");
    assert_eq!(got.get("content-type"), Some("application/grpc"));
    // The client's gRPC deadline is not the upstream's: the route's client writes its own.
    assert_ne!(got.get("grpc-timeout"), Some("100S"), "{got:?}");

    // The path is normalised before routing, and forwarded normalised: under /payments.
    let res = curl(
        &format!("http://{gateway}/catalog/../payments/x"),
        &["--path-as-is"],
    )
    .await;
    assert_eq!((res.status, res.body.as_str()), (200, "ok\n"), "{res:?}");
    let got = nginx.request("/payments/x");
    assert_eq!(
        got.get("port"),
        Some(nginx.payments.to_string().as_str()),
        "/catalog/../payments/x was not served by the payments route: {got:?}"
    );
    assert!(
        !nginx
            .received()
            .iter()
            .any(|r| r.get("uri").is_some_and(|uri| uri.contains(".."))),
        "a dot segment reached nginx: {:?}",
        nginx.received()
    );

    // nginx's answer names X-Internal in Connection: the client sees neither.
    let direct = curl(&nginx.url(nginx.catalog, "/catalog/internal?direct"), &[]).await;
    assert_eq!(direct.header("x-internal"), Some("secret"), "{direct:?}");
    assert!(
        direct.all("connection").contains(&"X-Internal"),
        "nginx did not name X-Internal in Connection: {direct:?}"
    );
    let res = curl(&format!("http://{gateway}/catalog/internal"), &[]).await;
    assert_eq!((res.status, res.body.as_str()), (200, "ok\n"), "{res:?}");
    assert_eq!(res.header("x-internal"), None, "{res:?}");
    assert!(
        res.all("connection")
            .iter()
            .all(|v| !v.to_ascii_lowercase().contains("x-internal")),
        "{res:?}"
    );
    assert_eq!(res.header("via"), Some("1.1 backstop"), "{res:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_gateway_gets_answers_and_reason_codes() {
    let nginx = Nginx::start();
    let gateway = serve_gateway(&nginx).await;

    let res = curl(&format!("http://{gateway}/catalog/items"), &[]).await;
    assert_eq!((res.status, res.body.as_str()), (200, "ok\n"), "{res:?}");
    assert_eq!(res.header("x-backstop-reason"), None, "{res:?}");
    assert_eq!(nginx.request("/catalog/items").get("method"), Some("GET"));

    // Dot segments resolve before routing: `..` out of /catalog lands under /payments.
    let res = curl(
        &format!("http://{gateway}/catalog/../payments/x"),
        &["--path-as-is"],
    )
    .await;
    assert_eq!((res.status, res.body.as_str()), (200, "ok\n"), "{res:?}");
    let got = nginx.request("/payments/x");
    assert_eq!(got.get("port"), Some(nginx.payments.to_string().as_str()));

    // Forms that servers read differently are refused before any upstream sees them.
    for path in [
        "/catalog/%2e%2e/payments/x",
        "/catalog/.%2E/payments/x",
        "/catalog/..;x/payments/x",
        "/catalog%2F..%2Fpayments/x",
    ] {
        let res = curl(&format!("http://{gateway}{path}"), &["--path-as-is"]).await;
        assert_eq!(res.status, 400, "{path}: {res:?}");
        assert_eq!(
            res.header("x-backstop-reason"),
            Some("DP"),
            "{path}: {res:?}"
        );
    }

    // curl's Proxy-Authorization is for a proxy, and the gateway is the last one to see it.
    let res = curl(
        &format!("http://{gateway}/payments/charge"),
        &["-H", "Proxy-Authorization: Basic Z2F0ZXdheTpzZWNyZXQ="],
    )
    .await;
    assert_eq!(res.status, 200, "{res:?}");
    let got = nginx.request("/payments/charge");
    assert_eq!(got.get("proxy-authorization"), None, "{got:?}");
    assert_eq!(got.get("x-forwarded-for"), Some("127.0.0.1"), "{got:?}");

    // No route: answered by the gateway, with its reason.
    for path in ["/unknown", "/catalogue-admin", "/"] {
        let res = curl(&format!("http://{gateway}{path}"), &[]).await;
        assert_eq!(res.status, 404, "{path}: {res:?}");
        assert_eq!(
            res.header("x-backstop-reason"),
            Some("NR"),
            "{path}: {res:?}"
        );
    }

    // nginx saw exactly the three forwarded requests: nothing refused reached it.
    let uris: Vec<String> = nginx
        .received()
        .iter()
        .map(|r| r.get("uri").unwrap().to_owned())
        .collect();
    assert_eq!(
        uris,
        ["/catalog/items", "/payments/x", "/payments/charge"],
        "requests nginx received"
    );
}

#[test]
#[should_panic(expected = "run scripts/test, which installs it, or apt-get install")]
fn a_missing_peer_fails_naming_how_to_get_it() {
    peer("backstop-no-such-peer");
}
