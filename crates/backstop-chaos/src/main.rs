//! `backstop-chaos`: a fault-injecting HTTP upstream on loopback for people
//! with curl. Run with `--help` for the fault catalogue.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use backstop_chaos::{ChaosServer, ConnectionFault, Fault, FaultListener, RetryAfter};

const USAGE: &str = "\
backstop-chaos: a fault-injecting HTTP/1.1 + HTTP/2 upstream (loopback only)

USAGE:
    backstop-chaos [--listen ADDR] [--tls]

OPTIONS:
    --listen ADDR   address to listen on, must be loopback (default 127.0.0.1:8080)
    --tls           serve HTTPS with a freshly generated CA + certificate
                    (valid for localhost, 127.0.0.1 and ::1); the CA PEM is
                    written to a temp file for `curl --cacert`
    -h, --help      print this help

CHOOSING A FAULT (per request):
    path    /fault/<name>?<params>              e.g. /fault/status?code=503&retry_after=2
    header  x-chaos-fault: <name>[?<params>]    on any path; params may also come
                                                from the URL query (header wins)
    any other path answers `200 ok`. Bad names/params answer 400 with a reason.

FAULTS (params with defaults; durations in ms, sizes in bytes):
    ok                                  200, body `ok`
    status  code=503 retry_after=N | retry_after_date=N | retry_after_raw=STR  body=N
                                        that status; Retry-After as seconds, as an
                                        HTTP-date N s ahead, or verbatim
    reset-after-read                    read the request, then TCP RST
    close-after-read                    read the request, then close without reply
    stall-headers  ms=forever           no response head (until ms, then 200)
    stall-body  bytes=16 total=1024 ms=forever
                                        head + first bytes, then stall
    drip  chunk=1 ms=100 total=10       body trickles: chunk bytes every ms
    garbage                             non-HTTP bytes instead of a response
    echo                                200 echoing the request body
    refused-stream                      HTTP/2 RST_STREAM(REFUSED_STREAM), not recorded
                                        (HTTP/1.1: close without a reply)
    goaway                              HTTP/2 GOAWAY below the request's stream, then
                                        close; not recorded (HTTP/1.1: as refused-stream)
    goaway-graceful                     200, then a graceful GOAWAY / Connection: close

CONNECTION-LEVEL FAULTS (each on its own extra loopback port, printed at start):
    accept-then-reset, tls-stall, black-hole, refuse

Every response carries x-chaos-fault, x-chaos-body-len, x-chaos-body-digest
(FNV-1a of the request body). Ctrl-C exits.
";

struct Args {
    listen: SocketAddr,
    tls: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        tls: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--tls" => args.tls = true,
            "--listen" => {
                let v = it
                    .next()
                    .ok_or("--listen needs an address, e.g. 127.0.0.1:8080")?;
                args.listen = parse_listen(&v)?;
            }
            other => match other.strip_prefix("--listen=") {
                Some(v) => args.listen = parse_listen(v)?,
                None => return Err(format!("unknown argument {other:?} (try --help)")),
            },
        }
    }
    Ok(Some(args))
}

