//! The IO wrapper and the connect layers, side by side with their bare counterparts and peers.
//!
//! `cargo bench -p backstop-timeout --bench io -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use backstop_timeout::{
    ConnectTimeoutLayer, ConnectionIdleTimeoutLayer, IdleIo, OpaqueConnector, Side, TcpConnector,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};

const CHUNK: usize = 64 * 1024;
const TRANSFER: usize = 4 * 1024 * 1024;
const PERIOD: Duration = Duration::from_secs(30);

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), server.unwrap().0)
}

/// Moves `TRANSFER` bytes from `tx` to `rx` in `CHUNK` writes.
async fn transfer<W, R>(tx: &mut W, rx: &mut R, out: &[u8], inbuf: &mut [u8])
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let send = async {
        for _ in 0..TRANSFER / CHUNK {
            tx.write_all(out).await.unwrap();
        }
    };
    let recv = async {
        let mut got = 0;
        while got < TRANSFER {
            got += rx.read(inbuf).await.unwrap();
        }
    };
    tokio::join!(send, recv);
}

/// Bare and wrapped transfers alternated on the same pair, so load drifting on a shared machine
/// hits both alike; prints the medians and their ratio.
fn paired<W, R>(rt: &Runtime, label: &str, tx: &mut W, rx: &mut R, out: &[u8], inbuf: &mut [u8])
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    // `cargo test` runs this bench without `--bench` (criterion's test mode, as `--test`
    // does): three rounds, to show it still runs.
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let rounds = if quick { 3 } else { 200 };
    let mut bare = Vec::with_capacity(rounds);
    let mut wrapped = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = std::time::Instant::now();
        rt.block_on(transfer(tx, rx, out, inbuf));
        bare.push(start.elapsed());
        let (mut wtx, mut wrx) = rt.block_on(async {
            (
                IdleIo::new(&mut *tx, PERIOD, Side::Client),
                IdleIo::new(&mut *rx, PERIOD, Side::Server),
            )
        });
        let start = std::time::Instant::now();
        rt.block_on(transfer(&mut wtx, &mut wrx, out, inbuf));
        wrapped.push(start.elapsed());
    }
    bare.sort();
    wrapped.sort();
    let (bare, wrapped) = (bare[rounds / 2], wrapped[rounds / 2]);
    let gib = |d: Duration| TRANSFER as f64 / d.as_secs_f64() / f64::from(1u32 << 30);
    println!(
        "paired {label}: bare {:.2} GiB/s ({bare:?}), idle-wrapped {:.2} GiB/s ({wrapped:?}), \
         wrapped/bare throughput {:.1} %",
        gib(bare),
        gib(wrapped),
        100.0 * bare.as_secs_f64() / wrapped.as_secs_f64()
    );
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let out = vec![7u8; CHUNK];
    let mut inbuf = vec![0u8; CHUNK];
    {
        let (mut tx, mut rx) = rt.block_on(tcp_pair());
        paired(&rt, "loopback-tcp", &mut tx, &mut rx, &out, &mut inbuf);
        let (mut tx, mut rx) = tokio::io::duplex(CHUNK);
        paired(&rt, "in-memory-pipe", &mut tx, &mut rx, &out, &mut inbuf);
    }
    let mut group = c.benchmark_group("throughput");
    group.throughput(Throughput::Bytes(TRANSFER as u64));
    group.sample_size(30);

    // Bare and wrapped share one socket pair (and one pipe), so both see the same buffers.
    let (mut tx, mut rx) = rt.block_on(tcp_pair());
    group.bench_function(BenchmarkId::new("loopback-tcp", "bare"), |b| {
        b.iter(|| rt.block_on(transfer(&mut tx, &mut rx, &out, &mut inbuf)));
    });
    {
        let (mut tx, mut rx) = rt.block_on(async {
            (
                IdleIo::new(&mut tx, PERIOD, Side::Client),
                IdleIo::new(&mut rx, PERIOD, Side::Server),
            )
        });
        group.bench_function(BenchmarkId::new("loopback-tcp", "idle-wrapped"), |b| {
            b.iter(|| rt.block_on(transfer(&mut tx, &mut rx, &out, &mut inbuf)));
        });
    }

    // In memory: no syscalls, so the wrapper's own cost is all that differs.
    let (mut tx, mut rx) = tokio::io::duplex(CHUNK);
    group.bench_function(BenchmarkId::new("in-memory-pipe", "bare"), |b| {
        b.iter(|| rt.block_on(transfer(&mut tx, &mut rx, &out, &mut inbuf)));
    });
    {
        let (mut tx, mut rx) = rt.block_on(async {
            (
                IdleIo::new(&mut tx, PERIOD, Side::Client),
                IdleIo::new(&mut rx, PERIOD, Side::Server),
            )
        });
        group.bench_function(BenchmarkId::new("in-memory-pipe", "idle-wrapped"), |b| {
            b.iter(|| rt.block_on(transfer(&mut tx, &mut rx, &out, &mut inbuf)));
        });
    }
    group.finish();
}

