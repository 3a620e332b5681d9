//! Where the full stack's cost comes from: sequential loopback requests through stacks that add
//! one layer at a time, interleaved in rounds, and the CPU time, throughput and p99 of each with
//! 32 requests in flight. `cargo bench -p backstop --bench ablation`. With
//! `ABLATION_MODE=interleaved`, only sequential requests, one through each stack in turn: each
//! step's p50 and p99 over bare in the same run. Read those with care: the same stack built
//! twice in one run differs by 2–5 µs at p50, by where its connections and tasks happened to
//! land (BENCHMARKS.md, "Sixteenth pass"), so a step's figure is not its layer's cost unless it
//! holds with the steps in another order (`ABLATION_ONLY`).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{percentile, upstream};

use std::time::Duration;

use backstop_breaker::CircuitBreakerLayer;
use backstop_classify::ClassifyLayer;
use backstop_deadline::{AttemptTimeoutLayer, DeadlineLayer, InnerWaits};
use backstop_retry::{ReplayBody, RetryLayer};
use backstop_timeout::BodyIdleTimeoutLayer;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

const ROUNDS: usize = 8;
const PER_ROUND: usize = 1_500;
const CONCURRENCY: usize = 32;
const PER_TASK: usize = 100;

/// Whether this is a quick run: `cargo test` runs the bench binary without `--bench` (as
/// criterion's test mode does, `--test` too): one round of a few requests, to show it still runs,
/// and no figure worth reading. `cargo bench` passes `--bench`. `ABLATION_PROFILE` runs are never
/// quick.
fn quick() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench")
}

type Boxed =
    tower::util::BoxCloneSyncService<Request<Full<Bytes>>, (), backstop_classify::BoxError>;