fn parse_listen(v: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = v.parse().map_err(|_| {
        format!(
            "--listen {v:?}: expected IP:PORT such as 127.0.0.1:8080 or [::1]:8080 (no host names)"
        )
    })?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--listen {addr}: refusing a non-loopback address; backstop-chaos only listens on 127.0.0.0/8 or ::1"
        ));
    }
    Ok(addr)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    let server = ChaosServer::builder()
        .addr(args.listen)
        .tls(args.tls)
        .start()
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("listen on {}: {e}", args.listen)))?;

    let mut curl = String::from("curl -v");
    if let Some(pem) = server.ca_cert_pem() {
        let path =
            std::env::temp_dir().join(format!("backstop-chaos-ca-{}.pem", server.addr().port()));
        std::fs::write(&path, pem)?;
        curl = format!("curl -v --cacert {}", path.display());
        println!("TLS CA certificate: {}", path.display());
    }
    let scheme = if server.is_tls() {
        "HTTPS (h2 + http/1.1 via ALPN)"
    } else {
        "HTTP (http/1.1; h2 with --http2-prior-knowledge)"
    };
    println!("backstop-chaos serving {scheme} on {}\n", server.addr());

    let examples: Vec<(Fault, &str)> = vec![
        (Fault::Ok, "200 ok"),
        (Fault::status(503), "503"),
        (
            Fault::status_retry_after(503, RetryAfter::Seconds(2)),
            "503 + Retry-After: 2",
        ),
        (
            Fault::status_retry_after(429, RetryAfter::DateIn(30)),
            "429 + Retry-After: <HTTP-date 30 s ahead>",
        ),
        (
            Fault::status_retry_after(503, RetryAfter::Raw("soon-ish".into())),
            "503 + Retry-After: soon-ish (garbage)",
        ),
        (Fault::ResetAfterRead, "Connection reset by peer"),
        (Fault::CloseAfterRead, "Empty reply from server"),
        (
            Fault::StallHeaders { duration: None },
            "hangs waiting for headers",
        ),
        (
            Fault::StallHeaders {
                duration: Some(Duration::from_secs(3)),
            },
            "headers after 3 s",
        ),
        (
            Fault::StallBody {
                sent: 16,
                total: 1024,
                duration: None,
            },
            "16 of 1024 body bytes, then hangs",
        ),
        (
            Fault::Drip {
                chunk: 1,
                interval: Duration::from_millis(200),
                total: 20,
            },
            "1 byte every 200 ms",
        ),
        (Fault::Garbage, "non-HTTP bytes"),
        (Fault::Echo, "echoes the body (add -d hello)"),
        (
            Fault::RefusedStream,
            "h2: RST_STREAM(REFUSED_STREAM) (add --http2-prior-knowledge)",
        ),
        (Fault::GoAway, "h2: GOAWAY below this stream, then close"),
        (Fault::GoAwayGraceful, "200, then a graceful GOAWAY"),
    ];
    println!("Request-level faults:");
    for (fault, what) in &examples {
        println!("  {:<17} {what}", fault.name());
        println!("      {curl} '{}'", server.fault_url(fault));
    }
    println!("  (header form)     same faults on any path");
    println!(
        "      {curl} -H 'x-chaos-fault: status?code=429&retry_after=1' '{}'",
        server.url("/any/path")
    );
    if !server.is_tls() {
        println!("  (HTTP/2)          add --http2-prior-knowledge to any command above");
    }

    println!("\nConnection-level faults (own ports):");
    let mut listeners: Vec<FaultListener> = Vec::new();
    for fault in ConnectionFault::ALL {
        match fault.start().await {
            Ok(l) => {
                let addr = l.addr();
                let (try_cmd, what) = match fault {
                    ConnectionFault::AcceptThenReset => (
                        format!("curl -v http://{addr}/"),
                        "accepts, then RST: Connection reset by peer",
                    ),
                    ConnectionFault::TlsStall => (
                        format!("curl -v --max-time 5 -k https://{addr}/"),
                        "reads the ClientHello, never answers",
                    ),
                    ConnectionFault::BlackHole => (
                        format!("curl -v --connect-timeout 3 http://{addr}/"),
                        "connect() hangs (SYNs dropped)",
                    ),
                    ConnectionFault::Refuse => (
                        format!("curl -v http://{addr}/"),
                        "nothing listens: Connection refused",
                    ),
                };
                println!("  {:<17} {addr}  {what}", fault.name());
                println!("      try: {try_cmd}");
                listeners.push(l);
            }
            Err(e) => println!("  {:<17} unavailable: {e}", fault.name()),
        }
    }
    println!("\nCtrl-C to exit.");

    tokio::signal::ctrl_c().await?;
    println!(
        "\nreceived {} requests on {} connections; bye",
        server.request_count(),
        server.connection_count()
    );
    server.shutdown().await;
    drop(listeners);
    Ok(())
}
