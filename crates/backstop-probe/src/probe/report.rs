//! The probe's report: its serialised shape (`schema/probe-report.v1.json`), the statistics over
//! `--count` runs, and the assembly of one run's report with the probe's own diagnosis.
//! Separate from the client setup and the runs, because the report is the probe's contract with
//! scripts reading its JSON.

use std::net::SocketAddr;
use std::time::Duration;

use backstop::{Error, Kind, Phase};
use serde::Serialize;

use super::Run;
use super::connect::connect_each;
use super::setup::{Resolved, Setup};
use crate::HttpArgs;
use crate::diagnose::{self, Diagnosis, Target, exit};
use crate::tls::{self, TlsDetails};

/// The version of the JSON report; bumped on any incompatible change of
/// `schema/probe-report.v1.json`.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// How the host became addresses.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ResolveReport {
    pub(crate) host: String,
    /// `"ip-literal"` (nothing to resolve), `"--resolve"` or `"dns"`.
    pub(crate) source: &'static str,
    pub(crate) addresses: Vec<String>,
    /// The client's own timing of the lookup (`None` for an IP literal).
    pub(crate) ms: Option<f64>,
}

/// One address tried by the probe after the client's connect failed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AddrAttempt {
    pub(crate) address: String,
    pub(crate) ms: f64,
    /// `"connected"`, or what failed.
    pub(crate) result: String,
}

/// The TCP connect.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConnectReport {
    /// The client's timing of the TCP connect, every racing address included.
    pub(crate) ms: Option<f64>,
    /// Per address, tried one by one by the probe — only after a failed connect.
    pub(crate) attempts: Vec<AddrAttempt>,
}

/// The TLS phase.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TlsReport {
    /// The client's timing of the handshake.
    pub(crate) ms: Option<f64>,
    /// From the probe's diagnostic handshake.
    pub(crate) details: Option<TlsDetails>,
    /// Why the diagnostic handshake could not be made.
    pub(crate) inspect_error: Option<String>,
}

/// The headers a person looks at first.
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct Headers {
    pub(crate) server: Option<String>,
    pub(crate) retry_after: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) content_length: Option<String>,
}

/// The HTTP exchange.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HttpReport {
    /// `"HTTP/1.1"`, `"HTTP/2"`.
    pub(crate) version: String,
    pub(crate) status: u16,
    pub(crate) reason: String,
    pub(crate) headers: Headers,
    /// From the call until the response head arrived (time to first byte).
    pub(crate) ttfb_ms: f64,
    pub(crate) body_bytes: u64,
    /// Reading the body, after the head.
    pub(crate) body_ms: f64,
}

/// The client's retry decisions.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RetryReport {
    pub(crate) attempts: u32,
    pub(crate) delays_ms: Vec<f64>,
    /// Why the client stopped retrying (`None` on success).
    pub(crate) stopped: Option<String>,
}

/// min / median / p99 of one phase over `--count` runs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PhaseStats {
    pub(crate) phase: String,
    pub(crate) samples: usize,
    pub(crate) min_ms: f64,
    pub(crate) median_ms: f64,
    pub(crate) p99_ms: f64,
}

/// Statistics over `--count` runs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Stats {
    pub(crate) runs: u32,
    pub(crate) failures: u32,
    pub(crate) phases: Vec<PhaseStats>,
}

/// The report: printed as a table or as JSON (`schema/probe-report.v1.json`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) schema_version: u32,
    pub(crate) url: String,
    pub(crate) method: String,
    pub(crate) ok: bool,
    pub(crate) exit_code: u8,
    pub(crate) resolve: ResolveReport,
    pub(crate) connect: ConnectReport,
    pub(crate) tls: Option<TlsReport>,
    pub(crate) http: Option<HttpReport>,
    pub(crate) retries: RetryReport,
    pub(crate) total_ms: f64,
    pub(crate) failure: Option<Diagnosis>,
    pub(crate) stats: Option<Stats>,
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The error and its sources, each said once.
fn error_chain(err: &Error) -> String {
    let mut out = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(super) fn stats(runs: &[Run], count: u32) -> Stats {
    let mut series: Vec<(&str, Vec<f64>)> =
        ["resolve", "tcp", "tls", "first byte", "body", "total"]
            .into_iter()
            .map(|p| (p, Vec::new()))
            .collect();
    let mut failures = 0;
    for run in runs {
        let Ok(http) = &run.result else {
            failures += 1;
            continue;
        };
        let connect = run.info.as_ref().and_then(|i| i.connect);
        let values = [
            connect.and_then(|c| c.resolve).map(ms),
            connect.map(|c| ms(c.tcp)),
            connect.and_then(|c| c.tls).map(ms),
            Some(http.ttfb_ms),
            Some(http.body_ms),
            Some(ms(run.total)),
        ];
        for ((_, samples), value) in series.iter_mut().zip(values) {
            if let Some(v) = value {
                samples.push(v);
            }
        }
    }
    let phases = series
        .into_iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(phase, mut s)| {
            s.sort_by(f64::total_cmp);
            PhaseStats {
                phase: phase.to_owned(),
                samples: s.len(),
                min_ms: s[0],
                median_ms: percentile(&s, 50.0),
                p99_ms: percentile(&s, 99.0),
            }
        })
        .collect();
    Stats {
        runs: count,
        failures,
        phases,
    }
}

