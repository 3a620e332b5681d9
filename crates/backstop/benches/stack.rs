//! Loopback throughput and latency of the full `backstop::Client` stack against a bare
//! hyper-util client, sequential and with 32 concurrent requests. A third side puts the peers'
//! usual stack in the same rounds for reference: tower's `Retry` (3 attempts, a `TpsBudget`)
//! around tower-resilience's circuit breaker around tower's `Timeout`, over the same hyper-util
//! client (its `HttpConnector` with a connect timeout); a fourth, the least protection there is:
//! that client behind one tower `Timeout`.
//!
//! `cargo bench -p backstop --bench stack` (a plain binary, not criterion: it prints a table).
//! With `--features metrics` and `STACK_RECORDER=debugging`, metrics-util's debugging recorder is
//! installed first, so every metric backstop records is recorded for real (the added cost of the
//! `metrics` feature with a recorder); without it, none is installed. With `STACK_CONTROL=bare`
//! a second bare client takes the tower `Timeout`'s place (`bare (2)`): an A/A control, whose
//! figures "over bare" are the run's noise floor. With `STACK_CONTROL=padded` that control also
//! runs `STACK_PAD` lines of code nothing else runs once per request (`padded`, [`cold_code`]):
//! what that many cold code lines cost a request, in the same run. With
//! `STACK_CONTROL=connector` the control is a bare hyper-util client over backstop's connector
//! chain (connect timeout, connection idle timeout, its TCP connector; `connector`): what
//! backstop's connections cost without its layers. `STACK_OPEN=reverse` opens the clients'
//! pools last client first, to see whether the order they were opened in moves a figure.
//! `STACK_MODE=interleaved` runs only a third mode, sequential too but interleaved per request
//! (one request of each client in turn, 4 × 50 000): the drift of the shared machine, which
//! moves whole rounds by tens of microseconds, falls on every client alike, so the p99 added
//! over bare is resolved to about a microsecond (see the A/A control); `STACK_VARIANT=<name>`
//! puts a backstop client with one setting changed in the tower `Timeout`'s place
//! ([`backstop_variant`]), `STACK_EVICT_KB=<n>` evicts the caches before each request
//! ([`Evictor`]), `STACK_CPU=1` adds what each request costs the thread that makes it
//! ([`CallerCosts`]). `STACK_CODE=own` makes every hyper-util client of the run a copy of its
//! own, compiled in a crate of its own (`bench-clients/`), so that no two share hyper's,
//! hyper-util's or http's generic code, as none shares it with backstop's ([`own_code`]);
//! `scripts/bench-all` runs the interleaved mode so.
//! Each mode runs in interleaved rounds (in a balanced order: over four rounds each side takes
//! every place once and follows every other side once) so drift on a shared machine hits all
//! sides alike; percentiles are over every request of every round, and the
//! throughput ratio and the p99 added over bare are also given per round (median and middle
//! half of the rounds).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{percentile, upstream};

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

const ROUNDS: usize = 40;
/// The order of the four sides in a round, by round modulo 4: a Williams design, in which each
/// side takes each position once and directly follows each other side exactly once.
const BALANCED_ORDER: [[usize; 4]; 4] = [[0, 1, 3, 2], [1, 2, 0, 3], [2, 3, 1, 0], [3, 0, 2, 1]];
/// Rounds of 32 × 100 requests in `STACK_PROFILE` mode (96 000 requests).
const PROFILE_ROUNDS: usize = 30;
const SEQUENTIAL_PER_ROUND: usize = 2_000;
const CONCURRENCY: usize = 32;
/// Requests per side in `STACK_MODE=interleaved` (4 × 50 000 requests).
const INTERLEAVED_PER_SIDE: usize = 50_000;
/// Turns per block of the interleaved mode's per-block p99.
const INTERLEAVED_BLOCK: usize = 5_000;
const CONCURRENT_PER_TASK: usize = 100;

/// Whether this is a quick run: `cargo test` runs the bench binary without `--bench` (as
/// criterion's test mode does, `--test` too): a few requests per round, to show it still runs,
/// and no figure worth reading. `cargo bench` passes `--bench`. `STACK_PROFILE` runs are never
/// quick.
fn quick() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench")
}

