//! The cases of `overhead.rs` measured round-robin: every round times each case once, in a
//! shuffled order, so load from other processes hits all cases alike; prints the median ns/call
//! and the median over the rounds of each case's difference to the bare baseline of the same
//! request shape in the same round.
//!
//! `cargo bench -p backstop-deadline --bench interleaved -- [rounds] [calls-per-round]`
//!
//! `BENCH_CASES="tower Timeout|DeadlineLayer, no propagation"` keeps only those cases (and the
//! baselines).
//!
//! With a case name it runs only that case, once, for counting instructions:
//! `valgrind --tool=callgrind target/release/deps/interleaved-* 1 100000 "tower Timeout"`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

mod common;

/// Whether this is a quick run: `cargo test` runs the bench binary without `--bench` (as
/// criterion's test mode does, `--test` too): a few calls per case, to show it still runs, and
/// no figure worth reading. `cargo bench` passes `--bench`.
fn quick() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench")
}

fn main() {
    // `cargo bench` passes `--bench`; only bare numbers are ours.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut numbers = args.iter().filter_map(|a| a.parse::<u64>().ok());
    // A quick run (see [`quick`]) unless the numbers are given.
    let (rounds, calls) = if quick() { (3, 100) } else { (41, 20_000) };
    let rounds = numbers.next().map_or(rounds, |n| n as usize);
    let calls = numbers.next().unwrap_or(calls);
    // A case name runs that case alone (e.g. under `valgrind --tool=callgrind` to count
    // instructions per call, which no other process can disturb).
    let only = args
        .iter()
        .find(|a| !a.starts_with("--") && a.parse::<u64>().is_err());
    let mut cases = common::cases();
    if let Some(only) = only {
        cases.retain(|c| c.name == only);
        for case in &mut cases {
            (case.run)(calls);
        }
        return;
    }
    // `BENCH_CASES="a|b"` keeps only the named cases (the bare baselines stay).
    if let Ok(keep) = std::env::var("BENCH_CASES") {
        let keep: Vec<&str> = keep.split('|').collect();
        cases.retain(|c| c.name.starts_with("bare") || keep.contains(&c.name));
    }
    for case in &mut cases {
        (case.run)(calls / 4); // warm-up
    }
    let baseline_of = |name: &str| -> usize {
        let bare = if name.starts_with("server") || name.contains("budget") {
            "bare no-op, budget header"
        } else if name.ends_with(", body") {
            "bare no-op, body"
        } else {
            "bare no-op"
        };
        cases.iter().position(|c| c.name == bare).unwrap_or(0)
    };
    let bases: Vec<usize> = cases.iter().map(|c| baseline_of(c.name)).collect();
    // Every round runs the cases in a new order (a fixed-seed shuffle), so no case always
    // follows the same neighbour; each case is compared with its baseline of the same round.
    let mut order: Vec<usize> = (0..cases.len()).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut samples = vec![Vec::with_capacity(rounds); cases.len()];
    for _ in 0..rounds {
        for i in (1..order.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        let mut round = vec![0.0; cases.len()];
        for &i in &order {
            let took = (cases[i].run)(calls);
            round[i] = took.as_nanos() as f64 / calls as f64;
        }
        for (i, samples) in samples.iter_mut().enumerate() {
            samples.push((round[i], round[i] - round[bases[i]]));
        }
    }
    // (first quartile, median, third quartile)
    let quartiles = |mut v: Vec<f64>| -> (f64, f64, f64) {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 4], v[v.len() / 2], v[v.len() * 3 / 4])
    };
    println!(
        "{rounds} rounds x {calls} calls, ns/call; \"over bare\" is the median of the per-round differences"
    );
    println!("| case | median | over bare | middle half of the differences |");
    println!("|---|---:|---:|---:|");
    for (case, samples) in cases.iter().zip(&samples) {
        let (_, own, _) = quartiles(samples.iter().map(|s| s.0).collect());
        let (q1, diff, q3) = quartiles(samples.iter().map(|s| s.1).collect());
        println!(
            "| {} | {:.0} | {:+.0} | {:+.0} .. {:+.0} |",
            case.name, own, diff, q1, q3
        );
    }
}
