//! The HTTP probe: one `backstop::Client` call per run (one attempt unless `--retries`), read
//! back through its `CallInfo` and classified errors, plus the diagnostic detail the client does
//! not expose (the resolved addresses, per-address connects after a failed connect, TLS session
//! and certificate).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backstop::{BudgetPolicy, CallInfo, CallInfoExt, Client, Error, FnResolver, Kind, Phase};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::BodyExt;
use serde::Serialize;

use crate::HttpArgs;
use crate::diagnose::{self, Diagnosis, Target, exit};
use crate::tls::{self, Alpn, TlsDetails, Trust};

/// The version of the JSON report; bumped on any incompatible change of
/// `schema/probe-report.v1.json`.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// `--resolve` entries: (host, port) → addresses.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides(HashMap<(String, u16), Vec<IpAddr>>);

impl Overrides {
    /// Parses curl's `HOST:PORT:ADDR[,ADDR…]`.
    pub(crate) fn parse(entries: &[String]) -> Result<Overrides, String> {
        let mut map = HashMap::new();
        for entry in entries {
            let bad = || {
                format!(
                    "--resolve {entry:?}: expected HOST:PORT:ADDR (e.g. example.com:443:127.0.0.1)"
                )
            };
            let (host, rest) = entry.split_once(':').ok_or_else(bad)?;
            let (port, addrs) = rest.split_once(':').ok_or_else(bad)?;
            let port: u16 = port.parse().map_err(|_| bad())?;
            let addrs = addrs
                .split(',')
                .map(|a| {
                    a.trim()
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse()
                })
                .collect::<Result<Vec<IpAddr>, _>>()
                .map_err(|_| bad())?;
            if host.is_empty() || addrs.is_empty() {
                return Err(bad());
            }
            map.insert((host.to_ascii_lowercase(), port), addrs);
        }
        Ok(Overrides(map))
    }

    /// The addresses `--resolve` gives `host:port`, if any.
    pub(crate) fn get(&self, host: &str, port: u16) -> Option<Vec<SocketAddr>> {
        self.0
            .get(&(host.to_ascii_lowercase(), port))
            .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
    }
}

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

/// What one run of the client gave.
struct Run {
    info: Option<CallInfo>,
    result: Result<HttpReport, Error>,
    total: Duration,
}

/// The request, rebuilt for each run.
struct Plan {
    uri: Uri,
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Plan {
    fn request(&self) -> Result<Request<Bytes>, String> {
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(self.uri.clone())
            .body(self.body.clone())
            .map_err(|e| format!("cannot build the request: {e}"))?;
        for (name, value) in &self.headers {
            req.headers_mut().append(name.clone(), value.clone());
        }
        Ok(req)
    }
}

/// Where the resolver records what it returned to the client.
type Resolved = Arc<Mutex<Option<Vec<SocketAddr>>>>;

/// A resolver for the client: `--resolve` entries first, then the system's `getaddrinfo`. It
/// records the addresses it gave, which the report shows.
fn resolver(overrides: Overrides, port: u16, resolved: Resolved) -> FnResolver {
    FnResolver::new(move |name| {
        let host = name.as_str().to_owned();
        let overrides = overrides.clone();
        let resolved = resolved.clone();
        async move {
            let addrs = match overrides.get(&host, port) {
                Some(addrs) => {
                    // The client times phases at poll granularity: a lookup that completes in
                    // the poll that started it would be timed as no lookup at all.
                    tokio::task::yield_now().await;
                    addrs
                }
                None => tokio::net::lookup_host((host.as_str(), port))
                    .await?
                    .collect(),
            };
            if let Ok(mut slot) = resolved.lock() {
                *slot = Some(addrs.clone());
            }
            Ok(addrs)
        }
    })
}

fn read_body(data: &str) -> Result<Bytes, String> {
    match data.strip_prefix('@') {
        Some(path) => std::fs::read(path)
            .map(Bytes::from)
            .map_err(|e| format!("--data @{path}: {e}")),
        None => Ok(Bytes::copy_from_slice(data.as_bytes())),
    }
}

fn parse_header(h: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| format!("-H {h:?}: expected \"Name: value\""))?;
    let name =
        HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| format!("-H {h:?}: {e}"))?;
    let value = HeaderValue::from_str(value.trim()).map_err(|e| format!("-H {h:?}: {e}"))?;
    Ok((name, value))
}

/// Everything fixed before the first run.
struct Setup {
    plan: Plan,
    host: String,
    port: u16,
    https: bool,
    literal: Option<IpAddr>,
    overrides: Overrides,
    trust: Option<Trust>,
    alpn: Alpn,
    curl: String,
}

fn setup(args: &HttpArgs) -> Result<Setup, String> {
    let url = args.url.as_deref().ok_or("a URL is required")?;
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{url:?}: the scheme must be http:// or https://")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("{url:?} has no host"))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    let overrides = Overrides::parse(&args.common.resolve)?;
    let body = match &args.data {
        Some(data) => read_body(data)?,
        None => Bytes::new(),
    };
    let method = match (&args.method, args.data.is_some()) {
        (Some(m), _) => Method::from_bytes(m.as_bytes()).map_err(|e| format!("-X {m:?}: {e}"))?,
        (None, true) => Method::POST,
        (None, false) => Method::GET,
    };
    let headers = args
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let alpn = if args.http1 {
        Alpn::Http1
    } else if args.http2 {
        Alpn::Http2
    } else {
        Alpn::Both
    };
    let trust = if https {
        Some(Trust::new(args.cacert.as_deref(), args.insecure)?)
    } else {
        None
    };
    let mut curl = String::from("curl -v");
    if method != Method::GET {
        curl.push_str(&format!(" -X {method}"));
    }
    for entry in &args.common.resolve {
        curl.push_str(&format!(" --resolve {entry}"));
    }
    if let Some(ca) = &args.cacert {
        curl.push_str(&format!(" --cacert {}", ca.display()));
    }
    if args.insecure {
        curl.push_str(" -k");
    }
    for h in &args.headers {
        curl.push_str(&format!(" -H '{h}'"));
    }
    if let Some(d) = &args.data {
        curl.push_str(&format!(" -d '{d}'"));
    }
    curl.push_str(&format!(" '{url}'"));
    Ok(Setup {
        plan: Plan {
            uri,
            method,
            headers,
            body,
        },
        host,
        port,
        https,
        literal,
        overrides,
        trust,
        alpn,
        curl,
    })
}