#[derive(Clone)]
enum Side {
    /// A bare hyper-util client: copy a of the bench's clients (the bare client's), or b (the
    /// control's with `STACK_CODE=own`; see [`own_code`]).
    BareA(stack_client_a::Bare),
    BareB(stack_client_b::Bare),
    /// `STACK_CONTROL=padded`: the control's bare client, which also runs code of its own
    /// that nothing else runs (`cold_code`, `STACK_PAD` lines of it) once per request.
    Padded(stack_client_b::Bare, cold_code::Pad),
    /// `STACK_CONTROL=connector`: a bare hyper-util client over backstop's connector chain as
    /// the client builds it by default (connect timeout, connection idle timeout, its TCP
    /// connector), without the TLS layer and the timings: what the connections cost alone.
    Connector(Box<HyperClient<common::BackstopConnector, Full<Bytes>>>),
    /// tower's `Timeout` or the peers' stack: copy a, or with `STACK_CODE=own` c (`Timeout`)
    /// and d (the peers').
    TowerA(stack_client_a::Tower),
    TowerC(stack_client_c::Tower),
    TowerD(stack_client_d::Tower),
    Backstop(backstop::Client),
}

/// `STACK_CODE=own` (the interleaved mode): every hyper-util client of the run is a copy of its
/// own, built in a crate of its own (`bench-clients/clients.rs`, compiled as `stack-client-a`
/// for the bare client, `-b` for the control, `-c` for tower's `Timeout`, `-d` for the peers'
/// stack), so that no two clients share hyper's, hyper-util's and http's generic code, as none
/// shares it with backstop's client, which its own crates instantiate. With the default,
/// `shared`, the bare client, the control, tower's `Timeout` and the peers' stack all run copy
/// a, which three requests in four keep warm for each of them, while backstop's code runs one
/// request in four: a head start for the clients that share it, not a cost of backstop's
/// layers. A connector and a connection type of each client's own ("Fourteenth pass" in
/// BENCHMARKS.md) left the code generic over the request body alone (hyper-util's pool checkout,
/// its dispatch) and everything the bench's crate instantiated once for all (its request
/// builder, the header map's inserts, the pool key's hashing) shared: 500 to 580 code lines per
/// request of the peers' stack were warm after bare's request ("Twenty-ninth pass").
fn own_code() -> bool {
    match std::env::var("STACK_CODE").as_deref() {
        Ok("own") => true,
        Ok("shared") | Err(_) => false,
        Ok(other) => panic!("STACK_CODE={other}: own or shared"),
    }
}

/// The least protection there is: one tower `Timeout` (one timer per request), over a client
/// of its own code with `own` (`STACK_CODE=own`).
fn timeout_only(own: bool) -> Side {
    if own {
        Side::TowerC(stack_client_c::Tower::timeout())
    } else {
        Side::TowerA(stack_client_a::Tower::timeout())
    }
}

/// The peers' stack, over a client of its own code with `own` (`STACK_CODE=own`).
fn peers(own: bool) -> Side {
    if own {
        Side::TowerD(stack_client_d::Tower::peers())
    } else {
        Side::TowerA(stack_client_a::Tower::peers())
    }
}

/// Code that only the padded control runs (`STACK_CONTROL=padded`): `STACK_PAD` code lines
/// (96 by default, about the code lines per request backstop's layers fetch beyond the peers'
/// on the calling thread; a multiple of 3, at most 192), run once per request and scattered as
/// a call's code is: each block is a function of its own, 1 KiB long, of which a request runs
/// three lines (its first 75 bytes, which straddle two, and its return, 900 bytes on), so the
/// next-line prefetcher does not have the next one. In the interleaved
/// mode the other clients' requests evict them between two of the control's, as they evict
/// backstop's: the control's "p99 added" is what that many cold code lines cost a request.
mod cold_code {
    use std::hint::black_box;

    macro_rules! x2 {
        ($($t:tt)*) => { $($t)* $($t)* };
    }
    macro_rules! x4 {
        ($($t:tt)*) => { x2! { x2! { $($t)* } } };
    }
    macro_rules! x16 {
        ($($t:tt)*) => { x4! { x4! { $($t)* } } };
    }

    /// One block, one kibibyte: six stores and a test in its first line, the return in its
    /// last, and between them stores a request never runs (the test is never true). A const
    /// generic makes each copy a function of its own.
    #[inline(never)]
    fn block<const N: u64>() {
        x4! { black_box(N); }
        x2! { black_box(N); }
        if black_box(N == u64::MAX) {
            // 104 stores of 9 bytes.
            x16! { x4! { black_box(N); } x2! { black_box(N); } }
            x4! { black_box(N); }
            x4! { black_box(N); }
        }
    }