fn boxed<S, B>(svc: S) -> Boxed
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<backstop_classify::BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<backstop_classify::BoxError>,
{
    Boxed::new(
        svc.map_err(Into::into)
            .and_then(|res: Response<B>| async move {
                res.into_body().collect().await.map_err(Into::into)?;
                Ok(())
            }),
    )
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
        let connector = common::backstop_connector;
        // The client's body idle timeout is its connection idle timeout.
        let idle = backstop::Policy::default().idle_timeout;
        let plain = HyperClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        // Each step a client of its own: steps sharing a pool would share its most recently used
        // connection, warm from the step before.
        let ours =
            || HyperClient::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector());
        let replay = || {
            HyperClient::builder(TokioExecutor::new())
                .build::<_, ReplayBody<Full<Bytes>>>(connector())
        };
        let attempt = || AttemptTimeoutLayer::new(Duration::from_secs(10));
        let deadline = || {
            // As the Client builds it: the attempt timeout inside wakes the call at the deadline.
            DeadlineLayer::builder()
                .timeout(Duration::from_secs(30))
                .inner_waits(InnerWaits::BoundedByAttemptTimeout)
                .build()
                .unwrap()
        };
        let variants: Vec<(&str, Boxed)> = vec![
            ("bare hyper-util", boxed(plain)),
            ("+ connector (connect+idle)", boxed(ours())),
            (
                "+ body idle",
                boxed(
                    ServiceBuilder::new()
                        .layer(BodyIdleTimeoutLayer::new(idle))
                        .service(ours()),
                ),
            ),
            (
                "+ attempt timeout",
                boxed(
                    ServiceBuilder::new()
                        .layer(attempt())
                        .layer(BodyIdleTimeoutLayer::new(idle))
                        .service(ours()),
                ),
            ),
            (
                "+ classify",
                boxed(
                    ServiceBuilder::new()
                        .layer(ClassifyLayer::new())
                        .layer(attempt())
                        .layer(BodyIdleTimeoutLayer::new(idle))
                        .service(ours()),
                ),
            ),
            (
                "+ breaker",
                boxed(
                    ServiceBuilder::new()
                        .layer(CircuitBreakerLayer::new())
                        .layer(ClassifyLayer::new())
                        .layer(attempt())
                        .layer(BodyIdleTimeoutLayer::new(idle))
                        .service(ours()),
                ),
            ),
            (
                "+ retry",
                boxed(
                    ServiceBuilder::new()
                        .layer(RetryLayer::new())
                        .layer(CircuitBreakerLayer::new())
                        .layer(ClassifyLayer::new())
                        .layer(attempt())
                        .layer(BodyIdleTimeoutLayer::new(idle))
                        .service(replay()),
                ),
            ),
            (
                "+ deadline",
                boxed(
                    ServiceBuilder::new()
                        .layer(deadline())
                        .layer(RetryLayer::new())
                        .layer(CircuitBreakerLayer::new())
                        .layer(ClassifyLayer::new())
                        .layer(attempt())
                        .layer(BodyIdleTimeoutLayer::new(idle))
                        .service(replay()),
                ),
            ),
            ("backstop::Client", {
                let client = backstop::Client::new().unwrap();
                Boxed::new(tower::service_fn(move |req: Request<Full<Bytes>>| {
                    let client = client.clone();
                    async move {
                        let res = client.send(req).await?;
                        res.into_body().collect().await?;
                        Ok::<_, backstop_classify::BoxError>(())
                    }
                }))
            }),
        ];
        // `ABLATION_ONLY=0,8,7`: only those steps, in that order (the order in which their
        // pools are opened and their requests sent in a turn; the first is what the
        // interleaved mode's "over bare" is measured against).
        let variants = match std::env::var("ABLATION_ONLY") {
            Ok(only) => {
                let mut all: Vec<Option<(&str, Boxed)>> = variants.into_iter().map(Some).collect();
                only.split(',')
                    .map(|i| {
                        let i: usize = i.trim().parse().expect("ABLATION_ONLY: step numbers");
                        all.get_mut(i).and_then(Option::take).unwrap_or_else(|| {
                            panic!("ABLATION_ONLY: each step once, 0 to {}", all.len() - 1)
                        })
                    })
                    .collect()
            }
            Err(_) => variants,
        };
        // `ABLATION_PROFILE=<step>` (0 = bare): only that stack, 32 tasks × 1 000 requests (or,
        // with `ABLATION_MODE=sequential`, 20 000 one after another), for a profiler
        // (callgrind's instruction counts are steadier than this machine's clock).
        if let Some(step) = std::env::var("ABLATION_PROFILE")
            .ok()
            .and_then(|step| step.parse::<usize>().ok())
        {
            let (name, svc) = &variants[step.min(variants.len() - 1)];
            open_connections(svc, &url).await;
            // With `ABLATION_MODE=sequential`: 20 000 requests one after another instead.
            let latencies = if std::env::var("ABLATION_MODE").as_deref() == Ok("sequential") {
                let mut latencies = Vec::with_capacity(20_000);
                for _ in 0..20_000 {
                    let req = Request::get(&url).body(Full::new(Bytes::new())).unwrap();
                    let t = Instant::now();
                    svc.clone().oneshot(req).await.unwrap();
                    latencies.push(t.elapsed());
                }
                latencies
            } else {
                concurrent(svc, &url, 1_000).await
            };
            println!("profiled {} requests through {name}", latencies.len());
            return;
        }
        // `ABLATION_MODE=interleaved`: sequential requests interleaved per request (one of each
        // stack in turn, the order rotating), so the shared machine's drift falls on every step
        // alike: each step's p50 and p99 over bare, in one run.
        // A quick run goes through it too (its table printed before the other), so it cannot rot.
        // Each pool is opened once, before either mode: `open_connections` needs an empty pool.
        for (_, svc) in &variants {
            open_connections(svc, &url).await;
        }
        let interleaved_only = std::env::var("ABLATION_MODE").as_deref() == Ok("interleaved");
        if interleaved_only || quick() {
            let turns = if quick() { 5 } else { INTERLEAVED_TURNS };
            let latencies = interleaved(&variants, &url, turns).await;
            print_interleaved(&variants, &latencies);
            if interleaved_only {
                return;
            }
        }
        // (rounds, sequential requests per round, requests per task, warm-up requests)
        let (rounds, per_round, per_task, warm_up) = if quick() {
            (1, 10, 2, 5)
        } else {
            (ROUNDS, PER_ROUND, PER_TASK, 300)
        };
        for (_, svc) in &variants {
            for _ in 0..warm_up {
                svc.clone()
                    .oneshot(Request::get(&url).body(Full::new(Bytes::new())).unwrap())
                    .await
                    .unwrap();
            }
        }
        // Sequential: latency per request.
        let mut totals = vec![Duration::ZERO; variants.len()];
        // 32 tasks at once: CPU time per request of the whole process (client, server and the
        // kernel work done on their threads), which bounds throughput on a busy machine.
        let mut cpu = vec![Duration::ZERO; variants.len()];
        // ... and the wall time and every request's latency, for throughput and p99.
        let mut walls = vec![Duration::ZERO; variants.len()];
        let mut latencies: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
        for _ in 0..rounds {
            for (i, (_, svc)) in variants.iter().enumerate() {
                let started = Instant::now();
                for _ in 0..per_round {
                    let req = Request::get(&url).body(Full::new(Bytes::new())).unwrap();
                    svc.clone().oneshot(req).await.unwrap();
                }
                totals[i] += started.elapsed();
                let before = process_cpu();
                let started = Instant::now();
                latencies[i].extend(concurrent(svc, &url, per_task).await);
                walls[i] += started.elapsed();
                cpu[i] += process_cpu().saturating_sub(before);
            }
        }
        let n = (rounds * per_round) as f64;
        let m = (rounds * CONCURRENCY * per_task) as f64;
        let base = totals[0].as_secs_f64() / n;
        let cpu_base = cpu[0].as_secs_f64() / m;
        let p99 = |latencies: &mut Vec<Duration>| {
            latencies.sort_unstable();
            latencies[(latencies.len() - 1) * 99 / 100].as_secs_f64() * 1e6
        };
        let p99_base = p99(&mut latencies[0]);
        println!(
            "{:<28} {:>10} {:>12} {:>16} {:>12} {:>13} {:>12}",
            "stack",
            "µs/req",
            "over bare",
            "CPU µs/req (32)",
            "over bare",
            "req/s (32)",
            "p99 (32)"
        );
        for (i, (name, _)) in variants.iter().enumerate() {
            let per = totals[i].as_secs_f64() / n;
            let cpu_per = cpu[i].as_secs_f64() / m;
            let rps = m / walls[i].as_secs_f64();
            println!(
                "{:<28} {:>10.2} {:>+11.2}µs {:>16.2} {:>+11.2}µs {:>7.0} {:>4.0}% {:>+9.1}µs",
                name,
                per * 1e6,
                (per - base) * 1e6,
                cpu_per * 1e6,
                (cpu_per - cpu_base) * 1e6,
                rps,
                rps / (m / walls[0].as_secs_f64()) * 100.0,
                p99(&mut latencies[i]) - p99_base
            );
        }
    });
}

