//! Reading the benchmarks' output: the stack bench's text table, the tab-separated files the
//! script writes, the simulation's markdown.

/// One row of the stack bench's table: a client in one mode.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StackRow {
    pub(crate) mode: String,
    pub(crate) client: String,
    pub(crate) rps: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p99_added: f64,
}

/// A client's figure against bare's in the same round — its throughput over bare's (percent),
/// or its p99 less bare's (µs) — as the median and middle half of the rounds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ratio {
    pub(crate) mode: String,
    pub(crate) client: String,
    pub(crate) median: f64,
    pub(crate) low: f64,
    pub(crate) high: f64,
}

/// One run of the stack bench.
#[derive(Debug, Default)]
pub(crate) struct StackRun {
    pub(crate) rows: Vec<StackRow>,
    pub(crate) ratios: Vec<Ratio>,
    /// The p99 added over bare's p99 of the same round (µs), per round (absent in the output
    /// of benches older than this figure).
    pub(crate) p99_added: Vec<Ratio>,
}

impl StackRun {
    pub(crate) fn row(&self, mode: &str, client: &str) -> Option<&StackRow> {
        self.rows
            .iter()
            .find(|r| r.mode == mode && r.client == client)
    }

    pub(crate) fn ratio(&self, mode: &str, client: &str) -> Option<&Ratio> {
        self.ratios
            .iter()
            .find(|r| r.mode == mode && r.client == client)
    }

    pub(crate) fn p99_added(&self, mode: &str, client: &str) -> Option<&Ratio> {
        self.p99_added
            .iter()
            .find(|r| r.mode == mode && r.client == client)
    }
}

const MODES: [&str; 2] = ["sequential", "32 tasks"];

fn number(s: &str) -> Result<f64, String> {
    s.trim_end_matches('%')
        .parse::<f64>()
        .map_err(|_| format!("not a number: {s:?}"))
}

/// Splits a line of the stack bench that starts with a mode name into the mode and the rest.
fn mode_of(line: &str) -> Option<(&'static str, &str)> {
    MODES
        .iter()
        .find_map(|mode| line.strip_prefix(mode).map(|rest| (*mode, rest)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Table,
    Ratios,
    P99Added,
}

/// The stack bench's output (`cargo bench -p backstop --bench stack`): the table of every
/// client per mode, then the per-round ratios.
pub(crate) fn stack_run(text: &str) -> Result<StackRun, String> {
    let mut run = StackRun::default();
    // Which part of the output the line is in: the table, then two per-round sections.
    let mut section = Section::Table;
    for line in text.lines() {
        if line.starts_with("throughput over bare's in the same round") {
            section = Section::Ratios;
            continue;
        }
        if line.starts_with("p99 added over bare's in the same round") {
            section = Section::P99Added;
            continue;
        }
        let Some((mode, rest)) = mode_of(line) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if section != Section::Table {
            // `<client> <median> <unit> [<low> .. <high>]`, the unit `%` or `µs`
            let unit = if section == Section::Ratios {
                "%"
            } else {
                "µs"
            };
            let [client, median, got_unit, low, "..", high] = fields[..] else {
                return Err(format!("unexpected per-round line {line:?}"));
            };
            if got_unit != unit {
                return Err(format!("expected {unit} in {line:?}"));
            }
            let figure = Ratio {
                mode: mode.to_owned(),
                client: client.to_owned(),
                median: number(median)?,
                low: number(low.trim_start_matches('['))?,
                high: number(high.trim_end_matches(']'))?,
            };
            if section == Section::Ratios {
                run.ratios.push(figure);
            } else {
                run.p99_added.push(figure);
            }
        } else {
            // `<client> <req/s> <p50> <p99> <p99.9> <vs bare>%  p99 <added> µs`
            let [client, rps, p50, p99, _p999, _vs, "p99", added, _unit] = fields[..] else {
                return Err(format!("unexpected table line {line:?}"));
            };
            run.rows.push(StackRow {
                mode: mode.to_owned(),
                client: client.to_owned(),
                rps: number(rps)?,
                p50: number(p50)?,
                p99: number(p99)?,
                p99_added: number(added)?,
            });
        }
    }
    if run.rows.is_empty() || run.ratios.is_empty() {
        return Err("no table in the stack bench's output".into());
    }
    Ok(run)
}

/// Instructions counted by callgrind for one client's run of the stack bench.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Instructions {
    pub(crate) client: String,
    pub(crate) instructions: f64,
    pub(crate) requests: f64,
    /// Of those, what hyper-util's pool spent removing a host's emptied idle list (0 when the
    /// script did not measure it).
    pub(crate) pool_removal: f64,
}

impl Instructions {
    pub(crate) fn per_request(&self) -> f64 {
        self.instructions / self.requests
    }

    /// Per request, without the pool's list removal: which runs pay it is timing, whatever the
    /// client, so this is the figure that compares clients like for like.
    pub(crate) fn per_request_without_pool_removal(&self) -> f64 {
        (self.instructions - self.pool_removal) / self.requests
    }
}

fn tsv(text: &str, columns: usize) -> Result<Vec<Vec<&str>>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.len() == columns {
                Ok(fields)
            } else {
                Err(format!("expected {columns} tab-separated fields: {line:?}"))
            }
        })
        .collect()
}