    /// One block of 4 KiB: as [`block`], with four times the stores a request never runs, so
    /// that each block's three lines are on a page of their own.
    #[inline(never)]
    fn wide_block<const N: u64>() {
        x4! { black_box(N); }
        x2! { black_box(N); }
        if black_box(N == u64::MAX) {
            x4! {
                x16! { x4! { black_box(N); } x2! { black_box(N); } } x4! { black_box(N); } x4! { black_box(N); }
            }
        }
    }

    /// One block of 24 conditional branches, each taken or not by a bit of `N` (so about half
    /// are taken, and each is predictable once seen): the branch sites of a request whose path is
    /// branchy, in about four code lines.
    #[inline(never)]
    fn branchy_block<const N: u64>() {
        let bits = black_box(N.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        macro_rules! branch {
            ($($k:literal)*) => { $( if bits & (1 << $k) != 0 { black_box($k); } )* };
        }
        branch!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23);
    }

    /// What the padded control runs per request.
    #[derive(Clone)]
    pub(super) struct Pad {
        /// Code lines, three per block.
        lines: usize,
        /// `STACK_PAD_WIDE=1`: a page per block (4 KiB blocks) instead of four blocks a page.
        wide: bool,
        /// `STACK_PAD_BRANCHES=1`: branchy blocks (24 branch sites each) instead.
        branchy: bool,
        /// `STACK_PAD_DATA=<pages>`: one line read from each of that many pages of a buffer of
        /// its own, 64 KiB apart: the data side of a request whose state is spread out.
        data: std::sync::Arc<[u8]>,
    }

    impl Pad {
        /// The pad `STACK_PAD` (lines, 96 when unset), `STACK_PAD_WIDE`, `STACK_PAD_BRANCHES`
        /// and `STACK_PAD_DATA` ask for.
        pub(super) fn from_env() -> Pad {
            let lines: usize = std::env::var("STACK_PAD")
                .map_or(96, |v| v.parse().expect("STACK_PAD: a number of lines"));
            assert!(
                lines.is_multiple_of(3) && lines <= 192,
                "STACK_PAD: a multiple of 3 lines, at most 192"
            );
            let pages: usize = std::env::var("STACK_PAD_DATA")
                .map_or(0, |v| v.parse().expect("STACK_PAD_DATA: a number of pages"));
            Pad::new(
                lines,
                std::env::var("STACK_PAD_WIDE").is_ok_and(|v| v == "1"),
                std::env::var("STACK_PAD_BRANCHES").is_ok_and(|v| v == "1"),
                pages,
            )
        }

        /// `lines` code lines (wide or branchy blocks) and `pages` data lines.
        pub(super) fn new(lines: usize, wide: bool, branchy: bool, pages: usize) -> Pad {
            Pad {
                lines,
                wide,
                branchy,
                data: vec![1u8; pages * DATA_STRIDE].into(),
            }
        }

        /// Runs `lines / 3` distinct blocks and reads the data lines.
        pub(super) fn run(&self) -> u64 {
            let blocks = if self.branchy {
                &BRANCHY
            } else if self.wide {
                &WIDE
            } else {
                &NARROW
            };
            for block in &blocks[..self.lines / 3] {
                block();
            }
            let mut sum = 0u64;
            for page in self.data.chunks(DATA_STRIDE) {
                sum += u64::from(black_box(page[0]));
            }
            self.lines as u64 + sum
        }
    }

    /// Each kind of block, 64 copies: as many as `STACK_PAD`'s 192 lines need.
    macro_rules! sixty_four {
        ($block:ident) => {
            sixty_four!($block; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25
                26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52
                53 54 55 56 57 58 59 60 61 62 63)
        };
        ($block:ident; $($n:literal)*) => { [$($block::<$n> as fn()),*] };
    }
    static NARROW: [fn(); 64] = sixty_four!(block);
    static WIDE: [fn(); 64] = sixty_four!(wide_block);
    static BRANCHY: [fn(); 64] = sixty_four!(branchy_block);

    /// The distance between two data lines the pad reads.
    const DATA_STRIDE: usize = 64 * 1024;
}

