//! Loopback throughput and latency of the full `backstop::Client` stack against a bare
//! hyper-util client, sequential and with 32 concurrent requests.
//!
//! `cargo bench -p backstop --bench stack` (a plain binary, not criterion: it prints a table).
//! Each mode runs in interleaved rounds (which side goes first alternates) so drift on a shared
//! machine hits both sides alike; percentiles are over every request of every round, and the
//! throughput ratio is also given per round (median and middle half of the rounds).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::upstream;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

const ROUNDS: usize = 16;
/// Rounds of 32 × 100 requests in `STACK_PROFILE` mode (96 000 requests).
const PROFILE_ROUNDS: usize = 30;
const SEQUENTIAL_PER_ROUND: usize = 2_000;
const CONCURRENCY: usize = 32;
const CONCURRENT_PER_TASK: usize = 100;

#[derive(Clone)]
enum Side {
    Bare(Box<HyperClient<HttpConnector, Full<Bytes>>>),
    Backstop(backstop::Client),
}

impl Side {
    async fn get(&self, url: &str) {
        match self {
            Side::Bare(client) => {
                let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
                let res = client.request(req).await.unwrap();
                let _ = res.into_body().collect().await.unwrap();
            }
            Side::Backstop(client) => {
                let res = client.get(url).await.unwrap();
                let _ = res.into_body().collect().await.unwrap();
            }
        }
    }
}

async fn sequential(side: &Side, url: &str, latencies: &mut Vec<Duration>) -> Duration {
    let started = Instant::now();
    for _ in 0..SEQUENTIAL_PER_ROUND {
        let t = Instant::now();
        side.get(url).await;
        latencies.push(t.elapsed());
    }
    started.elapsed()
}

async fn concurrent(side: &Side, url: &str, latencies: &mut Vec<Duration>) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let side = side.clone();
            let url = url.to_owned();
            tokio::spawn(async move {
                let mut own = Vec::with_capacity(CONCURRENT_PER_TASK);
                for _ in 0..CONCURRENT_PER_TASK {
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
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

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let addr = upstream().await;
        let url = format!("http://{addr}/");
        let bare = Side::Bare(Box::new(
            HyperClient::builder(TokioExecutor::new()).build_http(),
        ));
        let backstop = Side::Backstop(backstop::Client::builder().build().unwrap());
        // `STACK_PROFILE=bare|backstop`: only that client, 32 tasks, for a profiler.
        if let Ok(which) = std::env::var("STACK_PROFILE") {
            let side = if which == "bare" { &bare } else { &backstop };
            let mut latencies = Vec::new();
            for _ in 0..PROFILE_ROUNDS {
                concurrent(side, &url, &mut latencies).await;
            }
            println!("profiled {} requests through {which}", latencies.len());
            return;
        }
        // Warm up both pools and code paths.
        for _ in 0..500 {
            bare.get(&url).await;
            backstop.get(&url).await;
        }
        println!(
            "{:<11} {:<9} {:>12} {:>9} {:>9} {:>9} {:>10}",
            "mode", "client", "requests/s", "p50 µs", "p99 µs", "p99.9 µs", "vs bare"
        );
        let mut ratios_by_mode = Vec::new();
        for mode in ["sequential", "32 tasks"] {
            let mut tallies = [Tally::new(), Tally::new()];
            // Per round, backstop's throughput over bare's in that same round.
            let mut ratios = Vec::with_capacity(ROUNDS);
            for round in 0..ROUNDS {
                let mut round_rps = [0.0; 2];
                // Alternate which side goes first, so neither always follows the other.
                let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                for i in order {
                    let side = [&bare, &backstop][i];
                    let tally = &mut tallies[i];
                    let (time, n) = if mode == "sequential" {
                        (
                            sequential(side, &url, &mut tally.latencies).await,
                            SEQUENTIAL_PER_ROUND,
                        )
                    } else {
                        (
                            concurrent(side, &url, &mut tally.latencies).await,
                            CONCURRENCY * CONCURRENT_PER_TASK,
                        )
                    };
                    tally.time += time;
                    tally.requests += n;
                    round_rps[i] = n as f64 / time.as_secs_f64();
                }
                ratios.push(round_rps[1] / round_rps[0] * 100.0);
            }
            let bare_rps = tallies[0].rps();
            for (name, tally) in ["bare", "backstop"].into_iter().zip(tallies.iter_mut()) {
                tally.latencies.sort_unstable();
                println!(
                    "{:<11} {:<9} {:>12.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1}%",
                    mode,
                    name,
                    tally.rps(),
                    percentile(&tally.latencies, 0.50).as_secs_f64() * 1e6,
                    percentile(&tally.latencies, 0.99).as_secs_f64() * 1e6,
                    percentile(&tally.latencies, 0.999).as_secs_f64() * 1e6,
                    tally.rps() / bare_rps * 100.0
                );
            }
            ratios.sort_by(f64::total_cmp);
            ratios_by_mode.push((mode, ratios));
        }
        println!();
        println!("backstop / bare throughput per round (same round), median [middle half]:");
        for (mode, ratios) in ratios_by_mode {
            println!(
                "{:<11} {:.1} % [{:.1} .. {:.1}]",
                mode,
                ratios[ratios.len() / 2],
                ratios[ratios.len() / 4],
                ratios[ratios.len() * 3 / 4]
            );
        }
    });
}