/// A listener that accepts and drops every connection.
async fn sink() -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    addr
}

/// Connects once and closes with a reset, so benchmark loops leave no TIME_WAIT sockets behind.
async fn connect_once<C, IO>(connector: &mut C, uri: &Uri)
where
    C: Service<Uri, Response = hyper_util::rt::TokioIo<IO>>,
    C::Error: std::fmt::Debug,
    IO: std::os::fd::AsFd,
{
    let io = connector
        .ready()
        .await
        .unwrap()
        .call(uri.clone())
        .await
        .unwrap();
    socket2::SockRef::from(io.inner())
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    black_box(io);
}

fn connect(c: &mut Criterion) {
    let rt = runtime();
    let addr = rt.block_on(sink());
    let uri: Uri = format!("http://{addr}/").parse().unwrap();
    let bound = Duration::from_secs(3);
    let mut group = c.benchmark_group("connect");
    group.sample_size(20);

    let mut http = HttpConnector::new();
    group.bench_function("hyper-util HttpConnector", |b| {
        b.iter(|| rt.block_on(connect_once(&mut http, &uri)));
    });
    let mut http_bounded = HttpConnector::new();
    http_bounded.set_connect_timeout(Some(bound));
    group.bench_function("hyper-util HttpConnector + set_connect_timeout", |b| {
        b.iter(|| rt.block_on(connect_once(&mut http_bounded, &uri)));
    });
    let mut tower_timeout = tower::timeout::TimeoutLayer::new(bound).layer(HttpConnector::new());
    group.bench_function("tower Timeout(HttpConnector)", |b| {
        b.iter(|| rt.block_on(connect_once(&mut tower_timeout, &uri)));
    });
    let mut tcp = TcpConnector::new();
    group.bench_function("backstop TcpConnector", |b| {
        b.iter(|| rt.block_on(connect_once(&mut tcp, &uri)));
    });
    let mut bounded = ConnectTimeoutLayer::new(bound).layer(TcpConnector::new());
    group.bench_function("backstop ConnectTimeout(TcpConnector)", |b| {
        b.iter(|| rt.block_on(connect_once(&mut bounded, &uri)));
    });
    let mut bounded_http =
        ConnectTimeoutLayer::new(bound).layer(OpaqueConnector::new(HttpConnector::new()));
    group.bench_function("backstop ConnectTimeout(HttpConnector)", |b| {
        b.iter(|| rt.block_on(connect_once(&mut bounded_http, &uri)));
    });
    let mut idle = tower::ServiceBuilder::new()
        .layer(ConnectTimeoutLayer::new(bound))
        .layer(ConnectionIdleTimeoutLayer::new(PERIOD))
        .service(TcpConnector::new());
    group.bench_function("backstop ConnectTimeout(IdleTimeout(TcpConnector))", |b| {
        b.iter(|| {
            rt.block_on(async {
                let io = idle.ready().await.unwrap().call(uri.clone()).await.unwrap();
                socket2::SockRef::from(io.get_ref().inner())
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
                black_box(io);
            })
        });
    });
    group.finish();
}

/// The clock read each wait costs. Benches build tokio with `test-util` (a dev-dependency
/// feature), whose clock takes a lock; production builds read the OS clock directly.
fn clock(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("clock");
    group.bench_function("tokio Instant::now (test-util build)", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()));
    });
    group.bench_function("std Instant::now", |b| {
        b.iter(|| black_box(std::time::Instant::now()));
    });
    group.finish();
}

criterion_group!(benches, throughput, connect, clock);
criterion_main!(benches);