/// `STACK_VARIANT=<name>`: a backstop client with one setting away from the defaults, in the
/// tower `Timeout`'s place (named `variant`), to see in the same run what that setting costs:
/// `same` (the defaults again: the floor of the comparison), `nodelay` (Nagle's algorithm left
/// on, as hyper-util's `HttpConnector` leaves it), `nobreaker`, `noretry` (one attempt),
/// `longidle` (a one-day connection idle timeout), `bodyfree` (the deadline off once the head is
/// in), `onetimer` (the attempt timeout equal to the deadline).
fn backstop_variant(variant: &str) -> Side {
    let builder = backstop::Client::builder();
    let builder = match variant {
        "same" => builder,
        "nodelay" => builder.tcp_nodelay(false),
        "nobreaker" => builder.breaker(false),
        "noretry" => builder.max_attempts(1),
        "longidle" => builder.idle_timeout(Duration::from_secs(86_400)),
        "bodyfree" => builder.deadline_covers_body(false),
        "onetimer" => builder
            .deadline(Duration::from_secs(10))
            .attempt_timeout(Duration::from_secs(10)),
        other => panic!(
            "STACK_VARIANT={other}: one of same, nodelay, nobreaker, noretry, longidle, bodyfree, onetimer"
        ),
    };
    Side::Backstop(builder.build().unwrap())
}

/// `GET url` through a bare hyper-util client of the bench's own crate (the connector control's).
async fn bare_get<C>(client: &HyperClient<C, Full<Bytes>>, url: &str)
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
    let res = client.request(req).await.unwrap();
    let _ = res.into_body().collect().await.unwrap();
}

impl Side {
    async fn get(&self, url: &str) {
        match self {
            Side::BareA(client) => client.get(url).await,
            Side::BareB(client) => client.get(url).await,
            Side::Connector(client) => bare_get(client, url).await,
            Side::Padded(client, pad) => {
                std::hint::black_box(pad.run());
                client.get(url).await;
            }
            Side::TowerA(service) => service.get(url).await,
            Side::TowerC(service) => service.get(url).await,
            Side::TowerD(service) => service.get(url).await,
            Side::Backstop(client) => {
                let res = client.get(url).await.unwrap();
                let _ = res.into_body().collect().await.unwrap();
            }
        }
    }
}

impl Side {
    /// Opens [`common::POOLED_CONNECTIONS`] connections in the client's pool.
    async fn open_connections(&self, url: &str) {
        common::open_connections(|| {
            let side = self.clone();
            let url = url.to_owned();
            async move { side.get(&url).await }
        })
        .await;
    }
}

async fn sequential(side: &Side, url: &str, latencies: &mut Vec<Duration>, n: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        side.get(url).await;
        latencies.push(t.elapsed());
    }
    started.elapsed()
}

/// `STACK_EVICT_KB=<n>`: before each request of the interleaved mode (and of a sequential
/// profile), one byte written in every 64-byte line of an `n` KiB buffer, so the request finds
/// the caches as a service that did other work in between would: what a client's code and data
/// footprint costs shows in the wall clock (and in callgrind's `--cache-sim`).
///
/// The other work runs on the same thread's stack, so the stack below the caller stays cached:
/// after the buffer, [`warm_stack`] writes the 64 KiB of stack the request's frames will use.
/// Without it, a cold stack line counted against whichever client happened not to write it
/// before reading it: a future built on the stack reads its unwritten bytes when it is moved
/// into its box (hyper-util's `Client::call` copies the same bytes for every client, and read 35
/// lines from memory per request under backstop against 20 under the peers' stack).
struct Evictor {
    buffer: Vec<u8>,
    pass: u8,
}

impl Evictor {
    fn from_env() -> Evictor {
        let kib: usize = std::env::var("STACK_EVICT_KB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Evictor {
            buffer: vec![0; kib * 1024],
            pass: 0,
        }
    }

    fn evict(&mut self) {
        self.pass = self.pass.wrapping_add(1);
        write_every_line(&mut self.buffer, self.pass);
        if !self.buffer.is_empty() {
            warm_stack();
        }
    }
}

/// Writes one byte in every 64-byte line of `bytes`, first to last, so that each line is cached
/// afterwards (and the last ones most likely still in the L1).
fn write_every_line(bytes: &mut [u8], pass: u8) {
    for line in bytes.chunks_mut(64) {
        line[0] = line[0].wrapping_add(pass);
    }
    std::hint::black_box(bytes);
}

/// Writes the 64 KiB of stack below the caller's frame, deepest first, so that the lines nearest
/// the caller (the first a request's frames use) are the last written.
#[inline(never)]
fn warm_stack() {
    let mut frames = [0u8; 64 * 1024];
    write_every_line(&mut frames, 1);
}

