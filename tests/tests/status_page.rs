//! The status page (`backstop::admin`, issue 19) against live state on loopback: a client whose
//! upstream refuses until its breaker opens, a client with a breaker half-open on a probe in
//! flight, a healthy one, a gateway built from routes, and a server stack with a request in
//! flight and one shed. Read through the admin listener as JSON and as HTML, and rendered by
//! headless Chromium (screenshot and DOM).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use backstop::admin::{Admin, Status};
use backstop::breaker::{Authority, RequestHead, State};
use backstop::{Client, Gateway, Kind, RouteConfig, ServerStack};
use backstop_chaos::ChaosServer;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

/// How long the refusing client's breaker stays open: far longer than any test here runs, so
/// the page is read while it is open.
const OPEN_FOR: Duration = Duration::from_secs(60);

/// A loopback port where nothing listens: bound, then closed.
fn refused_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The breaker key of a URL, as the client's per-host breaker computes it.
fn key(url: &str) -> Authority {
    let req = http::Request::get(url).body(()).unwrap();
    Authority::of(&RequestHead::of(&req))
}

/// Everything the page watches, live; dropping it releases the held request and probe.
struct Fixture {
    status: Status,
    refused: SocketAddr,
    payments: Client,
    stack: ServerStack,
    _release: watch::Sender<bool>,
    _held: TcpStream,
    _chaos: ChaosServer,
}

async fn fixture() -> Fixture {
    let refused = refused_addr();
    let chaos = ChaosServer::start().await.unwrap();

    // `payments`: every attempt refused, 3 per call, 5 consecutive failures open its breaker.
    let payments = Client::builder()
        .open_for(OPEN_FOR, Duration::from_secs(300))
        .build()
        .unwrap();
    let url = format!("http://{refused}/charge");
    let mut opened = false;
    for _ in 0..4 {
        let err = payments.get(&url).await.unwrap_err();
        if err.kind() == Kind::BreakerOpen {
            opened = true;
            break;
        }
        assert_eq!(err.kind(), Kind::Refused);
    }
    assert!(opened, "the refusing host's breaker opened");
    assert_eq!(
        payments.breakers().unwrap().state(&key(&url)),
        Some(State::Open)
    );

    // `catalog`: a healthy upstream, its breaker closed.
    let catalog = Client::new().unwrap();
    let res = catalog.get(&chaos.url("/items")).await.unwrap();
    assert_eq!(res.status(), 200);

    // `search`: opened by two 503s, then half-open with its probe stalled at the upstream.
    let search = Client::builder()
        .max_attempts(1)
        .consecutive_failures(2)
        .open_for(Duration::from_millis(200), Duration::from_secs(300))
        .attempt_timeout(Duration::from_secs(120))
        .deadline(Duration::from_secs(120))
        .build()
        .unwrap();
    let down = chaos.url("/fault/status?code=503");
    for _ in 0..2 {
        let res = search.get(&down).await.unwrap();
        assert_eq!(res.status(), 503);
    }
    let mut state = search.breakers().unwrap().subscribe(&key(&down));
    assert_eq!(*state.borrow_and_update(), State::Open);
    // Waiting for the cool-down itself to pass, not for another task.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let probe = search.clone();
    let stalled = chaos.url("/fault/stall-headers");
    let probing = tokio::spawn(async move { probe.get(&stalled).await });
    tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| *s == State::HalfOpen),
    )
    .await
    .expect("the probe makes the breaker half-open")
    .unwrap();

    // `public`: a server stack admitting one request; one held in its handler, one shed.
    let stack = ServerStack::builder().max_in_flight(1).build().unwrap();
    let (release, released) = watch::channel(false);
    let (entered_tx, mut entered) = mpsc::channel::<()>(1);
    let app = Router::new()
        .route(
            "/slow",
            get(move || {
                let mut released = released.clone();
                let entered = entered_tx.clone();
                async move {
                    let _ = entered.send(()).await;
                    let _ = released.wait_for(|r| *r).await;
                    "done"
                }
            }),
        )
        .layer(stack.clone());
    let public = serve(app).await;
    let held = hold(public, "/slow").await;
    entered.recv().await.unwrap();
    let (code, _, _) = fetch(public, "/slow").await;
    assert_eq!(code, 503, "the second request is shed");

    // `edge`: a gateway built from routes, one to the refusing upstream, one to the healthy one.
    let mut pay_route = RouteConfig::new("/payments", format!("http://{refused}/api"));
    pay_route.methods = vec!["POST".to_owned()];
    let gateway = Gateway::from_routes(
        vec![pay_route, RouteConfig::new("/catalog", chaos.url("/"))],
        |builder| builder,
    )
    .unwrap();
    let req = http::Request::post("/payments/charge")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let res = gateway.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()[backstop::REASON_HEADER], "UF");
    let req = http::Request::get("/catalog/items")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(gateway.clone().oneshot(req).await.unwrap().status(), 200);

    let status = Status::new()
        .client("payments", &payments)
        .client("catalog", &catalog)
        .client("search", &search)
        .gateway("edge", &gateway)
        .server("public", &stack);
    // The probe stays out (its attempt timeout is 2 minutes) until the runtime ends.
    drop(probing);
    Fixture {
        status,
        refused,
        payments,
        stack,
        _release: release,
        _held: held,
        _chaos: chaos,
    }
}

