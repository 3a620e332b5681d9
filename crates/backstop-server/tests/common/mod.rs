//! A server on a loopback port, a raw HTTP/1.1 reader, and a process out of file descriptors,
//! for the tests of this crate.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use backstop_server::{IncomingBody, ServeConfig, ServeSummary, Server, ServerStats};
use bytes::Bytes;
use http::{Request, Response};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// A server serving on 127.0.0.1 until [`Running::stop`].
pub struct Running {
    pub addr: SocketAddr,
    pub stats: ServerStats,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<ServeSummary>>,
}

impl Running {
    /// Signals shutdown and waits (bounded) for the summary.
    pub async fn stop(mut self) -> ServeSummary {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops within the drain timeout")
            .unwrap()
            .unwrap()
    }
}

/// Serves `service` with `config` on a free loopback port.
pub async fn start<S, B>(config: ServeConfig, service: S) -> Running
where
    S: tower::Service<Request<IncomingBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<backstop_server::BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<backstop_server::BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(listener, config);
    let stats = server.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve_with_shutdown(service, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stats,
        stop: Some(stop),
        task,
    }
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body) from a raw connection and returns
/// the status line and the body.
pub async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let status = head.lines().next().unwrap_or_default().to_owned();
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).to_string();
            return (status, body);
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Open file descriptors of this process.
fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64)
}

/// While it lives, the process can open no file descriptor: every `accept` fails with `EMFILE`.
/// Dropping it gives them back, also when a test fails. The limit is process-wide: use it only in
/// a test binary of its own, with a single test.
pub struct NoDescriptorsLeft {
    soft: u64,
    hard: u64,
    filler: Vec<std::fs::File>,
}

/// Lowers the soft `RLIMIT_NOFILE` to the descriptors open now and fills whatever slack is left.
pub fn exhaust_descriptors() -> NoDescriptorsLeft {
    let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
    let used = open_descriptors();
    rlimit::Resource::NOFILE.set(used, hard).unwrap();
    // Whatever slack the count missed (its own directory handle, a descriptor closed since),
    // fill it, so the next accept really finds none.
    let mut filler = Vec::new();
    while filler.len() < 64 {
        match std::fs::File::open("/dev/null") {
            Ok(file) => filler.push(file),
            Err(_) => break,
        }
    }
    NoDescriptorsLeft { soft, hard, filler }
}

impl Drop for NoDescriptorsLeft {
    fn drop(&mut self) {
        self.filler.clear();
        let _ = rlimit::Resource::NOFILE.set(self.soft, self.hard);
    }
}

/// `n` clients connected to `addr` before the server accepts anything (the kernel queues them),
/// each with a 10 s read timeout so a server that never answers fails the test instead of
/// hanging it.
pub fn queued_clients(addr: SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
    (0..n)
        .map(|_| {
            let client = std::net::TcpStream::connect(addr).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            client
        })
        .collect()
}

/// Waits (up to 10 s) until `stats` has counted `n` accept errors. Polled: the errors happen in
/// the accept loop, which has no hook to wait on. `Err` when they never came.
pub async fn accept_errors_counted(
    stats: &ServerStats,
    n: u64,
) -> Result<(), tokio::time::error::Elapsed> {
    timeout(Duration::from_secs(10), async {
        while stats.accept_errors() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// `GET /` with `connection: close` over a blocking client, off the runtime's threads; the whole
/// answer as text.
pub async fn get_and_close(mut client: std::net::TcpStream) -> String {
    use std::io::{Read, Write};
    tokio::task::spawn_blocking(move || {
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = client.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap()
}