/// Turns of the interleaved mode: each stack sends this many requests.
const INTERLEAVED_TURNS: usize = 30_000;

/// `turns` turns of one sequential request through each stack, the first stack of a turn
/// rotating so that none always follows the same one; every request's latency, per stack.
async fn interleaved(variants: &[(&str, Boxed)], url: &str, turns: usize) -> Vec<Vec<Duration>> {
    let mut latencies = vec![Vec::with_capacity(turns); variants.len()];
    for turn in 0..turns {
        for k in 0..variants.len() {
            let i = (turn + k) % variants.len();
            let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
            let t = Instant::now();
            variants[i].1.clone().oneshot(req).await.unwrap();
            latencies[i].push(t.elapsed());
        }
    }
    latencies
}

/// Each stack's p50 and p99 of the interleaved mode, and what they add over the first (bare).
fn print_interleaved(variants: &[(&str, Boxed)], latencies: &[Vec<Duration>]) {
    let at = |sorted: &[Duration], p: f64| percentile(sorted, p).as_secs_f64() * 1e6;
    let sorted: Vec<Vec<Duration>> = latencies
        .iter()
        .map(|own| {
            let mut own = own.clone();
            own.sort_unstable();
            own
        })
        .collect();
    let (p50_bare, p99_bare) = (at(&sorted[0], 0.5), at(&sorted[0], 0.99));
    println!("| stack | p50 µs | over bare | p99 µs | over bare |");
    println!("|---|---:|---:|---:|---:|");
    for ((name, _), own) in variants.iter().zip(&sorted) {
        let (p50, p99) = (at(own, 0.5), at(own, 0.99));
        println!(
            "| {name} | {p50:.1} | {:+.2} µs | {p99:.1} | {:+.2} µs |",
            p50 - p50_bare,
            p99 - p99_bare
        );
    }
}

/// Opens [`common::POOLED_CONNECTIONS`] connections in the pool of `svc`'s client.
async fn open_connections(svc: &Boxed, url: &str) {
    common::open_connections(|| {
        let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
        let call = svc.clone().oneshot(req);
        async move { call.await.unwrap() }
    })
    .await;
}

/// `CONCURRENCY` tasks sending `per_task` GETs each through `svc`; every request's latency.
async fn concurrent(svc: &Boxed, url: &str, per_task: usize) -> Vec<Duration> {
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let svc = svc.clone();
            let url = url.to_owned();
            tokio::spawn(async move {
                let mut own = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    let t = Instant::now();
                    let req = Request::get(&url).body(Full::new(Bytes::new())).unwrap();
                    svc.clone().oneshot(req).await.unwrap();
                    own.push(t.elapsed());
                }
                own
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(CONCURRENCY * per_task);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    latencies
}

/// CPU time used so far by all of this process's threads (Linux: the scheduler's per-thread
/// run time, in nanoseconds).
fn process_cpu() -> Duration {
    let mut total = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat"))
                && let Some(ns) = stat
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
            {
                total += ns;
            }
        }
    }
    Duration::from_nanos(total)
}
