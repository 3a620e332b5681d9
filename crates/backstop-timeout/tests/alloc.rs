//! Allocation counts: the IO wrapper and the body wrapper allocate nothing per read, write or
//! frame, waits included (the connection's one timer is created once and reset after).
//! A binary of its own: the counting allocator applies to the whole binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use backstop_timeout::{IdleBody, IdleIo, Side};
use bytes::Bytes;
use http_body::Body;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower::ServiceExt as _;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const ROUNDS: usize = 1000;
const PERIOD: Duration = Duration::from_secs(30);

/// One round: the near end's read waits (Pending), the far end writes, the read completes; then
/// the near end writes and the far end reads. Polled by hand with a no-op waker, so the only
/// allocations counted are the IO's own.
fn round<N, F>(near: &mut N, far: &mut F, buf: &mut [u8; 512])
where
    N: AsyncRead + AsyncWrite + Unpin,
    F: AsyncRead + AsyncWrite + Unpin,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut read = ReadBuf::new(buf);
    assert!(
        Pin::new(&mut *near)
            .poll_read(&mut cx, &mut read)
            .is_pending()
    );
    assert!(matches!(
        Pin::new(&mut *far).poll_write(&mut cx, b"0123456789abcdef"),
        Poll::Ready(Ok(16))
    ));
    let mut read = ReadBuf::new(buf);
    assert!(matches!(
        Pin::new(&mut *near).poll_read(&mut cx, &mut read),
        Poll::Ready(Ok(()))
    ));
    assert_eq!(read.filled().len(), 16);
    assert!(matches!(
        Pin::new(&mut *near).poll_write(&mut cx, b"fedcba9876543210"),
        Poll::Ready(Ok(16))
    ));
    let mut read = ReadBuf::new(buf);
    assert!(matches!(
        Pin::new(&mut *far).poll_read(&mut cx, &mut read),
        Poll::Ready(Ok(()))
    ));
}

fn allocations_over_rounds<N, F>(near: &mut N, far: &mut F) -> usize
where
    N: AsyncRead + AsyncWrite + Unpin,
    F: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = [0u8; 512];
    // Warm up: the first timed wait creates the connection's timer (on a client, that is the
    // second round's read: the first read came before anything was asked).
    round(near, far, &mut buf);
    round(near, far, &mut buf);
    // Other threads of the test harness allocate now and then, and the counter sees them too:
    // noise only adds, so the least of a few measurements is the IO's own count.
    (0..5)
        .map(|_| {
            let region = Region::new(GLOBAL);
            for _ in 0..ROUNDS {
                round(near, far, &mut buf);
            }
            region.change().allocations
        })
        .min()
        .unwrap_or(usize::MAX)
}

/// One test only: the counting allocator sees every thread, so a second test running in
/// parallel would pollute the counts.
#[tokio::test(flavor = "current_thread")]
async fn reads_writes_frames_and_waits_do_not_allocate() {
    // Hand-polled far beyond tokio's cooperative budget, which would otherwise force `Pending`.
    tokio::task::unconstrained(async { check_reads_writes_and_waits() }).await;
    check_body_frames_and_waits();
    check_connect_overhead().await;
}

/// Allocations of one connect, least of a few rounds of `CONNECTS`.
async fn allocations_per_connect<C>(connector: &mut C, uri: &http::Uri) -> usize
where
    C: tower::Service<http::Uri>,
    C::Error: std::fmt::Debug,
{
    const CONNECTS: usize = 20;
    let mut least = usize::MAX;
    for _ in 0..5 {
        let region = Region::new(GLOBAL);
        for _ in 0..CONNECTS {
            let io = connector
                .ready()
                .await
                .unwrap()
                .call(uri.clone())
                .await
                .unwrap();
            drop(io);
        }
        least = least.min(region.change().allocations);
    }
    (least + CONNECTS / 2) / CONNECTS
}

