//! The cases of `overhead.rs` measured round-robin: every round times each case once, so load
//! from other processes hits all cases alike; prints the median ns/call over the rounds and the
//! difference to the bare baseline of the same request shape.
//!
//! `cargo bench -p backstop-deadline --bench interleaved -- [rounds] [calls-per-round]`
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

fn main() {
    // `cargo bench` passes `--bench`; only bare numbers are ours.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut numbers = args.iter().filter_map(|a| a.parse::<u64>().ok());
    let rounds = numbers.next().unwrap_or(41) as usize;
    let calls = numbers.next().unwrap_or(20_000);
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
    for case in &mut cases {
        (case.run)(calls / 4); // warm-up
    }
    let mut samples = vec![Vec::with_capacity(rounds); cases.len()];
    for _ in 0..rounds {
        for (case, samples) in cases.iter_mut().zip(&mut samples) {
            let took = (case.run)(calls);
            samples.push(took.as_nanos() as f64 / calls as f64);
        }
    }
    for s in &mut samples {
        s.sort_by(f64::total_cmp);
    }
    let medians: Vec<f64> = samples.iter().map(|s| s[s.len() / 2]).collect();
    // The fastest round is the one least disturbed by other processes.
    let mins: Vec<f64> = samples.iter().map(|s| s[0]).collect();
    let baseline = |name: &str, of: &[f64]| -> f64 {
        let bare = if name.starts_with("server") || name.contains("budget") {
            "bare no-op, budget header"
        } else if name.ends_with(", body") {
            "bare no-op, body"
        } else {
            "bare no-op"
        };
        cases
            .iter()
            .position(|c| c.name == bare)
            .map_or(0.0, |i| of[i])
    };
    println!("{rounds} rounds x {calls} calls, ns/call");
    println!("| case | median | over bare | fastest round | over bare |");
    println!("|---|---:|---:|---:|---:|");
    for (i, case) in cases.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:+.0} | {:.0} | {:+.0} |",
            case.name,
            medians[i],
            medians[i] - baseline(case.name, &medians),
            mins[i],
            mins[i] - baseline(case.name, &mins),
        );
    }
}
