//! `backstop-probe`: walks resolve → connect → TLS → HTTP to one URL with `backstop::Client`,
//! times every phase, and when one breaks says which, why in plain words, and what to run next.
//!
//! See the crate README for the output, the JSON schema and the exit codes.

// clap makes the options' doc comments into `--help` text, where `[::1]` is an IPv6 address in
// brackets, not an intra-doc link.
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

mod diagnose;
mod probe;
mod render;
mod tcp;
mod tls;

/// The text after `--help`: the exit codes, which scripts depend on.
const EXIT_CODES: &str = "\
Exit codes (modelled on curl's):
   0  every phase worked (an HTTP status >= 400 too, unless --fail)
   1  a failure not classified further
   2  usage error (bad option or argument)
   6  the name did not resolve
   7  the TCP connection failed (refused, unreachable)
  22  --fail and the status was >= 400
  28  a timer gave up, in any phase (connect, TLS, headers, body, total)
  35  the TLS handshake failed
  52  the connection closed before a complete response (empty reply)
  56  receiving failed: reset, or bytes that are not HTTP
  60  the peer's certificate was rejected (untrusted issuer, expired, wrong name)

Durations: 500ms, 2s, 1.5s, 1m; a bare number is seconds.";

/// Walk resolve → TCP → TLS → HTTP to a URL, time each phase, and diagnose the one that breaks.
#[derive(Debug, Parser)]
#[command(
    name = "backstop-probe",
    version,
    after_help = EXIT_CODES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    http: HttpArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect over plain TCP, optionally send bytes, print what comes back (like nc), with the
    /// same diagnosis and exit codes.
    #[command(after_help = EXIT_CODES)]
    Tcp(TcpArgs),
}

/// Options shared by the HTTP probe and `tcp`.
#[derive(Debug, Args, Clone)]
pub(crate) struct Common {
    /// Use ADDR for HOST:PORT instead of asking DNS, as curl's --resolve (repeatable).
    /// ADDR may be a list: host:443:10.0.0.1,10.0.0.2; IPv6 in brackets: [::1].
    #[arg(long, value_name = "HOST:PORT:ADDR")]
    pub(crate) resolve: Vec<String>,
    /// The bound on establishing the connection (name lookup, TCP and TLS).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub(crate) connect_timeout: Duration,
    /// Print the report as JSON (schema: schema/probe-report.v1.json in the crate).
    #[arg(long)]
    pub(crate) json: bool,
}

/// The HTTP probe's options.
#[derive(Debug, Args)]
pub(crate) struct HttpArgs {
    /// The URL to probe: http:// or https://, with a host name or an IP address.
    #[arg(value_name = "URL", required = true)]
    pub(crate) url: Option<String>,
    /// The request method (default GET, or POST with --data).
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    pub(crate) method: Option<String>,
    /// A request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub(crate) headers: Vec<String>,
    /// The request body; @FILE reads it from FILE.
    #[arg(short = 'd', long = "data", value_name = "DATA")]
    pub(crate) data: Option<String>,
    /// The bound on the whole probe: connect, request, headers and body (the client's deadline).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
    /// The bound on one attempt until its response headers (default: --timeout).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) headers_timeout: Option<Duration>,
    /// How long the body (or a connection) may stay silent.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub(crate) idle_timeout: Duration,
    /// Trust only the CA certificates in this PEM file (replaces the default roots, as curl's).
    #[arg(long, value_name = "FILE")]
    pub(crate) cacert: Option<PathBuf>,
    /// DANGEROUS: accept any server certificate. The report still says whether it would have
    /// been trusted.
    #[arg(short = 'k', long)]
    pub(crate) insecure: bool,
    /// Offer only HTTP/1.1 in TLS ALPN.
    #[arg(long, conflicts_with = "http2")]
    pub(crate) http1: bool,
    /// HTTP/2 only: the only protocol offered in TLS ALPN, or, for http://, HTTP/2 with prior
    /// knowledge (h2c).
    #[arg(long)]
    pub(crate) http2: bool,
    /// Let the client retry up to N times, and show its retry decisions.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) retries: u32,
    /// Probe N times, each on a fresh connection, and report min / median / p99 per phase.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) count: u32,
    /// Exit 22 when the status is 400 or more (as curl --fail).
    #[arg(short = 'f', long)]
    pub(crate) fail: bool,
    #[command(flatten)]
    pub(crate) common: Common,
}

/// `tcp`'s options.
#[derive(Debug, Args)]
pub(crate) struct TcpArgs {
    /// Where to connect: HOST:PORT (IPv6 in brackets: [::1]:80).
    #[arg(value_name = "HOST:PORT")]
    pub(crate) target: String,
    /// Bytes to send once connected; \r, \n, \t and \\ are unescaped.
    #[arg(long, value_name = "TEXT")]
    pub(crate) send: Option<String>,
    /// Stop reading after this long without a byte.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub(crate) read_timeout: Duration,
    /// Stop reading after this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 65_536)]
    pub(crate) max_bytes: usize,
    #[command(flatten)]
    pub(crate) common: Common,
}

/// Parses `500ms`, `2s`, `1.5s`, `1m`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 500ms, 2s, 1m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s or m")),
    };
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!("{text:?}: must be above 0 and at most a day"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A duration as a person reads it: `812µs`, `12.3ms`, `1.52s`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let micros = d.as_micros();
    if micros < 1000 {
        format!("{micros}µs")
    } else if micros < 10_000 {
        format!("{:.2}ms", d.as_secs_f64() * 1000.0)
    } else if micros < 1_000_000 {
        format!("{:.1}ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("backstop-probe: cannot start the runtime: {err}");
            return ExitCode::from(diagnose::exit::OTHER);
        }
    };
    let code = match cli.command {
        Some(Command::Tcp(args)) => runtime.block_on(tcp::run(args)),
        None => runtime.block_on(probe::run(cli.http)),
    };
    match code {
        Ok(code) => ExitCode::from(code),
        Err(usage) => {
            eprintln!("backstop-probe: {usage}");
            ExitCode::from(diagnose::exit::USAGE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3h").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
