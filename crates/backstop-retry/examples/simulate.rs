//! Virtual-time simulations of retry behaviour, deterministic for a seed.
//!
//! 1. **Contention**: N clients each make one conflicting write to a shared resource (optimistic
//!    concurrency: a write fails if another write succeeded between its read and its write),
//!    retrying with capped exponential backoff (base 5 ms, cap 2 s; network delay 10 ms ± 2 ms).
//!    Reports total calls and time until every client succeeded, per jitter mode.
//! 2. **Outage**: clients send GETs at a steady rate through the real `RetryLayer` to an upstream
//!    that is down for 30 s and then serves up to a fixed capacity. Reports the load offered and
//!    actually sent during the outage, and the time to recover: without a budget, with the
//!    budget, and with the real `CircuitBreakerLayer` (backstop-breaker, default settings) under
//!    the retry layer, with and without the budget. "Sent" is what reaches the upstream: a
//!    breaker rejection is not sent.
//!
//! `cargo run --release -p backstop-retry --example simulate -- [seed] [--series FILE]`
//!
//! `--series FILE` also writes the outage runs per second (offered, attempted, sent, served) as
//! tab-separated values, for `scripts/bench-all`'s charts. Virtual time: the whole run takes
//! about a second, so `cargo test` runs it as it is (the example is `test = true`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backstop_breaker::CircuitBreakerLayer;
use backstop_classify::Error;
use backstop_retry::{Backoff, Jitter, ReplayBody, RetryBudget, RetryLayer};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tower::util::MapRequestLayer;
use tower::{Layer, Service, ServiceExt, service_fn};

const MODES: [Jitter; 4] = [
    Jitter::None,
    Jitter::Equal,
    Jitter::Full,
    Jitter::Decorrelated,
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seed = args.iter().find_map(|a| a.parse().ok()).unwrap_or(1);
    let series = args
        .iter()
        .position(|a| a == "--series")
        .and_then(|at| args.get(at + 1));
    println!("seed {seed}\n");
    contention(seed);
    println!();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(outage(seed, series.map(String::as_str)));
}

// ---------------------------------------------------------------------------------------------
// Contention

struct Attempt {
    client: usize,
    read_at: Duration,
}

fn contention(seed: u64) {
    println!(
        "## Contention: N clients, one conflicting write each (base 5 ms, cap 2 s, delay 10 ± 2 ms)\n"
    );
    println!("| clients | jitter | total calls | calls/client | time to finish |");
    println!("|---:|---|---:|---:|---:|");
    for clients in [10usize, 50, 100, 190] {
        for jitter in MODES {
            let backoff =
                Backoff::new(Duration::from_millis(5), Duration::from_secs(2), jitter).unwrap();
            let (calls, finish) = run_contention(clients, backoff, seed);
            println!(
                "| {clients} | {} | {calls} | {:.1} | {:.2} s |",
                jitter.name(),
                calls as f64 / clients as f64,
                finish.as_secs_f64()
            );
        }
    }
}

/// One call is a read (one network hop) then a write (a round trip later); the write fails if
/// another client's write succeeded in between. The client learns the result one hop later.
fn run_contention(clients: usize, backoff: Backoff, seed: u64) -> (u64, Duration) {
    let mut rng = SmallRng::seed_from_u64(seed ^ clients as u64);
    let hop = |rng: &mut SmallRng| Duration::from_micros(rng.random_range(8_000..=12_000));
    // Writes ordered by the instant they reach the resource.
    let mut writes: BinaryHeap<Reverse<(Duration, usize, Duration)>> = BinaryHeap::new();
    let mut retries = vec![0u32; clients];
    let mut previous = vec![Duration::ZERO; clients];
    for client in 0..clients {
        let start = Duration::ZERO;
        let attempt = Attempt {
            client,
            read_at: start + hop(&mut rng),
        };
        let write_at = attempt.read_at + hop(&mut rng) + hop(&mut rng);
        writes.push(Reverse((write_at, attempt.client, attempt.read_at)));
    }
    let mut calls = clients as u64;
    let mut last_success = None::<Duration>;
    let mut finish = Duration::ZERO;
    let mut done = 0;
    while let Some(Reverse((write_at, client, read_at))) = writes.pop() {
        let conflict = last_success.is_some_and(|at| at > read_at && at <= write_at);
        let answered_at = write_at + hop(&mut rng);
        if !conflict {
            last_success = Some(write_at);
            finish = finish.max(answered_at);
            done += 1;
            continue;
        }
        // Bounded: a client gives up after 1000 calls (never reached in these runs).
        if retries[client] >= 1000 {
            done += 1;
            continue;
        }
        let delay = backoff.delay(retries[client], previous[client], &mut rng);
        retries[client] += 1;
        previous[client] = delay;
        calls += 1;
        let read_at = answered_at + delay + hop(&mut rng);
        let write_at = read_at + hop(&mut rng) + hop(&mut rng);
        writes.push(Reverse((write_at, client, read_at)));
    }
    debug_assert_eq!(done, clients);
    (calls, finish)
}

