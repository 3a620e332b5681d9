//! `bench-report`: the renderer behind `scripts/bench-all`. The script runs the benchmarks and
//! leaves their output in one directory; this reads it, writes the tables between marker
//! comments in `BENCHMARKS.md` (`<!-- bench-all:NAME begin -->` … `<!-- bench-all:NAME end -->`)
//! and draws the SVG charts.
//!
//! ```text
//! bench-report --dir target/bench-all --benchmarks BENCHMARKS.md --charts docs/charts
//! ```
//!
//! What it reads from `--dir` (each file is optional: a table whose input is missing keeps its
//! previous content, and the run says so):
//!
//! - `stack-<run>.txt`: the output of `cargo bench -p backstop --bench stack`, one per run;
//! - `stack-instructions.tsv`: `client`, `run`, `instructions`, `requests`, `pool_removal`
//!   (callgrind on `STACK_PROFILE=<client>`; the last, the inclusive cost of hyper-util's
//!   `HashMap::remove` under `Checkout::poll`);
//! - `ablation.tsv`: `step`, `name`, `instructions`, `requests` (callgrind on
//!   `ABLATION_PROFILE=<step>`);
//! - `simulate.txt` and `outage-series.tsv`: backstop-retry's `simulate` example and its
//!   `--series` file;
//! - `NAME.md`: any other table, written by the script, put between the `NAME` markers as it is.

mod chart;
mod parse;
mod splice;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use parse::{AblationStep, Instructions, StackRun};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench-report: {err}");
            ExitCode::FAILURE
        }
    }
}

struct Options {
    dir: PathBuf,
    benchmarks: PathBuf,
    charts: PathBuf,
}

