//! `shutdown_signal` on a real process: SIGTERM and SIGINT both drain an in-flight request and
//! the process exits 0.
//!
//! The process is this very test binary, run again with `BACKSTOP_SIGNAL_CHILD` set so that only
//! [`child_server`] runs and serves; the parent sends it a request, then the signal (with the
//! `kill` command: sending signals directly would need `unsafe`).
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use backstop_server::{IncomingBody, ServeConfig, Server, shutdown_signal};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;

const CHILD: &str = "BACKSTOP_SIGNAL_CHILD";
/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(30);

/// The server process. A no-op unless run by [`drains_on`].
#[tokio::test]
async fn child_server() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    // Installed before the address is announced: no signal can come before it.
    let signal = shutdown_signal();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("ADDR {}", listener.local_addr().unwrap());
    let service = tower::service_fn(|_req: Request<IncomingBody>| async {
        println!("HANDLING");
        // Still running when the signal comes.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
            b"slow and complete\n",
        ))))
    });
    let config = ServeConfig::builder()
        .drain_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let summary = Server::new(listener, config)
        .serve_with_shutdown(service, signal)
        .await
        .unwrap();
    println!("SUMMARY drained={}", summary.drained);
}

/// Kills the child process (by pid, with the `kill` command) unless it has exited.
struct KillOnDrop(Option<String>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    }
}

/// Runs the child, sends it a slow request, then `signal` while the request is in flight.
fn drains_on(signal: &str) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_server", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    // Should an assertion fail before the child exits, it must not outlive the test.
    let mut guard = KillOnDrop(Some(pid.clone()));
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let wait_for = |prefix: &str| -> String {
        loop {
            let line = lines
                .recv_timeout(BOUND)
                .unwrap_or_else(|_| panic!("the child never printed {prefix:?}"));
            // The harness prints `test child_server ... ` before the test's first line.
            if let Some(at) = line.find(prefix) {
                return line[at + prefix.len()..].trim().to_owned();
            }
        }
    };
    let addr = wait_for("ADDR");

    let (answer_tx, answer) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(BOUND)).unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        let _ = stream.read_to_end(&mut buf);
        let _ = answer_tx.send(String::from_utf8_lossy(&buf).to_string());
    });
    wait_for("HANDLING");

    let killed = Command::new("kill").args([signal, &pid]).status().unwrap();
    assert!(killed.success());

    let (exit_tx, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = exit_tx.send(child.wait());
    });
    let status = exited
        .recv_timeout(BOUND)
        .unwrap_or_else(|_| panic!("the child did not exit within {BOUND:?} of {signal}"))
        .unwrap();
    guard.0 = None;
    assert!(status.success(), "{signal}: {status:?}");
    assert_eq!(wait_for("SUMMARY"), "drained=true");
    let answer = answer.recv_timeout(BOUND).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("slow and complete\n"), "{answer:?}");
}

#[test]
fn sigterm_drains_and_exits_zero() {
    drains_on("-TERM");
}

#[test]
fn sigint_drains_and_exits_zero() {
    drains_on("-INT");
}