/// One request of each side in turn (in the balanced order, rotating per turn), `per_side` turns:
/// drift of the shared machine, which the per-round figures see as rounds that differ by tens
/// of microseconds, falls on every side alike within a few microseconds, so each side's p99 is
/// over the same stretch of time. Each side's code runs one request in four, between the
/// others': nearer a service that calls out between other work than a loop of one client.
async fn interleaved(
    sides: &[&Side; 4],
    url: &str,
    per_side: usize,
    mut costs: Option<&mut CallerCosts>,
) -> Vec<Vec<Duration>> {
    let mut latencies = vec![Vec::with_capacity(per_side); sides.len()];
    let mut evictor = Evictor::from_env();
    for turn in 0..per_side {
        for &i in &BALANCED_ORDER[turn % BALANCED_ORDER.len()] {
            evictor.evict();
            let latency = match costs.as_deref_mut() {
                Some(costs) => costs.measure(i, sides[i].get(url)).await,
                None => {
                    let t = Instant::now();
                    sides[i].get(url).await;
                    t.elapsed()
                }
            };
            latencies[i].push(latency);
        }
    }
    latencies
}

/// `STACK_CPU=1` (interleaved mode): what each request costs the thread that makes it, per
/// client. Its CPU time (`CLOCK_THREAD_CPUTIME_ID`, user and kernel: on a VM, most of it is
/// waking the worker that runs the connection and being woken by it), split into the time inside
/// the request future's polls and between them (parked, being woken), and how long the
/// request's future spends in its polls: the first (the request is made and handed to the
/// connection's task) and the later ones (the response is taken and its body read). A gap in
/// wall-clock latency that is also a gap here is work on the caller's thread; one that is not
/// is time spent waiting for the other threads.
#[derive(Default)]
struct CallerCosts {
    cpu: [Vec<Duration>; 4],
    first_poll: [Duration; 4],
    later_polls: [Duration; 4],
    /// CPU time inside the polls (first and later): the rest of `cpu` is spent between them,
    /// parked and being woken.
    cpu_in_polls: [Duration; 4],
    polls: [u64; 4],
}

impl CallerCosts {
    /// When `STACK_CPU=1` and this platform has a per-thread CPU clock.
    fn from_env() -> Option<CallerCosts> {
        let wanted = std::env::var("STACK_CPU").as_deref() == Ok("1");
        (wanted && thread_cpu().is_some()).then(CallerCosts::default)
    }

    /// Runs `request` as side `side`'s; its wall-clock latency (the CPU clock is read outside
    /// it).
    async fn measure(&mut self, side: usize, request: impl Future<Output = ()>) -> Duration {
        let cpu_before = thread_cpu().unwrap_or_default();
        let started = Instant::now();
        let mut request = std::pin::pin!(request);
        let (mut first, mut later, mut polls) = (Duration::ZERO, Duration::ZERO, 0u64);
        let mut cpu_in_polls = Duration::ZERO;
        std::future::poll_fn(|cx| {
            let cpu = thread_cpu().unwrap_or_default();
            let t = Instant::now();
            let polled = request.as_mut().poll(cx);
            if polls == 0 {
                first += t.elapsed();
            } else {
                later += t.elapsed();
            }
            cpu_in_polls += thread_cpu().unwrap_or_default().saturating_sub(cpu);
            polls += 1;
            polled
        })
        .await;
        let latency = started.elapsed();
        let cpu_after = thread_cpu().unwrap_or_default();
        self.cpu[side].push(cpu_after.saturating_sub(cpu_before));
        self.first_poll[side] += first;
        self.later_polls[side] += later;
        self.cpu_in_polls[side] += cpu_in_polls;
        self.polls[side] += polls;
        latency
    }

    fn print(&self, names: &[&str; 4]) {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let p50s: Vec<f64> = self
            .cpu
            .iter()
            .map(|cpu| {
                let mut sorted = cpu.clone();
                sorted.sort_unstable();
                us(percentile(&sorted, 0.5))
            })
            .collect();
        println!(
            "| client | caller CPU µs/request: mean | p50 | p50 over bare | in polls | between polls | first poll µs | later polls µs | polls/request |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (i, name) in names.iter().enumerate() {
            let n = self.cpu[i].len().max(1) as f64;
            let total: Duration = self.cpu[i].iter().sum();
            println!(
                "| {name} | {:.1} | {:.1} | {:+.1} µs | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
                us(total) / n,
                p50s[i],
                p50s[i] - p50s[0],
                us(self.cpu_in_polls[i]) / n,
                us(total.saturating_sub(self.cpu_in_polls[i])) / n,
                us(self.first_poll[i]) / n,
                us(self.later_polls[i]) / n,
                self.polls[i] as f64 / n,
            );
        }
    }
}