/// What each layer adds to a connect: printed for BENCHMARKS.md, bounded here.
async fn check_connect_overhead() {
    use backstop_timeout::{ConnectTimeoutLayer, ConnectionIdleTimeoutLayer, TcpConnector};
    use hyper_util::client::legacy::connect::HttpConnector;
    use tower::Layer;

    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let uri: http::Uri = format!("http://{}/", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    std::thread::spawn(move || {
        while let Ok((stream, _)) = listener.accept() {
            drop(stream);
        }
    });
    let bound = Duration::from_secs(3);
    let bare = allocations_per_connect(&mut TcpConnector::new(), &uri).await;
    let bounded = allocations_per_connect(
        &mut ConnectTimeoutLayer::new(bound).layer(TcpConnector::new()),
        &uri,
    )
    .await;
    let bounded_idle = allocations_per_connect(
        &mut tower::ServiceBuilder::new()
            .layer(ConnectTimeoutLayer::new(bound))
            .layer(ConnectionIdleTimeoutLayer::new(PERIOD))
            .service(TcpConnector::new()),
        &uri,
    )
    .await;
    let http = allocations_per_connect(&mut HttpConnector::new(), &uri).await;
    let mut http_timeout = HttpConnector::new();
    http_timeout.set_connect_timeout(Some(bound));
    let http_timeout = allocations_per_connect(&mut http_timeout, &uri).await;
    let tower_timeout = allocations_per_connect(
        &mut tower::timeout::TimeoutLayer::new(bound).layer(HttpConnector::new()),
        &uri,
    )
    .await;
    println!(
        "allocations per connect: TcpConnector {bare}, ConnectTimeout(TcpConnector) {bounded}, \
         ConnectTimeout(IdleTimeout(TcpConnector)) {bounded_idle}, HttpConnector {http}, \
         HttpConnector+set_connect_timeout {http_timeout}, tower Timeout(HttpConnector) \
         {tower_timeout}"
    );
    // The connect bound costs its one boxed timer; the idle wrapper nothing until a wait.
    assert!(bounded <= bare + 1, "{bounded} vs {bare}");
    assert!(bounded_idle <= bounded, "{bounded_idle} vs {bounded}");
}

fn check_reads_writes_and_waits() {
    let (mut near, mut far) = tokio::io::duplex(4096);
    let bare = allocations_over_rounds(&mut near, &mut far);

    for side in [Side::Client, Side::Server] {
        let (near, mut far) = tokio::io::duplex(4096);
        let mut near = IdleIo::new(near, PERIOD, side);
        let wrapped = allocations_over_rounds(&mut near, &mut far);
        assert_eq!(
            wrapped, bare,
            "{side:?}: {wrapped} allocations over {ROUNDS} rounds, bare pipe {bare}"
        );
    }
    assert_eq!(
        bare, 0,
        "the pipe itself allocates; the comparison above still holds"
    );
}

/// A body that alternates between a pending poll and a frame.
struct Alternating {
    ready: bool,
}

impl Body for Alternating {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.ready = !self.ready;
        if self.ready {
            Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(b"x")))))
        } else {
            Poll::Pending
        }
    }
}

fn check_body_frames_and_waits() {
    let mut body = Box::pin(IdleBody::new(Alternating { ready: true }, PERIOD));
    let mut cx = Context::from_waker(Waker::noop());
    // Warm up: the first wait creates the timer, inline.
    assert!(body.as_mut().poll_frame(&mut cx).is_pending());
    let least = (0..5)
        .map(|_| {
            let region = Region::new(GLOBAL);
            for _ in 0..ROUNDS {
                assert!(matches!(
                    body.as_mut().poll_frame(&mut cx),
                    Poll::Ready(Some(Ok(_)))
                ));
                assert!(body.as_mut().poll_frame(&mut cx).is_pending());
            }
            region.change().allocations
        })
        .min();
    assert_eq!(least, Some(0));
}
