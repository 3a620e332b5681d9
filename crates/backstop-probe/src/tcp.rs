//! `backstop-probe tcp HOST:PORT`: connect, optionally send bytes, print what comes back —
//! with the same diagnosis and exit codes as the HTTP probe.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use backstop::{Error, Kind, Phase};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::diagnose::{self, Target, exit};
use crate::probe::Overrides;
use crate::{TcpArgs, fmt_duration};

fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        let c = match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('r') => '\r',
                Some('n') => '\n',
                Some('t') => '\t',
                Some('\\') | None => '\\',
                Some(other) => {
                    out.push(b'\\');
                    other
                }
            },
            (c, false) => c,
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
    out
}

fn split_target(target: &str) -> Result<(String, u16), String> {
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("{target:?}: expected HOST:PORT"))?;
    let port = port
        .parse()
        .map_err(|_| format!("{target:?}: {port:?} is not a port"))?;
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    ))
}

/// Runs `tcp`; `Err` is a usage error.
pub(crate) async fn run(args: TcpArgs) -> Result<u8, String> {
    let (host, port) = split_target(&args.target)?;
    let overrides = Overrides::parse(&args.common.resolve)?;
    let bound = args.common.connect_timeout;
    let mut target = Target {
        host: host.clone(),
        port,
        addr: None,
        curl: format!("nc -v {host} {port}"),
        cacert: None,
    };
    let started = Instant::now();
    let addrs: Vec<SocketAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
        vec![SocketAddr::new(ip, port)]
    } else if let Some(addrs) = overrides.get(&host, port) {
        addrs
    } else {
        match tokio::time::timeout(bound, tokio::net::lookup_host((host.as_str(), port))).await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => return Ok(fail(Error::classify(e, Phase::Resolve), &target, None)),
            Err(_) => {
                let e = Error::new(Kind::TimedOut(backstop::Timer::Connect), Phase::Resolve);
                return Ok(fail(e, &target, Some(bound)));
            }
        }
    };
    let resolve_time = started.elapsed();
    println!(
        "  resolve      {:>9}  {host} → {}",
        fmt_duration(resolve_time),
        addrs
            .iter()
            .map(|a| a.ip().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut stream = None;
    let mut last: Option<(Error, SocketAddr, Option<Duration>)> = None;
    for addr in &addrs {
        let t = Instant::now();
        match tokio::time::timeout(bound, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                println!(
                    "  tcp connect  {:>9}  {addr} connected",
                    fmt_duration(t.elapsed())
                );
                stream = Some(s);
                target.addr = Some(*addr);
                break;
            }
            Ok(Err(e)) => {
                let err = Error::from_io(e, Phase::Connect);
                println!(
                    "  tcp connect  {:>9}  {addr} {}",
                    fmt_duration(t.elapsed()),
                    err.kind().name()
                );
                last = Some((err, *addr, None));
            }
            Err(_) => {
                println!(
                    "  tcp connect  {:>9}  {addr} no answer",
                    fmt_duration(t.elapsed())
                );
                let err = Error::new(Kind::TimedOut(backstop::Timer::Connect), Phase::Connect);
                last = Some((err, *addr, Some(bound)));
            }
        }
    }
    let Some(mut stream) = stream else {
        return Ok(match last {
            Some((err, addr, within)) => {
                target.addr = Some(addr);
                fail(err, &target, within)
            }
            None => fail(Error::new(Kind::DnsNotFound, Phase::Resolve), &target, None),
        });
    };
    if let Some(text) = &args.send {
        let bytes = unescape(text);
        if let Err(e) = stream.write_all(&bytes).await {
            return Ok(fail(Error::from_io(e, Phase::Send), &target, None));
        }
        println!("  sent         {:>9}  {} bytes", "", bytes.len());
    }
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    let read_started = Instant::now();
    let end = loop {
        match tokio::time::timeout(args.read_timeout, stream.read(&mut buf)).await {
            Ok(Ok(0)) => break "the peer closed the connection",
            Ok(Ok(n)) => {
                received.extend_from_slice(&buf[..n]);
                if received.len() >= args.max_bytes {
                    received.truncate(args.max_bytes);
                    break "--max-bytes reached";
                }
            }
            Ok(Err(e)) => {
                let err = Error::from_io(e, Phase::AwaitHeaders);
                print_received(&received);
                return Ok(fail(err, &target, None));
            }
            Err(_) => break "nothing more within --read-timeout",
        }
    };
    println!(
        "  received     {:>9}  {} bytes ({end})",
        fmt_duration(read_started.elapsed()),
        received.len()
    );
    print_received(&received);
    Ok(exit::OK)
}

fn print_received(bytes: &[u8]) {
    if !bytes.is_empty() {
        println!("{}", String::from_utf8_lossy(bytes));
    }
}

fn fail(err: Error, target: &Target, within: Option<Duration>) -> u8 {
    let mut d = diagnose::diagnose(err.kind(), err.phase(), target, err.to_string(), within);
    if err.phase() == Phase::AwaitHeaders || err.phase() == Phase::Send {
        d.next_command = target.curl.clone();
    }
    println!();
    println!("FAILED at {}: {}", d.layer, d.kind);
    println!("  {}", d.summary);
    println!("  why:   {}", d.explanation);
    println!("  next:  {}", d.next_step);
    println!("  run:   {}", d.next_command);
    println!("  exit code {}", d.exit_code);
    d.exit_code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_become_bytes() {
        assert_eq!(
            unescape("GET / HTTP/1.0\\r\\n\\r\\n"),
            b"GET / HTTP/1.0\r\n\r\n"
        );
        assert_eq!(unescape("a\\\\b"), b"a\\b");
    }

    #[test]
    fn targets_split_on_the_last_colon() {
        assert_eq!(split_target("[::1]:80"), Ok(("::1".to_owned(), 80)));
        assert!(split_target("host").is_err());
    }
}