// ---------------------------------------------------------------------------------------------
// Outage

const OFFERED_PER_SECOND: u32 = 100;
const OUTAGE: Duration = Duration::from_secs(30);
const RUN: Duration = Duration::from_secs(60);

/// The upstream: down for the outage, then able to serve `capacity` requests per second (per
/// 100 ms slot), answering 503 beyond that.
struct Upstream {
    start: Instant,
    capacity: u32,
    slot: u64,
    served_in_slot: u32,
    /// Per 100 ms: (attempts received, attempts served).
    log: Vec<(u32, u32)>,
}

impl Upstream {
    fn handle(&mut self) -> bool {
        let now = Instant::now() - self.start;
        let slot = (now.as_millis() / 100) as u64;
        if slot != self.slot {
            self.slot = slot;
            self.served_in_slot = 0;
        }
        let index = slot as usize;
        if self.log.len() <= index {
            self.log.resize(index + 1, (0, 0));
        }
        self.log[index].0 += 1;
        let ok = now >= OUTAGE && self.served_in_slot < self.capacity / 10;
        if ok {
            self.served_in_slot += 1;
            self.log[index].1 += 1;
        }
        ok
    }
}

/// What stands between the callers and the upstream.
#[derive(Clone, Copy, PartialEq)]
enum Guard {
    /// Retries, no budget.
    None,
    /// Retries within the default budget.
    Budget,
    /// Retries without a budget over the real circuit breaker (default settings).
    Breaker,
    /// Retries within the default budget over the real circuit breaker (default settings).
    BudgetBreaker,
}

impl Guard {
    fn label(self) -> &'static str {
        match self {
            Guard::None => "none",
            Guard::Budget => "budget",
            Guard::Breaker => "breaker",
            Guard::BudgetBreaker => "budget + breaker",
        }
    }
}

/// One run's per-second figures, for the charts: requests offered, attempts the retry layer
/// made, attempts that reached the upstream (a breaker rejection never does), attempts served.
struct Second {
    offered: u32,
    attempts: u32,
    sent: u32,
    served: u32,
}

struct OutageRun {
    sent: u64,
    attempts: u64,
    recovery: Option<Duration>,
    failed: u64,
    seconds: Vec<Second>,
}

async fn outage(seed: u64, series: Option<&str>) {
    println!(
        "## Outage: {OFFERED_PER_SECOND} requests/s offered for {} s, upstream down for the first {} s, then serving up to its capacity (503 beyond); 5 attempts, full jitter 50 ms – 1 s; budget 20 % + 10/s over 10 s; breaker with its defaults (5 consecutive failures or 50 % of the last 100, open 5 s doubling to 300 s, ± 20 %, one probe), under the retry layer\n",
        RUN.as_secs(),
        OUTAGE.as_secs()
    );
    println!(
        "| capacity | guard | offered during outage | sent during outage | amplification | breaker rejections during outage | time to recover after the outage | requests failed |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for capacity in [150, 110] {
        for guard in [
            Guard::None,
            Guard::Budget,
            Guard::Breaker,
            Guard::BudgetBreaker,
        ] {
            let run = run_outage(seed, guard, capacity).await;
            let offered = u64::from(OFFERED_PER_SECOND) * OUTAGE.as_secs();
            println!(
                "| {capacity}/s | {} | {offered} | {} | {:.2}× | {} | {} | {} |",
                guard.label(),
                run.sent,
                run.sent as f64 / offered as f64,
                run.attempts - run.sent,
                run.recovery
                    .map_or("not within the run".to_owned(), |d| format!(
                        "{:.1} s",
                        d.as_secs_f64()
                    )),
                run.failed,
            );
            rows.push((capacity, guard, run));
        }
    }
    if let Some(path) = series {
        // One line per (capacity, guard, second): what the charts draw.
        let mut out = String::from("capacity\tguard\tsecond\toffered\tattempts\tsent\tserved\n");
        for (capacity, guard, run) in &rows {
            for (second, s) in run.seconds.iter().enumerate() {
                out.push_str(&format!(
                    "{capacity}\t{}\t{second}\t{}\t{}\t{}\t{}\n",
                    guard.label(),
                    s.offered,
                    s.attempts,
                    s.sent,
                    s.served
                ));
            }
        }
        std::fs::write(path, out).unwrap();
    }
}

/// Per 100 ms slot of virtual time since `start`.
fn slot_of(start: Instant) -> usize {
    ((Instant::now() - start).as_millis() / 100) as usize
}