/// The CPU time this thread has used, where the platform has a clock for it.
fn thread_cpu() -> Option<Duration> {
    #[cfg(unix)]
    {
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
            .ok()
            .map(Duration::from)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

async fn concurrent(
    side: &Side,
    url: &str,
    latencies: &mut Vec<Duration>,
    per_task: usize,
) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let side = side.clone();
            let url = url.to_owned();
            tokio::spawn(async move {
                let mut own = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    let t = Instant::now();
                    side.get(&url).await;
                    own.push(t.elapsed());
                }
                own
            })
        })
        .collect();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    started.elapsed()
}

/// Prints a per-round figure of each client in each mode (its rounds sorted): the median and
/// the middle half of the rounds.
fn print_per_round(
    title: &str,
    unit: &str,
    names: &[&str],
    by_mode: Vec<(&str, Vec<Vec<f64>>)>,
    show: impl Fn(f64) -> String,
) {
    println!();
    println!("{title}, median [middle half]:");
    for (mode, figures) in by_mode {
        for (name, rounds) in names.iter().zip(figures) {
            println!(
                "{:<11} {:<9} {} {unit} [{} .. {}]",
                mode,
                name,
                show(rounds[rounds.len() / 2]),
                show(rounds[rounds.len() / 4]),
                show(rounds[rounds.len() * 3 / 4])
            );
        }
    }
}

/// The interleaved mode's table (markdown, as `scripts/bench-all` keeps it): each side's
/// percentiles over all its requests, and its p99 less bare's, over all and per block of
/// [`INTERLEAVED_BLOCK`] turns (median and range of the blocks).
fn print_interleaved(names: &[&str; 4], latencies: &[Vec<Duration>]) {
    let p99_of = |slice: &[Duration]| {
        let mut sorted = slice.to_vec();
        sorted.sort_unstable();
        percentile(&sorted, 0.99).as_secs_f64() * 1e6
    };
    let block = INTERLEAVED_BLOCK.min(latencies[0].len());
    let bare_blocks: Vec<f64> = latencies[0].chunks(block).map(p99_of).collect();
    let bare_p99 = p99_of(&latencies[0]);
    println!(
        "| client | p50 µs | p99 µs | p99.9 µs | p99 added over bare | per block of {block} turns: median [min .. max] |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, own) in names.iter().zip(latencies) {
        let mut sorted = own.clone();
        sorted.sort_unstable();
        let mut added: Vec<f64> = own
            .chunks(block)
            .map(p99_of)
            .zip(&bare_blocks)
            .map(|(p99, bare)| p99 - bare)
            .collect();
        added.sort_by(f64::total_cmp);
        let us = |p| percentile(&sorted, p).as_secs_f64() * 1e6;
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:+.1} µs | {:+.1} [{:+.1} .. {:+.1}] µs |",
            us(0.5),
            us(0.99),
            us(0.999),
            us(0.99) - bare_p99,
            added[added.len() / 2],
            added[0],
            added[added.len() - 1],
        );
    }
}

struct Tally {
    requests: usize,
    time: Duration,
    latencies: Vec<Duration>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            requests: 0,
            time: Duration::ZERO,
            latencies: Vec::new(),
        }
    }
    fn rps(&self) -> f64 {
        self.requests as f64 / self.time.as_secs_f64()
    }
}

/// Panics unless [`BALANCED_ORDER`] is what its comment says (run by `cargo test`'s quick run
/// like the rest of the bench): every side in every place once, and every ordered pair of
/// sides next to each other once.
fn assert_balanced_order() {
    let n = BALANCED_ORDER.len();
    let mut places = vec![vec![0; n]; n];
    let mut follows = vec![vec![0; n]; n];
    for order in BALANCED_ORDER {
        for (place, &side) in order.iter().enumerate() {
            places[side][place] += 1;
        }
        for pair in order.windows(2) {
            follows[pair[0]][pair[1]] += 1;
        }
    }
    for a in 0..n {
        assert!(places[a].iter().all(|&count| count == 1), "{places:?}");
        for b in 0..n {
            assert_eq!(follows[a][b], usize::from(a != b), "{follows:?}");
        }
    }
}

