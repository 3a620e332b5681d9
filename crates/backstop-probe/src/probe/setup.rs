//! The probe's client setup: the command line turned into a request plan, `--resolve`
//! overrides and a recording resolver, and the `backstop::Client` each run uses. Separate from
//! the report, which only reads what setup fixed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use backstop::{BudgetPolicy, Client, FnResolver};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri};

use crate::HttpArgs;
use crate::tls::{self, Alpn, Trust};

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

/// The request, rebuilt for each run.
pub(super) struct Plan {
    pub(super) uri: Uri,
    pub(super) method: Method,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    pub(super) body: Bytes,
}

impl Plan {
    pub(super) fn request(&self) -> Result<Request<Bytes>, String> {
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
pub(super) type Resolved = Arc<Mutex<Option<Vec<SocketAddr>>>>;

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
pub(super) struct Setup {
    pub(super) plan: Plan,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) https: bool,
    pub(super) literal: Option<IpAddr>,
    pub(super) overrides: Overrides,
    pub(super) trust: Option<Trust>,
    pub(super) alpn: Alpn,
    pub(super) curl: String,
}

pub(super) fn setup(args: &HttpArgs) -> Result<Setup, String> {
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

pub(super) fn build_client(
    args: &HttpArgs,
    s: &Setup,
    resolved: Resolved,
) -> Result<Client, String> {
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
}