fn count_in(log: &Mutex<Vec<u32>>, slot: usize) {
    let mut log = log.lock().unwrap();
    if log.len() <= slot {
        log.resize(slot + 1, 0);
    }
    log[slot] += 1;
}

async fn run_outage(seed: u64, guard: Guard, capacity: u32) -> OutageRun {
    let start = Instant::now();
    let upstream = Arc::new(Mutex::new(Upstream {
        start,
        capacity,
        slot: 0,
        served_in_slot: 0,
        log: Vec::new(),
    }));
    let shared = upstream.clone();
    let target = service_fn(move |_req: Request<ReplayBody<Empty<Bytes>>>| {
        let ok = shared.lock().unwrap().handle();
        async move {
            let mut res = Response::new(());
            if !ok {
                *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            Ok::<_, Error>(res)
        }
    });
    let builder = RetryLayer::builder()
        .seed(seed)
        .max_attempts(5)
        .base_delay(Duration::from_millis(50))
        .max_delay(Duration::from_secs(1));
    let retry = match guard {
        Guard::Budget | Guard::BudgetBreaker => builder.budget(RetryBudget::default()),
        Guard::None | Guard::Breaker => builder.no_budget(),
    }
    .build()
    .unwrap();
    // Every attempt the retry layer makes, per 100 ms, whether or not the breaker lets it go.
    let attempts = Arc::new(Mutex::new(Vec::<u32>::new()));
    let counted = attempts.clone();
    let count = move |req| {
        count_in(&counted, slot_of(start));
        req
    };
    let run = if matches!(guard, Guard::Breaker | Guard::BudgetBreaker) {
        let breaker = CircuitBreakerLayer::builder().seed(seed).build().unwrap();
        drive(retry.layer(MapRequestLayer::new(count).layer(breaker.layer(target)))).await
    } else {
        drive(retry.layer(MapRequestLayer::new(count).layer(target))).await
    };
    let (failed, offered) = run;
    let upstream = upstream.lock().unwrap();
    let attempts = attempts.lock().unwrap();
    let outage_slots = (OUTAGE.as_millis() / 100) as usize;
    let run_slots = (RUN.as_millis() / 100) as usize;
    let received = |slot: usize| upstream.log.get(slot).map_or(0, |(n, _)| *n);
    let served = |slot: usize| upstream.log.get(slot).map_or(0, |(_, s)| *s);
    let tried = |slot: usize| attempts.get(slot).copied().unwrap_or(0);
    let sent: u64 = (0..outage_slots).map(|i| u64::from(received(i))).sum();
    let tried_in_outage: u64 = (0..outage_slots).map(|i| u64::from(tried(i))).sum();
    // Per second, up to the end of the run or of the last attempt, whichever is later.
    let slots = run_slots.max(upstream.log.len()).max(attempts.len());
    let seconds: Vec<Second> = (0..slots.div_ceil(10))
        .map(|second| {
            let range = second * 10..(second + 1) * 10;
            Second {
                offered: offered.get(second).copied().unwrap_or(0),
                attempts: range.clone().map(tried).sum(),
                sent: range.clone().map(received).sum(),
                served: range.map(served).sum(),
            }
        })
        .collect();
    // Recovered: the first second after the outage from which on every second had at most 1 %
    // of its requests' attempts rejected or left unsent (a breaker rejection is a failure the
    // caller sees, as a 503 is).
    let after: &[Second] = &seconds[OUTAGE.as_secs() as usize..];
    let healthy = |s: &Second| {
        s.attempts == 0 || f64::from(s.attempts - s.served) <= 0.01 * f64::from(s.attempts)
    };
    let recovery = (0..after.len())
        .find(|&i| after[i..].iter().all(healthy))
        .map(|i| Duration::from_secs(i as u64));
    OutageRun {
        sent,
        attempts: tried_in_outage,
        recovery,
        failed,
        seconds,
    }
}

/// Offers `OFFERED_PER_SECOND` requests per second for `RUN` through `service`; returns the
/// requests that failed and the requests offered in each second.
async fn drive<S>(service: S) -> (u64, Vec<u32>)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<()>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
{
    let start = Instant::now();
    let mut offered = vec![0u32; RUN.as_secs() as usize];
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / OFFERED_PER_SECOND);
    let total = u64::from(OFFERED_PER_SECOND) * RUN.as_secs();
    for _ in 0..total {
        tick.tick().await;
        let second = (Instant::now() - start).as_secs() as usize;
        if let Some(n) = offered.get_mut(second) {
            *n += 1;
        }
        let svc = service.clone();
        tasks.spawn(async move {
            let req = Request::get("http://upstream/item")
                .body(Empty::new())
                .unwrap();
            svc.oneshot(req)
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false)
        });
    }
    let mut failed = 0;
    while let Some(ok) = tasks.join_next().await {
        if !ok.unwrap() {
            failed += 1;
        }
    }
    (failed, offered)
}