fn main() {
    assert_balanced_order();
    #[cfg(feature = "metrics")]
    if std::env::var("STACK_RECORDER").as_deref() == Ok("debugging") {
        metrics_util::debugging::DebuggingRecorder::new()
            .install()
            .expect("no recorder installed before");
        println!("recording into metrics-util's debugging recorder");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let addr = upstream().await;
        let url = format!("http://{addr}/");
        // With `STACK_CODE=own` the bare client and the control each have their own copy.
        let own = own_code();
        let bare = Side::BareA(stack_client_a::Bare::new());
        // `STACK_CONTROL=bare`: a second bare client (its own pool) in the tower `Timeout`'s place,
        // named `bare (2)`: what "added over bare" reads when nothing is added, the floor under
        // every other figure of the run.
        let control_kind = std::env::var("STACK_CONTROL").unwrap_or_default();
        let control = control_kind == "bare";
        let timeout = if let Ok(variant) = std::env::var("STACK_VARIANT") {
            backstop_variant(&variant)
        } else if control_kind == "padded" {
            Side::Padded(stack_client_b::Bare::new(), cold_code::Pad::from_env())
        } else if control_kind == "connector" {
            Side::Connector(Box::new(
                HyperClient::builder(TokioExecutor::new()).build(common::backstop_connector()),
            ))
        } else if control && own {
            Side::BareB(stack_client_b::Bare::new())
        } else if control {
            Side::BareA(stack_client_a::Bare::new())
        } else {
            timeout_only(own)
        };
        let peers = peers(own);
        let backstop = Side::Backstop(backstop::Client::builder().build().unwrap());
        // `STACK_PROFILE=bare|timeout|peers|backstop`: only that client, 32 tasks, for a
        // profiler (or one task, with `STACK_MODE=sequential`).
        if let Ok(which) = std::env::var("STACK_PROFILE") {
            let side = match which.as_str() {
                "bare" => &bare,
                "timeout" => &timeout,
                "peers" => &peers,
                _ => &backstop,
            };
            side.open_connections(&url).await;
            let mut latencies = Vec::new();
            // `STACK_MODE=sequential`: 500 warm-up requests, then 20 000 one after another
            // (20 500 in all), the sequential mode's path for a profiler.
            if std::env::var("STACK_MODE").as_deref() == Ok("sequential") {
                for _ in 0..500 {
                    side.get(&url).await;
                }
                let mut evictor = Evictor::from_env();
                for _ in 0..20_000 {
                    evictor.evict();
                    let t = Instant::now();
                    side.get(&url).await;
                    latencies.push(t.elapsed());
                }
            } else {
                for _ in 0..PROFILE_ROUNDS {
                    concurrent(side, &url, &mut latencies, CONCURRENT_PER_TASK).await;
                }
            }
            println!("profiled {} requests through {which}", latencies.len());
            return;
        }
        // (rounds, sequential requests per round, requests per task, warm-up requests)
        let (rounds, per_round, per_task, warm_up) = if quick() {
            (2, 20, 2, 10)
        } else {
            (ROUNDS, SEQUENTIAL_PER_ROUND, CONCURRENT_PER_TASK, 500)
        };
        let names = [
            "bare",
            if std::env::var("STACK_VARIANT").is_ok() {
                "variant"
            } else if matches!(timeout, Side::Padded(..)) {
                "padded"
            } else if matches!(timeout, Side::Connector(..)) {
                "connector"
            } else if control {
                "bare (2)"
            } else {
                "timeout"
            },
            "peers",
            "backstop",
        ];
        let sides = [&bare, &timeout, &peers, &backstop];
        // Warm up the pools and code paths. `STACK_OPEN=reverse` opens the pools last client
        // first.
        let mut opening = sides;
        if std::env::var("STACK_OPEN").as_deref() == Ok("reverse") {
            opening.reverse();
        }
        for side in opening {
            side.open_connections(&url).await;
        }
        for _ in 0..warm_up {
            for side in sides {
                side.get(&url).await;
            }
        }
        // `STACK_MODE=interleaved`: only the interleaved table (`cargo test`'s quick run prints
        // it after the others, so it cannot rot).
        if std::env::var("STACK_MODE").as_deref() == Ok("interleaved") {
            let mut costs = CallerCosts::from_env();
            let latencies = interleaved(&sides, &url, INTERLEAVED_PER_SIDE, costs.as_mut()).await;
            print_interleaved(&names, &latencies);
            if let Some(costs) = costs {
                println!();
                costs.print(&names);
            }
            return;
        }
        println!(
            "{:<11} {:<9} {:>12} {:>9} {:>9} {:>9} {:>10}",
            "mode", "client", "requests/s", "p50 µs", "p99 µs", "p99.9 µs", "vs bare"
        );
        let mut ratios_by_mode = Vec::new();
        let mut p99_added_by_mode = Vec::new();
        for mode in ["sequential", "32 tasks"] {
            let mut tallies: Vec<Tally> = sides.iter().map(|_| Tally::new()).collect();
            // Per round, each side's throughput over bare's in that same round, and its p99 less
            // bare's p99 of that round: a hiccup of the shared machine lands in one side's round
            // and moves the p99 over every round by microseconds, but only that round's figure.
            let mut ratios: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); sides.len() - 1];
            let mut p99_added: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); sides.len() - 1];
            for round in 0..rounds {
                let mut round_rps = vec![0.0; sides.len()];
                let mut round_p99 = vec![0.0; sides.len()];
                // Whose turn comes when: a balanced Latin square, so over every four rounds
                // each side goes first once and follows each other side once (a side that
                // always came after the same one would carry what that one leaves behind, in
                // the caches, the allocator and the runtime's timers).
                for &i in &BALANCED_ORDER[round % BALANCED_ORDER.len()] {
                    let side = sides[i];
                    let tally = &mut tallies[i];
                    let first = tally.latencies.len();
                    let (time, n) = if mode == "sequential" {
                        (
                            sequential(side, &url, &mut tally.latencies, per_round).await,
                            per_round,
                        )
                    } else {
                        (
                            concurrent(side, &url, &mut tally.latencies, per_task).await,
                            CONCURRENCY * per_task,
                        )
                    };
                    tally.time += time;
                    tally.requests += n;
                    round_rps[i] = n as f64 / time.as_secs_f64();
                    let mut this_round = tally.latencies[first..].to_vec();
                    this_round.sort_unstable();
                    round_p99[i] = percentile(&this_round, 0.99).as_secs_f64() * 1e6;
                }
                for (ratios, rps) in ratios.iter_mut().zip(&round_rps[1..]) {
                    ratios.push(rps / round_rps[0] * 100.0);
                }
                for (added, p99) in p99_added.iter_mut().zip(&round_p99[1..]) {
                    added.push(p99 - round_p99[0]);
                }
            }
            let bare_rps = tallies[0].rps();
            let bare_p99 = {
                tallies[0].latencies.sort_unstable();
                percentile(&tallies[0].latencies, 0.99)
            };
            for (name, tally) in names.into_iter().zip(tallies.iter_mut()) {
                tally.latencies.sort_unstable();
                let p99 = percentile(&tally.latencies, 0.99);
                println!(
                    "{:<11} {:<9} {:>12.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1}%  p99 {:+.1} µs",
                    mode,
                    name,
                    tally.rps(),
                    percentile(&tally.latencies, 0.50).as_secs_f64() * 1e6,
                    p99.as_secs_f64() * 1e6,
                    percentile(&tally.latencies, 0.999).as_secs_f64() * 1e6,
                    tally.rps() / bare_rps * 100.0,
                    (p99.as_secs_f64() - bare_p99.as_secs_f64()) * 1e6,
                );
            }
            for figures in ratios.iter_mut().chain(&mut p99_added) {
                figures.sort_by(f64::total_cmp);
            }
            ratios_by_mode.push((mode, ratios));
            p99_added_by_mode.push((mode, p99_added));
        }
        print_per_round(
            "throughput over bare's in the same round",
            "%",
            &names[1..],
            ratios_by_mode,
            |v| format!("{v:.1}"),
        );
        print_per_round(
            "p99 added over bare's in the same round",
            "µs",
            &names[1..],
            p99_added_by_mode,
            |v| format!("{v:+.1}"),
        );
        if quick() {
            println!();
            // With `STACK_CPU=1`'s caller costs, so that path runs too.
            let mut costs = CallerCosts::default();
            let latencies = interleaved(&sides, &url, 20, Some(&mut costs)).await;
            print_interleaved(&names, &latencies);
            println!();
            costs.print(&names);
            // And with `STACK_CODE=own`'s clients, so that path runs too.
            let own_sides = [
                Side::BareA(stack_client_a::Bare::new()),
                Side::BareB(stack_client_b::Bare::new()),
                Side::TowerD(stack_client_d::Tower::peers()),
                backstop.clone(),
            ];
            let own_sides = [&own_sides[0], &own_sides[1], &own_sides[2], &own_sides[3]];
            // backstop's pool is open already.
            for side in &own_sides[..3] {
                side.open_connections(&url).await;
            }
            println!();
            let latencies = interleaved(&own_sides, &url, 20, None).await;
            print_interleaved(&["bare", "bare (2)", "peers", "backstop"], &latencies);
            // And the padded control's paths (`STACK_CONTROL=padded`), each kind of pad.
            let client = stack_client_b::Bare::new();
            let pads = [
                cold_code::Pad::from_env(),
                cold_code::Pad::new(192, true, false, 2),
                cold_code::Pad::new(192, false, true, 0),
            ];
            for pad in pads {
                Side::Padded(client.clone(), pad).get(&url).await;
            }
        }
    });
}