/// Builds the report of `run`, adding the probe's own diagnostic detail.
pub(super) async fn assemble(args: &HttpArgs, s: &Setup, run: &Run, resolved: Resolved) -> Report {
    let connect = run.info.as_ref().and_then(|i| i.connect);
    let resolved = resolved.lock().ok().and_then(|r| r.clone());
    let (source, addrs) = match (s.literal, resolved) {
        (Some(ip), _) => ("ip-literal", vec![SocketAddr::new(ip, s.port)]),
        (None, Some(addrs)) => (
            if s.overrides.get(&s.host, s.port).is_some() {
                "--resolve"
            } else {
                "dns"
            },
            addrs,
        ),
        (None, None) => ("dns", Vec::new()),
    };
    let target = Target {
        host: s
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: s.port,
        addr: addrs.first().copied(),
        curl: s.curl.clone(),
        cacert: args.cacert.as_ref().map(|p| p.display().to_string()),
    };
    let failed = run.result.as_ref().err();
    let phase = failed.map(Error::phase);
    let attempts = match (failed, phase) {
        (Some(_), Some(Phase::Connect)) => connect_each(&addrs, args.common.connect_timeout).await,
        _ => Vec::new(),
    };
    // The TLS details come from a separate handshake; worth making when the client's got past
    // TCP (a stalled handshake would only stall again).
    let tls_reached = match (failed, phase) {
        (None, _) => true,
        (Some(e), Some(Phase::Tls)) => matches!(e.kind(), Kind::Tls(_)),
        (Some(_), Some(p)) => !p.is_before_send() && p != Phase::Local,
        _ => false,
    };
    let tls = match (&s.trust, s.https) {
        (Some(trust), true) => {
            let (details, inspect_error) = match (tls_reached, target.addr) {
                (true, Some(addr)) => {
                    match tls::inspect(
                        addr,
                        &target.host,
                        trust,
                        s.alpn,
                        args.common.connect_timeout,
                    )
                    .await
                    {
                        Ok(d) => (Some(d), None),
                        Err(e) => (None, Some(e.to_string())),
                    }
                }
                _ => (None, None),
            };
            Some(TlsReport {
                ms: connect.and_then(|c| c.tls).map(ms),
                details,
                inspect_error,
            })
        }
        _ => None,
    };
    let info = run.info.as_ref();
    let retries = RetryReport {
        attempts: info.map_or(1, |i| i.attempts),
        delays_ms: info.map_or_else(Vec::new, |i| i.delays.iter().copied().map(ms).collect()),
        stopped: info
            .and_then(|i| i.retry_stopped)
            .map(|r| r.name().to_owned()),
    };
    let (http, mut failure) = match &run.result {
        Ok(http) => (Some(http.clone()), None),
        Err(err) => {
            let bound = match (err.kind(), err.phase()) {
                (Kind::TimedOut(backstop::Timer::Connect), _) => Some(args.common.connect_timeout),
                (Kind::TimedOut(backstop::Timer::Attempt), _) => {
                    Some(args.headers_timeout.unwrap_or(args.timeout))
                }
                (Kind::TimedOut(backstop::Timer::Deadline), _) => Some(args.timeout),
                (Kind::TimedOut(backstop::Timer::Idle), _) => Some(args.idle_timeout),
                _ => None,
            };
            let diag =
                diagnose::diagnose(err.kind(), err.phase(), &target, error_chain(err), bound);
            (None, Some(diag))
        }
    };
    if let (Some(h), true, None) = (&http, args.fail, &failure)
        && h.status >= 400
        && let Ok(status) = http::StatusCode::from_u16(h.status)
    {
        failure = Some(diagnose::diagnose(
            Kind::Status(status),
            Phase::AwaitHeaders,
            &target,
            format!("status {status} (--fail)"),
            None,
        ));
    }
    let exit_code = failure.as_ref().map_or(exit::OK, |f| f.exit_code);
    Report {
        schema_version: SCHEMA_VERSION,
        url: s.plan.uri.to_string(),
        method: s.plan.method.to_string(),
        ok: failure.is_none(),
        exit_code,
        resolve: ResolveReport {
            host: target.host.clone(),
            source,
            addresses: addrs.iter().map(|a| a.ip().to_string()).collect(),
            ms: connect.and_then(|c| c.resolve).map(ms),
        },
        connect: ConnectReport {
            ms: connect.map(|c| ms(c.tcp)),
            attempts,
        },
        tls,
        http,
        retries,
        total_ms: ms(run.total),
        failure,
        stats: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 10.0);
        assert_eq!(percentile(&s, 99.0), 20.0);
    }
}
