//! The gateway streams request bodies: no whole-body buffer per request, replay only within the
//! route's replay limit and the gateway's buffer budget (`503 BB` + `Retry-After` when spent),
//! a per-route body limit (`413 RB`, before reading when the length is declared), a malformed
//! body answered `400 DPE`. Memory is measured on the resident set of a gateway running in a
//! process of its own (this binary, run again) while 100 concurrent 16 MiB uploads, then one
//! 64 MiB upload, go through it. Loopback only; the upstream is a chaos server, which digests
//! what it receives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use backstop::server::{ServeConfig, Server};
use backstop::{ConfigError, Gateway, REASON_HEADER};
use backstop_chaos::{ChaosServer, Fault, Script};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::timeout;

/// The tests of this file run one at a time: two of them measure the whole process's memory,
/// which another test's traffic would blur.
static SERIAL: Mutex<()> = Mutex::const_new(());

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// Serves `gateway` on loopback until the returned sender is dropped.
async fn serve(gateway: Gateway) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Server::new(listener, ServeConfig::default()).serve_with_shutdown(gateway, async {
            let _ = stopped.await;
        }),
    );
    (addr, stop)
}

fn gateway(upstream: &ChaosServer, top: &str, route: &str) -> Gateway {
    Gateway::from_toml(&format!(
        "{top}\n[[route]]\nprefix = \"/\"\nupstream = \"http://{}\"\n{route}\n",
        upstream.addr()
    ))
    .unwrap()
}

/// A body of `len` bytes of a repeating pattern, made on the fly from one shared chunk: the
/// sender holds no more than that chunk, however long the body. `declared` gives it an exact
/// size hint (sent as `Content-Length`); otherwise it is sent chunked.
struct Pattern {
    left: u64,
    chunk: Bytes,
    declared: bool,
}

/// The pattern's chunk: 64 KiB of a byte sequence whose period (251, a prime) does not divide
/// the chunk, so a dropped or repeated chunk changes the digest.
fn pattern_chunk() -> Bytes {
    (0..64 * 1024)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

impl Pattern {
    fn new(len: u64, declared: bool) -> Pattern {
        Pattern {
            left: len,
            chunk: pattern_chunk(),
            declared,
        }
    }

    /// The digest the upstream should record for a pattern body of `len` bytes.
    fn digest(len: u64) -> u64 {
        let chunk = pattern_chunk();
        let mut all = Vec::with_capacity(len as usize);
        while (all.len() as u64) < len {
            let take = (len - all.len() as u64).min(chunk.len() as u64) as usize;
            all.extend_from_slice(&chunk[..take]);
        }
        backstop_chaos::digest(&all)
    }
}

impl Body for Pattern {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let take = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= take as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..take)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.declared {
            SizeHint::with_exact(self.left)
        } else {
            SizeHint::default()
        }
    }
}

/// A chunked body fed by the test, chunk by chunk; it ends when the sender is dropped.
struct Fed(mpsc::Receiver<Bytes>);

impl Body for Fed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
}

impl Answer {
    fn reason(&self) -> Option<&str> {
        self.headers
            .get(REASON_HEADER)
            .and_then(|v| v.to_str().ok())
    }
}

async fn send<B>(addr: SocketAddr, method: &str, path: &str, body: B) -> Answer
where
    B: Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    send_with(&client(), addr, method, path, body).await
}

async fn send_with<B>(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, TestBody>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: B,
) -> Answer
where
    B: Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(body.boxed_unsync())
        .unwrap();
    let res = timeout(Duration::from_secs(60), client.request(req))
        .await
        .expect("answered in time")
        .expect("answered");
    let status = res.status();
    let headers = res.headers().clone();
    let _ = res.into_body().collect().await;
    Answer { status, headers }
}