fn options() -> Result<Options, String> {
    let mut dir = None;
    let mut benchmarks = None;
    let mut charts = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--dir" => dir = Some(PathBuf::from(value)),
            "--benchmarks" => benchmarks = Some(PathBuf::from(value)),
            "--charts" => charts = Some(PathBuf::from(value)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Options {
        dir: dir.ok_or("--dir is required")?,
        benchmarks: benchmarks.ok_or("--benchmarks is required")?,
        charts: charts.ok_or("--charts is required")?,
    })
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn run() -> Result<(), String> {
    let options = options()?;
    let dir = &options.dir;
    std::fs::create_dir_all(&options.charts)
        .map_err(|e| format!("{}: {e}", options.charts.display()))?;
    // Fragments by marker name.
    let mut tables: BTreeMap<String, String> = BTreeMap::new();
    let mut charts = Vec::new();

    // Files the script wrote as finished tables.
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in &entries {
        if path.extension().is_some_and(|ext| ext == "md")
            && let (Some(name), Some(text)) = (path.file_stem(), read(path))
        {
            tables.insert(name.to_string_lossy().into_owned(), text);
        }
    }

    // The stack bench, one file per run.
    let mut runs: Vec<StackRun> = Vec::new();
    for path in &entries {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(name) = name
            && name.starts_with("stack-")
            && name.ends_with(".txt")
            && let Some(text) = read(path)
        {
            runs.push(parse::stack_run(&text).map_err(|e| format!("{name}: {e}"))?);
        }
    }
    if !runs.is_empty() {
        tables.insert("stack-throughput".into(), stack_table(&runs));
        let path = options.charts.join("stack-throughput.svg");
        chart::stack_throughput(&path, &runs)?;
        charts.push(path);
    }

    if let Some(text) = read(&dir.join("stack-instructions.tsv")) {
        let rows = parse::instructions(&text)?;
        tables.insert("stack-instructions".into(), instructions_table(&rows));
    }

    if let Some(text) = read(&dir.join("ablation.tsv")) {
        let steps = parse::ablation(&text)?;
        if !steps.is_empty() {
            tables.insert("ablation".into(), ablation_table(&steps));
            let path = options.charts.join("ablation.svg");
            chart::ablation(&path, &steps)?;
            charts.push(path);
        }
    }

    if let Some(text) = read(&dir.join("simulate.txt")) {
        let contention = parse::contention(&text)?;
        tables.insert(
            "contention".into(),
            parse::section_table(&text, "## Contention")?,
        );
        let path = options.charts.join("contention.svg");
        chart::contention(&path, &contention)?;
        charts.push(path);
        tables.insert("outage".into(), parse::section_table(&text, "## Outage")?);
    }
    if let Some(text) = read(&dir.join("outage-series.tsv")) {
        let series = parse::outage_series(&text)?;
        let path = options.charts.join("outage.svg");
        chart::outage(&path, &series, 150)?;
        charts.push(path);
    }

    let path = &options.benchmarks;
    let doc = read(path).ok_or_else(|| format!("cannot read {}", path.display()))?;
    let (doc, missing) = splice::all(&doc, &tables)?;
    std::fs::write(path, doc).map_err(|e| format!("{}: {e}", path.display()))?;
    for name in tables.keys() {
        if !missing.contains(name) {
            println!("table {name}: written");
        }
    }
    for name in &missing {
        println!("table {name}: no marker in {}, not written", path.display());
    }
    for chart in charts {
        println!("chart {}", chart.display());
    }
    Ok(())
}

/// The client names of the stack bench, in its order, with the names the tables use.
const CLIENTS: [(&str, &str); 4] = [
    ("bare", "bare hyper-util"),
    ("timeout", "tower `Timeout`"),
    ("peers", "peers' stack"),
    ("backstop", "backstop"),
];

fn stack_table(runs: &[StackRun]) -> String {
    let mut out = String::new();
    out.push_str(
        "| mode | run | bare req/s | tower `Timeout` | peers' stack | backstop | p99 added: `Timeout` / peers / backstop | p99 added per round, median: `Timeout` / peers / backstop |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for mode in ["32 tasks", "sequential"] {
        for (i, run) in runs.iter().enumerate() {
            let bare = run.row(mode, "bare");
            let _ = write!(
                out,
                "| {mode} | {} | {} |",
                i + 1,
                bare.map_or("—".into(), |r| format!("{:.0}", r.rps))
            );
            for client in ["timeout", "peers", "backstop"] {
                let cell = run.ratio(mode, client).map_or("—".into(), |r| {
                    format!("{:.1} % [{:.1} .. {:.1}]", r.median, r.low, r.high)
                });
                let _ = write!(out, " {cell} |");
            }
            // One figure per client, "—" where the run has none.
            let each_client = |figure: &dyn Fn(&str) -> Option<f64>| {
                ["timeout", "peers", "backstop"]
                    .iter()
                    .map(|c| figure(c).map_or("—".into(), |v| format!("{v:+.1}")))
                    .collect::<Vec<String>>()
                    .join(" / ")
            };
            let added = each_client(&|c| run.row(mode, c).map(|r| r.p99_added));
            let per_round = each_client(&|c| run.p99_added(mode, c).map(|r| r.median));
            let _ = writeln!(out, " {added} µs | {per_round} µs |");
        }
    }
    out.push_str(
        "\nEach client's throughput over bare's in the same round: median [middle half] of the rounds. \
         p99 added: the client's p99 over all its requests less bare's; per round: the median over \
         the rounds of its p99 in a round less bare's in that round.\n",
    );
    out
}

fn instructions_table(rows: &[Instructions]) -> String {
    let mut out = String::from(
        "| client | instructions/request, each run (without the pool's list removal) | over bare, means (without) |\n",
    );
    out.push_str("|---|---:|---:|\n");
    let mean = |client: &str, per: fn(&Instructions) -> f64| -> Option<f64> {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.client == client)
            .map(per)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let raw = Instructions::per_request as fn(&Instructions) -> f64;
    let without = Instructions::per_request_without_pool_removal as fn(&Instructions) -> f64;
    for (client, label) in CLIENTS {
        let runs: Vec<String> = rows
            .iter()
            .filter(|r| r.client == client)
            .map(|r| format!("{:.1} k ({:.1} k)", raw(r) / 1000.0, without(r) / 1000.0))
            .collect();
        if runs.is_empty() {
            continue;
        }
        let over = |per| match (mean(client, per), mean("bare", per)) {
            (Some(m), Some(b)) => format!("{:+.1} k", (m - b) / 1000.0),
            _ => "—".into(),
        };
        let over = if client == "bare" {
            "—".to_owned()
        } else {
            format!("{} ({})", over(raw), over(without))
        };
        let _ = writeln!(out, "| {label} | {} | {over} |", runs.join(" / "));
    }
    out
}

fn ablation_table(steps: &[AblationStep]) -> String {
    let mut out = String::from("| step | instructions/request | over bare | step alone |\n");
    out.push_str("|---|---:|---:|---:|\n");
    let bare = steps.first().map_or(0.0, AblationStep::per_request);
    let mut previous = bare;
    for (i, step) in steps.iter().enumerate() {
        let per = step.per_request();
        // The last step (the client itself) is not one layer more than the one before.
        let alone = if i == 0 || step.name.starts_with("backstop::Client") {
            "—".to_owned()
        } else {
            format!("{:+.2} k", (per - previous) / 1000.0)
        };
        let _ = writeln!(
            out,
            "| {} | {:.2} k | {:+.2} k | {alone} |",
            step.name,
            per / 1000.0,
            (per - bare) / 1000.0
        );
        previous = per;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use parse::OutageSecond;

    #[test]
    fn the_ablation_table_gives_each_step_over_bare_and_alone() {
        let steps = parse::ablation(
            "0\tbare hyper-util\t3400000\t100\n1\t+ connector\t3500000\t100\n2\tbackstop::Client\t4000000\t100\n",
        )
        .unwrap();
        let table = ablation_table(&steps);
        assert_eq!(
            table,
            "| step | instructions/request | over bare | step alone |\n\
             |---|---:|---:|---:|\n\
             | bare hyper-util | 34.00 k | +0.00 k | — |\n\
             | + connector | 35.00 k | +1.00 k | +1.00 k |\n\
             | backstop::Client | 40.00 k | +6.00 k | — |\n"
        );
    }

    #[test]
    fn the_instructions_table_averages_runs_against_bare() {
        let rows = parse::instructions(
            "bare\t1\t3300000\t100\t0\nbare\t2\t3500000\t100\t150000\n\
             backstop\t1\t4100000\t100\t160000\n",
        )
        .unwrap();
        assert_eq!(
            instructions_table(&rows),
            "| client | instructions/request, each run (without the pool's list removal) | over bare, means (without) |\n\
             |---|---:|---:|\n\
             | bare hyper-util | 33.0 k (33.0 k) / 35.0 k (33.5 k) | — |\n\
             | backstop | 41.0 k (39.4 k) | +7.0 k (+6.2 k) |\n"
        );
    }

    #[test]
    fn unknown_outage_rows_do_not_panic_the_contention_parser() {
        assert!(parse::contention("nothing here").unwrap().is_empty());
    }

    #[test]
    fn outage_seconds_are_grouped_by_capacity_and_guard() {
        let series: Vec<OutageSecond> = parse::outage_series(
            "capacity\tguard\tsecond\toffered\tattempts\tsent\tserved\n150\tnone\t0\t100\t443\t443\t0\n",
        )
        .unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(
            (series[0].capacity, series[0].guard.as_str(), series[0].sent),
            (150, "none", 443.0)
        );
    }
}