/// Serves `app` with `axum::serve` on a free loopback port.
async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Sends `GET path` over a fresh connection and keeps the connection, unread, so the request
/// stays in its handler until released.
async fn hold(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    stream
}

/// `GET path` over a fresh connection: status code, head, body.
async fn fetch(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the answer ends within 10 s")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head[9..12].parse().unwrap();
    (code, head.to_owned(), body.to_owned())
}

/// Starts the admin listener on a free loopback port; it stops when the sender is dropped.
async fn admin(status: Status) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (addr, stop, _running) = serve_admin(status).await;
    (addr, stop)
}

/// [`admin`], with the task serving the listener (its result says how serving ended).
async fn serve_admin(
    status: Status,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let server = Admin::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap()
        .listen()
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.serve_with_shutdown(status, async {
        let _ = stopped.await;
    }));
    (addr, stop, running)
}

fn breaker<'a>(client: &'a Value, host: &str) -> &'a Value {
    client["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["host"] == host)
        .unwrap_or_else(|| panic!("no breaker for {host} in {client}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_shows_open_breakers_budgets_routes_and_shedding() {
    let f = fixture().await;
    let (addr, _stop) = admin(f.status.clone()).await;

    let (code, head, body) = fetch(addr, "/status.json").await;
    assert_eq!(code, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    let json: Value = serde_json::from_str(&body).unwrap();
    let budget_now = f.payments.retry_budget().unwrap().available();

    // The refusing host, open, with the time left before its probe.
    let payments = &json["clients"][0];
    assert_eq!(payments["name"], "payments");
    assert_eq!(payments["breakers_enabled"], true);
    let host = format!("http://{}", f.refused);
    let open = breaker(payments, &host);
    assert_eq!(open["state"], "open");
    assert_eq!(open["consecutive_failures"], 5);
    assert_eq!(open["trips"], 1);
    assert_eq!(open["metrics_only"], false);
    let left = open["next_probe_in_ms"].as_u64().unwrap();
    // 60 s with the breaker's ±20 % jitter, less the time this test has run.
    assert!((40_000..=72_000).contains(&left), "time left {left} ms");
    let taken = json["taken_at_unix_ms"].as_u64().unwrap();
    let until = open["open_until_unix_ms"].as_u64().unwrap();
    assert!(
        until.abs_diff(taken + left) <= 1,
        "{until} vs {taken} + {left}"
    );
    assert_eq!(open["calls"], 5);
    assert_eq!(open["failures"], 5);
    assert_eq!(open["failure_rate"], 1.0);

    // Its budget: the balance the client reports, and the default rule.
    let budget = &payments["budget"];
    assert_eq!(budget["available"].as_u64().unwrap(), budget_now);
    // A full reserve (10/s over 10 s) and 0.4 earned by 2 calls, less the 4 retries taken.
    assert_eq!(budget_now, 96);
    assert_eq!(budget["ratio"], 0.2);
    assert_eq!(budget["min_per_second"], 10);
    assert_eq!(budget["window_ms"], 10_000);

    // The healthy client's host closed; the half-open one with its probe out.
    let catalog = &json["clients"][1];
    assert_eq!(catalog["name"], "catalog");
    assert_eq!(catalog["breakers"][0]["state"], "closed");
    assert_eq!(catalog["breakers"][0]["next_probe_in_ms"], Value::Null);
    let search = &json["clients"][2];
    assert_eq!(search["breakers"][0]["state"], "half-open");
    assert_eq!(search["breakers"][0]["probes_in_flight"], 1);

    // The gateway: routes longest prefix first, each with its client's breakers and budget.
    let edge = &json["gateways"][0];
    assert_eq!(edge["name"], "edge");
    assert_eq!(edge["buffer_budget"], 256 * 1024 * 1024);
    let routes = edge["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0]["prefix"], "/payments");
    assert_eq!(routes[0]["methods"], serde_json::json!(["POST"]));
    assert_eq!(routes[0]["upstream"], format!("http://{}/api", f.refused));
    let route_breaker = breaker(&routes[0], &host);
    assert_eq!(route_breaker["state"], "closed");
    assert_eq!(
        route_breaker["consecutive_failures"], 3,
        "3 refused attempts"
    );
    assert!(routes[0]["budget"]["available"].is_u64());
    assert_eq!(routes[1]["prefix"], "/catalog");
    assert_eq!(routes[1]["methods"], serde_json::json!([]));
    assert_eq!(routes[1]["breakers"][0]["state"], "closed");

    // The server stack: one request held, one shed.
    let public = &json["servers"][0];
    assert_eq!(public["name"], "public");
    assert_eq!(public["in_flight"], 1);
    assert_eq!(public["max_in_flight"], 1);
    assert_eq!(public["shed"], 1);
    assert_eq!(public["success"], 0);
    assert_eq!(f.stack.in_flight(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_html_with_every_value_escaped_and_three_routes_only() {
    let f = fixture().await;
    let client = Client::new().unwrap();
    let status = f.status.clone().client("<b>bold</b> & \"quoted\"", &client);
    let (addr, _stop) = admin(status).await;

    let (code, head, page) = fetch(addr, "/status").await;
    assert_eq!(code, 200);
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(page.contains(r#"<meta http-equiv="refresh" content="2">"#));
    assert!(!page.contains("<script"), "no JavaScript");
    assert!(page.contains(&format!("http://{}", f.refused)));
    assert!(page.contains(r#"<span class="badge state-open">open</span>"#));
    assert!(page.contains(r#"<span class="badge state-half-open">half-open</span>"#));
    assert!(page.contains(r#"<span class="badge state-closed">closed</span>"#));
    assert!(page.contains("&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot;"));
    assert!(!page.contains("<b>bold</b>"));
    assert!(
        page.contains("1 open, 1 half-open of 5 breakers."),
        "{page}"
    );

    let (code, head, _) = fetch(addr, "/").await;
    assert_eq!(code, 302);
    assert!(head.contains("location: /status"), "{head}");
    for path in ["/metrics", "/status/", "/status.json/x", "/admin"] {
        assert_eq!(fetch(addr, path).await.0, 404, "{path}");
    }
}

#[test]
fn a_public_bind_address_is_refused_unless_allowed() {
    let err = Admin::builder()
        .bind("0.0.0.0:9901".parse().unwrap())
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "bind");
    assert!(err.rule().contains("loopback"), "{err}");
    assert!(err.rule().contains("allow_non_loopback(true)"), "{err}");
    assert!(err.rule().contains("0.0.0.0:9901"), "{err}");
    let allowed = Admin::builder()
        .bind("0.0.0.0:9901".parse().unwrap())
        .allow_non_loopback(true)
        .build()
        .unwrap();
    assert_eq!(allowed.addr(), "0.0.0.0:9901".parse().unwrap());
    assert_eq!(
        Admin::builder().build().unwrap().addr(),
        "127.0.0.1:9901".parse().unwrap()
    );
}

#[tokio::test]
async fn the_listener_stops_with_its_shutdown_future() {
    let (addr, stop, running) = serve_admin(Status::new()).await;
    assert_eq!(fetch(addr, "/status.json").await.0, 200);
    drop(stop);
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("it stops within its drain timeout")
        .unwrap()
        .unwrap();
    let err = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

// === Chromium ===

/// The browser: `/usr/bin/chromium`, else `chromium` or `chromium-browser` on `PATH`.
fn chromium() -> PathBuf {
    let fixed = Path::new("/usr/bin/chromium");
    if fixed.exists() {
        return fixed.to_owned();
    }
    for name in ["chromium", "chromium-browser"] {
        if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        }) {
            return found;
        }
    }
    panic!(
        "chromium is needed by this test (headless, to render the status page) and was not \
         found at /usr/bin/chromium or on PATH: run `scripts/test`, which installs it, or \
         `apt-get install chromium`"
    );
}

/// Runs headless Chromium with `args` and a fresh profile, killed after 60 s; its stdout.
fn run_chromium(profile: &Path, args: &[String]) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        out
    });
    let started = Instant::now();
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            assert!(exit.success(), "chromium {args:?} failed: {exit}");
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} did not finish within 60 s: killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

/// The PNG's width and height, from its IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.len() > 24, "a PNG has a header");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "the PNG signature");
    assert_eq!(&png[12..16], b"IHDR");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    (width, height)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_page_while_a_breaker_is_open() {
    let browser = chromium();
    let f = fixture().await;
    let (addr, _stop) = admin(f.status.clone()).await;
    let url = format!("http://{addr}/status");
    let dir = std::env::temp_dir().join(format!("backstop-status-page-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("status-page.png");

    let (shot_dir, shot_png, shot_url) = (dir.clone(), png.clone(), url.clone());
    tokio::task::spawn_blocking(move || {
        run_chromium(
            &shot_dir.join("profile-screenshot"),
            &[
                format!("--screenshot={}", shot_png.display()),
                "--window-size=1200,800".to_owned(),
                shot_url,
            ],
        )
    })
    .await
    .unwrap();
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert_eq!(png_size(&bytes), (1200, 800));
    assert!(
        bytes.len() > 20_000,
        "a rendered page, not a blank one: {} bytes",
        bytes.len()
    );

    let dom_dir = dir.clone();
    let dom = tokio::task::spawn_blocking(move || {
        run_chromium(
            &dom_dir.join("profile-dom"),
            &["--dump-dom".to_owned(), url],
        )
    })
    .await
    .unwrap();
    assert!(dom.contains("backstop status"), "{dom}");
    assert!(dom.contains(&format!("http://{}", f.refused)), "{dom}");
    assert!(
        dom.contains(r#"<span class="badge state-open">open</span>"#),
        "{dom}"
    );
    assert!(dom.contains("1 open, 1 half-open of 5 breakers."), "{dom}");
    assert!(dom.contains("/payments"), "{dom}");

    if std::env::var_os("BACKSTOP_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(&png, docs.join("status-page.png")).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = browser;
}