#[tokio::test]
async fn a_large_body_streams_through_intact_and_a_retried_one_is_replayed() {
    let _serial = SERIAL.lock().await;
    let upstream = ChaosServer::start().await.unwrap();
    upstream.script("/flaky", Script::fail_times(2, Fault::status(503)));
    let gateway = gateway(
        &upstream,
        "",
        "[route.policy.retry]\nbase_delay = \"5ms\"\nmax_delay = \"20ms\"",
    );
    let (addr, _stop) = serve(gateway.clone()).await;

    // 1 MiB POSTed, chunked and declared: streamed (a POST keeps nothing for replay), intact.
    for declared in [false, true] {
        let res = send(addr, "POST", "/upload", Pattern::new(MIB, declared)).await;
        assert_eq!(res.status, StatusCode::OK);
    }
    let deliveries = upstream.deliveries();
    assert_eq!(deliveries.len(), 2);
    for delivery in &deliveries {
        assert_eq!(delivery.body_len, MIB);
        assert!(delivery.body_complete);
        assert_eq!(delivery.body_digest, Pattern::digest(MIB));
    }
    upstream.reset_counts();

    // A small PUT (idempotent) answered 503 twice: replayed from the kept bytes, three
    // deliveries of the same body; chunked, so the route reserved its whole replay limit.
    let res = send(addr, "PUT", "/flaky/item", Pattern::new(10 * KIB, false)).await;
    assert_eq!(res.status, StatusCode::OK);
    let deliveries = upstream.deliveries();
    assert_eq!(deliveries.len(), 3);
    for delivery in &deliveries {
        assert_eq!(delivery.body_len, 10 * KIB);
        assert_eq!(delivery.body_digest, Pattern::digest(10 * KIB));
    }
    // Every reservation is given back once the body is sent and the answer came back.
    assert_eq!(gateway.buffer_reserved(), 0);
}

#[tokio::test]
async fn the_body_limit_is_inclusive_and_a_declared_excess_is_refused_before_reading() {
    let _serial = SERIAL.lock().await;
    let upstream = ChaosServer::start().await.unwrap();
    let gateway = gateway(&upstream, "", "body_limit = \"1KiB\"");
    let (addr, _stop) = serve(gateway).await;

    // Declared above the limit: 413 at once, and the upstream saw nothing.
    let res = send(addr, "POST", "/declared", Pattern::new(KIB + 1, true)).await;
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(res.reason(), Some("RB"));
    assert_eq!(upstream.request_count(), 0);

    // Exactly the limit, declared or chunked: forwarded whole.
    for declared in [true, false] {
        let res = send(addr, "POST", "/exact", Pattern::new(KIB, declared)).await;
        assert_eq!(res.status, StatusCode::OK, "declared: {declared}");
    }
    let deliveries = upstream.deliveries();
    assert_eq!(deliveries.len(), 2);
    assert!(
        deliveries
            .iter()
            .all(|d| d.body_len == KIB && d.body_complete)
    );

    // Chunked and growing past the limit: the forward fails as the limit is crossed, 413.
    let res = send(addr, "POST", "/chunked", Pattern::new(4 * KIB, false)).await;
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(res.reason(), Some("RB"));
    // What reached the upstream, if anything, was cut short of the excess.
    assert!(
        upstream
            .deliveries()
            .iter()
            .filter(|d| d.path == "/chunked")
            .all(|d| !d.body_complete || d.body_len <= KIB)
    );
}

#[tokio::test]
async fn a_malformed_chunked_body_is_a_400_not_a_413_or_a_502() {
    let _serial = SERIAL.lock().await;
    let upstream = ChaosServer::start().await.unwrap();
    let (addr, _stop) = serve(gateway(&upstream, "", "")).await;

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /broken HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\nZZ-not-a-size\r\nmore\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "answered in time");
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 400"), "{text}");
    assert!(text.contains("x-backstop-reason: dpe"), "{text}");
}

