//! Virtual-time simulations of retry behaviour, deterministic for a seed.
//!
//! 1. **Contention**: N clients each make one conflicting write to a shared resource (optimistic
//!    concurrency: a write fails if another write succeeded between its read and its write),
//!    retrying with capped exponential backoff (base 5 ms, cap 2 s; network delay 10 ms ± 2 ms).
//!    Reports total calls and time until every client succeeded, per jitter mode.
//! 2. **Outage**: clients send GETs at a steady rate through the real `RetryLayer` to an upstream
//!    that is down for 30 s and then serves up to a fixed capacity. Reports the load offered and
//!    actually sent during the outage, and the time to recover, with and without the budget.
//!
//! `cargo run --release -p backstop-retry --example simulate -- [seed]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backstop_classify::Error;
use backstop_retry::{Backoff, Jitter, ReplayBody, RetryBudget, RetryLayer};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};

const MODES: [Jitter; 4] = [
    Jitter::None,
    Jitter::Equal,
    Jitter::Full,
    Jitter::Decorrelated,
];

fn main() {
    let seed = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    println!("seed {seed}\n");
    contention(seed);
    println!();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(outage(seed));
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

async fn outage(seed: u64) {
    println!(
        "## Outage: {OFFERED_PER_SECOND} requests/s offered for {} s, upstream down for the first {} s, then serving up to its capacity (503 beyond); 5 attempts, full jitter 50 ms – 1 s\n",
        RUN.as_secs(),
        OUTAGE.as_secs()
    );
    println!(
        "| capacity | budget | offered during outage | sent during outage | amplification | time to recover after the outage | requests failed |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for (capacity, budget) in [
        (150, None),
        (150, Some(RetryBudget::default())),
        (110, None),
        (110, Some(RetryBudget::default())),
    ] {
        let builder = RetryLayer::builder()
            .seed(seed)
            .max_attempts(5)
            .base_delay(Duration::from_millis(50))
            .max_delay(Duration::from_secs(1));
        let label = if budget.is_some() {
            "20 % + 10/s over 10 s"
        } else {
            "none"
        };
        let layer = match budget {
            Some(budget) => builder.budget(budget),
            None => builder.no_budget(),
        }
        .build()
        .unwrap();
        let (sent, recovery, failed) = run_outage(layer, capacity).await;
        let offered = OFFERED_PER_SECOND as u64 * OUTAGE.as_secs();
        println!(
            "| {capacity}/s | {label} | {offered} | {sent} | {:.2}× | {} | {failed} |",
            sent as f64 / offered as f64,
            recovery.map_or("not within the run".to_owned(), |d| format!(
                "{:.1} s",
                d.as_secs_f64()
            ))
        );
    }
}

async fn run_outage(layer: RetryLayer, capacity: u32) -> (u64, Option<Duration>, u64) {
    let upstream = Arc::new(Mutex::new(Upstream {
        start: Instant::now(),
        capacity,
        slot: 0,
        served_in_slot: 0,
        log: Vec::new(),
    }));
    let shared = upstream.clone();
    let service = layer.layer(service_fn(
        move |_req: Request<ReplayBody<Empty<Bytes>>>| {
            let ok = shared.lock().unwrap().handle();
            async move {
                let mut res = Response::new(());
                if !ok {
                    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                }
                Ok::<_, Error>(res)
            }
        },
    ));
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / OFFERED_PER_SECOND);
    let total = OFFERED_PER_SECOND as u64 * RUN.as_secs();
    for _ in 0..total {
        tick.tick().await;
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
    let upstream = upstream.lock().unwrap();
    let outage_slots = (OUTAGE.as_millis() / 100) as usize;
    let sent: u64 = upstream.log[..outage_slots]
        .iter()
        .map(|(n, _)| u64::from(*n))
        .sum();
    // Recovered: the first second after the outage from which on every second had at most 1 %
    // of its attempts rejected.
    let seconds: Vec<(u32, u32)> = upstream.log[outage_slots..]
        .chunks(10)
        .map(|c| c.iter().fold((0, 0), |(a, b), (n, s)| (a + n, b + s)))
        .collect();
    let healthy = |(n, s): &(u32, u32)| *n == 0 || f64::from(*n - *s) <= 0.01 * f64::from(*n);
    let recovery = (0..seconds.len())
        .find(|&i| seconds[i..].iter().all(healthy))
        .map(|i| Duration::from_secs(i as u64));
    (sent, recovery, failed)
}