/// `client`, `run`, `instructions`, `requests`, `pool_removal`.
pub(crate) fn instructions(text: &str) -> Result<Vec<Instructions>, String> {
    tsv(text, 5)?
        .into_iter()
        .map(|f| {
            Ok(Instructions {
                client: f[0].to_owned(),
                instructions: number(f[2])?,
                requests: number(f[3])?,
                pool_removal: number(f[4])?,
            })
        })
        .collect()
}

/// One step of the ablation bench under callgrind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AblationStep {
    pub(crate) name: String,
    pub(crate) instructions: f64,
    pub(crate) requests: f64,
}

impl AblationStep {
    pub(crate) fn per_request(&self) -> f64 {
        self.instructions / self.requests
    }
}

/// `step`, `name`, `instructions`, `requests`, in step order.
pub(crate) fn ablation(text: &str) -> Result<Vec<AblationStep>, String> {
    let mut steps: Vec<(f64, AblationStep)> = tsv(text, 4)?
        .into_iter()
        .map(|f| {
            Ok((
                number(f[0])?,
                AblationStep {
                    name: f[1].to_owned(),
                    instructions: number(f[2])?,
                    requests: number(f[3])?,
                },
            ))
        })
        .collect::<Result<_, String>>()?;
    steps.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(steps.into_iter().map(|(_, s)| s).collect())
}

/// The markdown table (and the lines around it up to the next heading) under `heading` in the
/// simulation's output, the heading's own text as a sentence first.
pub(crate) fn section_table(text: &str, heading: &str) -> Result<String, String> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with(heading));
    let title = lines
        .next()
        .ok_or_else(|| format!("no {heading:?} section"))?;
    let mut out = format!(
        "{}.\n\n",
        title.trim_start_matches('#').trim().trim_end_matches('.')
    );
    for line in lines.take_while(|l| !l.starts_with("## ")) {
        if line.starts_with('|') {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

/// One row of the contention simulation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Contention {
    pub(crate) clients: u32,
    pub(crate) jitter: String,
    pub(crate) calls: f64,
    pub(crate) seconds: f64,
}

/// The contention table of the simulation's output.
pub(crate) fn contention(text: &str) -> Result<Vec<Contention>, String> {
    let mut rows = Vec::new();
    let section = text
        .lines()
        .skip_while(|l| !l.starts_with("## Contention"))
        .skip(1)
        .take_while(|l| !l.starts_with("## "));
    for line in section {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [clients, jitter, calls, _per_client, time] = cells[..] else {
            continue;
        };
        let Ok(clients) = clients.parse::<u32>() else {
            continue;
        };
        rows.push(Contention {
            clients,
            jitter: jitter.to_owned(),
            calls: number(calls)?,
            seconds: number(time.trim_end_matches(" s"))?,
        });
    }
    Ok(rows)
}

/// One second of one outage run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutageSecond {
    pub(crate) capacity: u32,
    pub(crate) guard: String,
    pub(crate) second: u32,
    pub(crate) offered: f64,
    pub(crate) sent: f64,
}