#[tokio::test]
async fn a_spent_buffer_budget_is_a_503_with_retry_after_at_once() {
    let _serial = SERIAL.lock().await;
    let upstream = ChaosServer::start().await.unwrap();
    // 100 KiB of budget, a route keeping up to 64 KiB: one chunked PUT at a time.
    let gateway = gateway(&upstream, "buffer_budget = \"100KiB\"", "");
    let (addr, _stop) = serve(gateway.clone()).await;

    // A slow upload: its first chunk is sent, the rest waits.
    let (feed, fed) = mpsc::channel(4);
    feed.send(Bytes::from_static(b"first chunk;"))
        .await
        .unwrap();
    let first = tokio::spawn(async move { send(addr, "PUT", "/slow", Fed(fed)).await });
    timeout(Duration::from_secs(10), async {
        while gateway.buffer_reserved() != 64 * KIB {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the first upload holds its reservation");

    // A second one cannot be covered: refused at once, without waiting for the first.
    let (second_feed, second_fed) = mpsc::channel(4);
    second_feed.send(Bytes::from_static(b"x")).await.unwrap();
    let started = Instant::now();
    let res = send(addr, "PUT", "/second", Fed(second_fed)).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.reason(), Some("BB"));
    assert_eq!(res.headers[http::header::RETRY_AFTER], "1");
    drop(second_feed);

    // Requests that keep nothing are not refused meanwhile: a POST, and a PUT declaring more
    // than the replay limit (sent once, never kept).
    let res = send(addr, "POST", "/post", Pattern::new(8 * KIB, false)).await;
    assert_eq!(res.status, StatusCode::OK);
    let res = send(addr, "PUT", "/big", Pattern::new(128 * KIB, true)).await;
    assert_eq!(res.status, StatusCode::OK);

    // The first completes; its reservation is given back; a new chunked PUT goes through.
    feed.send(Bytes::from_static(b"last chunk")).await.unwrap();
    drop(feed);
    let res = timeout(Duration::from_secs(10), first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status, StatusCode::OK);
    timeout(Duration::from_secs(5), async {
        while gateway.buffer_reserved() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the reservation is given back");
    let res = send(addr, "PUT", "/third", Pattern::new(KIB, false)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(upstream.count("PUT", "/second"), 0);
}

#[test]
fn invalid_sizes_and_budgets_are_rejected_naming_the_field() {
    let table = |top: &str, route: &str| {
        format!("{top}\n[[route]]\nprefix = \"/a\"\nupstream = \"http://127.0.0.1:1\"\n{route}\n")
    };
    let err = |text: String| -> ConfigError { Gateway::from_toml(&text).unwrap_err() };

    let e = err(table("", "body_limit = \"64MB\""));
    assert_eq!(e.field(), "route /a.body_limit", "{e}");
    let e = err(table("", "body_limit = -1"));
    assert_eq!(e.field(), "route /a.body_limit", "{e}");
    let e = err(table("buffer_budget = \"lots\"", ""));
    assert_eq!(e.field(), "buffer_budget", "{e}");
    let e = err(table("buffer_budget = 0", ""));
    assert_eq!(e.field(), "buffer_budget", "{e}");
    // Less than the route's replay limit (64 KiB by default): its chunked PUTs could never be
    // covered.
    let e = err(table("buffer_budget = \"32KiB\"", ""));
    assert_eq!(e.field(), "buffer_budget", "{e}");
    assert!(e.rule().contains("route /a"), "{e}");
    // Fine when the route never retries, or keeps less.
    Gateway::from_toml(&table(
        "buffer_budget = \"32KiB\"",
        "[route.policy.retry]\nmax_attempts = 1",
    ))
    .unwrap();
    let gateway = Gateway::from_toml(&table(
        "buffer_budget = \"32KiB\"",
        "body_limit = 4096\n[route.policy.retry]\nreplay_limit = 16384",
    ))
    .unwrap();
    assert_eq!(gateway.buffer_budget(), 32 * KIB);
    assert_eq!(
        Gateway::from_toml(&table("", "")).unwrap().buffer_budget(),
        backstop::DEFAULT_BUFFER_BUDGET
    );
}

/// The variable that makes [`gateway_process`] serve a gateway: its route table.
const CHILD_TABLE: &str = "BACKSTOP_GATEWAY_BODIES_TABLE";
/// The line [`gateway_process`] announces its address with.
const CHILD_ADDR: &str = "GATEWAY_ADDR=";

/// Not a test of its own: the gateway the memory tests measure, in a process of its own (this
/// test binary, run again for this function alone), so that its resident set counts the
/// gateway only — not the test's client, nor the upstream. It serves the table in
/// [`CHILD_TABLE`] on two worker threads, prints its address, and ends when its standard input
/// closes.
#[test]
#[ignore = "started by the memory tests, in a process of its own"]
fn gateway_process() {
    let Ok(table) = std::env::var(CHILD_TABLE) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (addr, _stop) = serve(Gateway::from_toml(&table).unwrap()).await;
        println!("{CHILD_ADDR}{addr}");
        let _ = tokio::task::spawn_blocking(|| {
            use std::io::Read;
            std::io::stdin().read_to_end(&mut Vec::new())
        })
        .await;
    });
}

/// A gateway serving in a child process ([`gateway_process`]); killed when dropped.
struct GatewayProcess {
    child: std::process::Child,
    addr: SocketAddr,
}

impl GatewayProcess {
    fn start(table: &str) -> GatewayProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "gateway_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_TABLE, table)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (found, address) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                // libtest may have written `test gateway_process ... ` on the same line.
                if let Some((_, addr)) = line.split_once(CHILD_ADDR) {
                    let _ = found.send(addr.trim().parse::<SocketAddr>().unwrap());
                }
                // Read on to the end, so the child never blocks on a full pipe.
            }
        });
        let addr = address
            .recv_timeout(Duration::from_secs(20))
            .expect("the gateway process announces its address");
        GatewayProcess { child, addr }
    }

    /// Its resident set, in bytes (`VmRSS` of `/proc/<pid>/status`).
    fn rss(&self) -> u64 {
        rss_of(&format!("/proc/{}/status", self.child.id()))
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_of(status_file: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string(status_file) else {
        return 0;
    };
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    kib * 1024
}

/// Samples the gateway process's resident set every 5 ms until stopped; gives the largest seen.
fn sample_peak(status_file: String) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = rss_of(&status_file);
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(rss_of(&status_file));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak.max(rss_of(&status_file))
        })
    };
    (stop, handle)
}