fn build_client(args: &HttpArgs, s: &Setup, resolved: Resolved) -> Result<Client, String> {
    let mut builder = Client::builder()
        .deadline(args.timeout)
        .connect_timeout(args.common.connect_timeout)
        .idle_timeout(args.idle_timeout)
        .max_attempts(args.retries.saturating_add(1))
        // A probe is one call: a breaker would only remember earlier runs of `--count`, and a
        // budget would refuse the retries `--retries` asked to see.
        .breaker(false)
        .retry_budget(BudgetPolicy {
            enabled: false,
            ..BudgetPolicy::default()
        })
        .resolver(resolver(s.overrides.clone(), s.port, resolved));
    if let Some(t) = args.headers_timeout {
        builder = builder.attempt_timeout(t);
    } else {
        builder = builder.attempt_timeout(args.timeout);
    }
    if let Some(trust) = &s.trust {
        builder = builder.tls(tls::client_config(trust, s.alpn)?);
    } else if args.http2 {
        // Plain http:// has no ALPN to ask with: HTTP/2 with prior knowledge (h2c).
        builder = builder.http2_prior_knowledge(true);
    }
    builder.build().map_err(|e| e.to_string())
}

async fn run_once(client: &Client, plan: &Plan) -> Result<Run, String> {
    let req = plan.request()?;
    let started = Instant::now();
    let res = client.send(req).await;
    let ttfb = started.elapsed();
    let res = match res {
        Ok(res) => res,
        Err(err) => {
            return Ok(Run {
                info: err.call_info().cloned(),
                result: Err(err),
                total: started.elapsed(),
            });
        }
    };
    let info = res.call_info().cloned();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let headers = Headers {
        server: header("server"),
        retry_after: header("retry-after"),
        content_type: header("content-type"),
        content_length: header("content-length"),
    };
    let status = res.status();
    let version = format!("{:?}", res.version());
    let body_started = Instant::now();
    let body = res.into_body().collect().await;
    let total = started.elapsed();
    let result = body.map(|body| HttpReport {
        version,
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("").to_owned(),
        headers,
        ttfb_ms: ms(info.as_ref().map_or(ttfb, |i| i.time_to_headers)),
        body_bytes: body.to_bytes().len() as u64,
        body_ms: ms(body_started.elapsed()),
    });
    Ok(Run {
        info,
        result,
        total,
    })
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

/// Tries each address on its own, so a report can say which answered how.
pub(crate) async fn connect_each(addrs: &[SocketAddr], bound: Duration) -> Vec<AddrAttempt> {
    let mut out = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let started = Instant::now();
        let result = match tokio::time::timeout(bound, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => "connected".to_owned(),
            Ok(Err(e)) => {
                let kind = Error::from_io(e, Phase::Connect).kind();
                format!("{} ({})", kind.name(), kind.explanation())
            }
            Err(_) => format!("no answer within {}", crate::fmt_duration(bound)),
        };
        out.push(AddrAttempt {
            address: addr.to_string(),
            ms: ms(started.elapsed()),
            result,
        });
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

fn stats(runs: &[Run], count: u32) -> Stats {
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

/// Runs the HTTP probe; `Err` is a usage error.
pub(crate) async fn run(args: HttpArgs) -> Result<u8, String> {
    let s = setup(&args)?;
    let resolved: Resolved = Arc::new(Mutex::new(None));
    let mut runs = Vec::with_capacity(args.count as usize);
    for _ in 0..args.count {
        // A fresh client per run: every run opens (and times) its own connection.
        let client = build_client(&args, &s, resolved.clone())?;
        runs.push(run_once(&client, &s.plan).await?);
    }
    let last_failed = runs.iter().rposition(|r| r.result.is_err());
    let shown = match last_failed {
        Some(i) => runs.swap_remove(i),
        None => runs.pop().ok_or("no run")?,
    };
    let mut report = assemble(&args, &s, &shown, resolved).await;
    if args.count > 1 {
        runs.push(shown);
        report.stats = Some(stats(&runs, args.count));
    }
    let color = crate::render::use_color();
    if args.common.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{json}");
    } else {
        print!("{}", crate::render::report(&report, color));
    }
    Ok(report.exit_code)
}

/// Builds the report of `run`, adding the probe's own diagnostic detail.
async fn assemble(args: &HttpArgs, s: &Setup, run: &Run, resolved: Resolved) -> Report {
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
    fn resolve_entries_parse_as_curls() {
        let o =
            Overrides::parse(&["Example.com:443:127.0.0.1,[::1]".to_owned()]).unwrap_or_default();
        assert_eq!(
            o.get("example.com", 443).map(|a| a.len()),
            Some(2),
            "both addresses, host case-insensitive"
        );
        assert!(Overrides::parse(&["example.com:443".to_owned()]).is_err());
        assert!(Overrides::parse(&["example.com:x:127.0.0.1".to_owned()]).is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 10.0);
        assert_eq!(percentile(&s, 99.0), 20.0);
    }
}