/// The simulation's `--series` file.
pub(crate) fn outage_series(text: &str) -> Result<Vec<OutageSecond>, String> {
    tsv(text, 7)?
        .into_iter()
        .filter(|f| f[0] != "capacity")
        .map(|f| {
            Ok(OutageSecond {
                capacity: f[0].parse().map_err(|_| format!("capacity {:?}", f[0]))?,
                guard: f[1].to_owned(),
                second: f[2].parse().map_err(|_| format!("second {:?}", f[2]))?,
                offered: number(f[3])?,
                sent: number(f[5])?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const STACK: &str = "\
mode        client      requests/s    p50 µs    p99 µs  p99.9 µs    vs bare
sequential  bare             20951      45.1      80.2     120.0     100.0%  p99 +0.0 µs
sequential  backstop         21260      44.0      87.2     130.0     101.5%  p99 +7.0 µs
32 tasks    bare             75985     410.0     700.0    1000.0     100.0%  p99 +0.0 µs
32 tasks    backstop         63860     480.0     816.0    1300.0      84.0%  p99 +116.0 µs

throughput over bare's in the same round, median [middle half]:
sequential  backstop  103.7 % [101.0 .. 105.2]
32 tasks    backstop  83.5 % [82.0 .. 85.1]

p99 added over bare's in the same round, median [middle half]:
sequential  backstop  +2.4 µs [-1.5 .. +6.0]
32 tasks    backstop  +90.0 µs [+60.5 .. +130.0]
";

    #[test]
    fn the_stack_bench_output_is_read_row_by_row() {
        let run = stack_run(STACK).unwrap();
        assert_eq!(run.rows.len(), 4);
        assert_eq!(
            run.row("32 tasks", "backstop"),
            Some(&StackRow {
                mode: "32 tasks".into(),
                client: "backstop".into(),
                rps: 63860.0,
                p50: 480.0,
                p99: 816.0,
                p99_added: 116.0,
            })
        );
        assert_eq!(
            run.ratio("sequential", "backstop"),
            Some(&Ratio {
                mode: "sequential".into(),
                client: "backstop".into(),
                median: 103.7,
                low: 101.0,
                high: 105.2,
            })
        );
        assert_eq!(
            run.p99_added("sequential", "backstop"),
            Some(&Ratio {
                mode: "sequential".into(),
                client: "backstop".into(),
                median: 2.4,
                low: -1.5,
                high: 6.0,
            })
        );
        assert_eq!(run.p99_added.len(), 2);
    }

    #[test]
    fn a_per_round_line_in_the_wrong_unit_is_an_error() {
        let wrong = STACK.replace("+2.4 µs", "+2.4 %");
        assert!(stack_run(&wrong).unwrap_err().starts_with("expected µs"));
    }

    #[test]
    fn output_without_a_table_is_an_error() {
        assert_eq!(
            stack_run("profiled 96000 requests through bare").unwrap_err(),
            "no table in the stack bench's output"
        );
    }

    const SIMULATE: &str = "\
seed 1

## Contention: N clients, one write each

| clients | jitter | total calls | calls/client | time to finish |
|---:|---|---:|---:|---:|
| 10 | none | 51 | 5.1 | 1.64 s |
| 10 | full | 45 | 4.5 | 0.38 s |

## Outage: 100 requests/s offered

| capacity | guard | sent |
|---:|---|---:|
| 150/s | none | 14939 |
";

    #[test]
    fn the_simulation_tables_are_found_under_their_headings() {
        assert_eq!(
            contention(SIMULATE).unwrap(),
            vec![
                Contention {
                    clients: 10,
                    jitter: "none".into(),
                    calls: 51.0,
                    seconds: 1.64
                },
                Contention {
                    clients: 10,
                    jitter: "full".into(),
                    calls: 45.0,
                    seconds: 0.38
                },
            ]
        );
        assert_eq!(
            section_table(SIMULATE, "## Outage").unwrap(),
            "Outage: 100 requests/s offered.\n\n\
             | capacity | guard | sent |\n|---:|---|---:|\n| 150/s | none | 14939 |\n"
        );
    }
}