fn table(upstream: &ChaosServer, top: &str, route: &str) -> String {
    format!(
        "{top}\n[[route]]\nprefix = \"/\"\nupstream = \"http://{}\"\n{route}\n",
        upstream.addr()
    )
}

/// The allowance above the buffer budget, per concurrent upload, for what the gateway holds per
/// connection besides replay buffers: the inbound connection's read buffer (hyper's grows to
/// about 400 KiB under a fast sender), and the chunks queued toward the upstream, each pinning
/// the read buffer it was cut from until written (the route's client queues up to 64 KiB, so
/// about one more buffer), plus task and connection state and allocator slack. Measured: about
/// 0.9 MiB per upload (91 MiB for 100), whatever the body size — one 64 MiB upload grows the
/// gateway by under 3 MiB; a whole-body buffer per request would be 1.6 GB.
const ALLOWANCE_PER_UPLOAD: u64 = MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_16_mib_uploads_stay_within_the_budget() {
    let _serial = SERIAL.lock().await;
    const UPLOADS: u64 = 100;
    const SIZE: u64 = 16 * MIB;
    let budget = 16 * MIB;
    let expected = Pattern::digest(SIZE);
    let upstream = ChaosServer::start().await.unwrap();
    // Default retries: three attempts, 64 KiB kept for replay of idempotent requests. The
    // attempt timeout covers sending the body: 100 uploads sharing two cores take longer than
    // the default 10 s in a debug build.
    let gateway = GatewayProcess::start(&table(
        &upstream,
        &format!("buffer_budget = {budget}"),
        "[route.policy]\ndeadline = \"120s\"\nattempt_timeout = \"120s\"",
    ));
    let addr = gateway.addr;
    let client = client();
    // Warm up: connections, pools and lazily initialised state exist before the baseline.
    let res = send_with(&client, addr, "PUT", "/warm", Pattern::new(MIB, false)).await;
    assert_eq!(res.status, StatusCode::OK);
    upstream.reset_counts();

    let before = gateway.rss();
    let (stop, sampler) = sample_peak(format!("/proc/{}/status", gateway.child.id()));
    let started = Instant::now();
    let uploads: Vec<_> = (0..UPLOADS)
        .map(|n| {
            let client = client.clone();
            // Half chunked (each reserving 64 KiB: its first 64 KiB are kept for replay until
            // the body outgrows them), half declaring 16 MiB (kept not at all).
            let body = Pattern::new(SIZE, n % 2 == 1);
            tokio::spawn(async move { send_with(&client, addr, "PUT", "/up", body).await })
        })
        .collect();
    for upload in uploads {
        let res = upload.await.unwrap();
        assert_eq!(res.status, StatusCode::OK, "{:?}", res.reason());
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let after = gateway.rss();
    let growth = peak.saturating_sub(before);
    println!(
        "{UPLOADS} x 16 MiB through the gateway in {elapsed:.1?}: gateway RSS {} MiB before, \
         peak {} MiB (growth {} MiB; budget {} MiB + allowance {} MiB), {} MiB after",
        before / MIB,
        peak / MIB,
        growth / MIB,
        budget / MIB,
        UPLOADS * ALLOWANCE_PER_UPLOAD / MIB,
        after / MIB,
    );
    let deliveries = upstream.deliveries();
    assert_eq!(deliveries.len() as u64, UPLOADS);
    for delivery in &deliveries {
        assert_eq!(delivery.body_len, SIZE);
        assert_eq!(delivery.body_digest, expected);
    }
    assert!(
        growth < budget + UPLOADS * ALLOWANCE_PER_UPLOAD,
        "the gateway's RSS grew by {} MiB",
        growth / MIB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_upload_on_a_route_without_retries_streams_in_bounded_memory() {
    let _serial = SERIAL.lock().await;
    const SIZE: u64 = 64 * MIB;
    let upstream = ChaosServer::start().await.unwrap();
    // The default body limit is 64 MiB, inclusive: this upload is exactly at it.
    let gateway = GatewayProcess::start(&table(
        &upstream,
        "",
        "[route.policy.retry]\nmax_attempts = 1",
    ));
    let addr = gateway.addr;
    let client = client();
    let res = send_with(&client, addr, "PUT", "/warm", Pattern::new(MIB, true)).await;
    assert_eq!(res.status, StatusCode::OK);
    upstream.reset_counts();

    let before = gateway.rss();
    let (stop, sampler) = sample_peak(format!("/proc/{}/status", gateway.child.id()));
    let started = Instant::now();
    let res = send_with(&client, addr, "PUT", "/big", Pattern::new(SIZE, true)).await;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let growth = peak.saturating_sub(before);
    println!(
        "64 MiB through the gateway in {elapsed:.1?}: gateway RSS {} MiB before, growth {} KiB",
        before / MIB,
        growth / KIB
    );
    assert_eq!(res.status, StatusCode::OK);
    let deliveries = upstream.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].body_len, SIZE);
    // One connection each way: hyper's read buffer (about 400 KiB at most) and the chunks in
    // flight. A buffered body would be 64 MiB.
    assert!(
        growth < 8 * MIB,
        "the gateway's RSS grew by {} KiB",
        growth / KIB
    );
}
