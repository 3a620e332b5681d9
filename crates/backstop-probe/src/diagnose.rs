//! From a classified failure to what a person needs: the layer that broke, an exit code
//! modelled on curl's, a sentence naming the address, and the exact command to run next.

use backstop::classify::TlsFailure;
use backstop::{Kind, Phase, ProtocolFailure};
use serde::Serialize;

/// Exit codes, modelled on curl's where curl has one (`man curl`, "EXIT CODES").
pub(crate) mod exit {
    /// Everything worked (an HTTP error status too, unless `--fail`).
    pub(crate) const OK: u8 = 0;
    /// A failure the probe does not classify further.
    pub(crate) const OTHER: u8 = 1;
    /// Bad command line (clap's own code for usage errors).
    pub(crate) const USAGE: u8 = 2;
    /// The name did not resolve (curl 6).
    pub(crate) const RESOLVE: u8 = 6;
    /// The TCP connection failed (curl 7).
    pub(crate) const CONNECT: u8 = 7;
    /// `--fail` and the status was 400 or more (curl 22).
    pub(crate) const HTTP_ERROR: u8 = 22;
    /// A timer gave up, in any phase (curl 28).
    pub(crate) const TIMED_OUT: u8 = 28;
    /// The TLS handshake failed (curl 35).
    pub(crate) const TLS_HANDSHAKE: u8 = 35;
    /// The connection closed before a response came (curl 52, "empty reply").
    pub(crate) const EMPTY_REPLY: u8 = 52;
    /// Receiving failed: reset, or bytes that are not HTTP (curl 56).
    pub(crate) const RECEIVE: u8 = 56;
    /// The peer's certificate was rejected (curl 60).
    pub(crate) const CERTIFICATE: u8 = 60;
}

/// The layer a probe stopped at, as the report names it.
pub(crate) fn layer(phase: Phase) -> &'static str {
    match phase {
        Phase::Resolve => "resolve",
        Phase::Connect => "tcp connect",
        Phase::Tls => "tls",
        Phase::Send => "http (sending the request)",
        Phase::AwaitHeaders => "http (awaiting headers)",
        Phase::ReadBody => "http (reading the body)",
        Phase::Local => "local",
        _ => "unknown phase",
    }
}

/// The exit code of a failure.
pub(crate) fn exit_code(kind: Kind, phase: Phase) -> u8 {
    match kind {
        Kind::TimedOut(_) => exit::TIMED_OUT,
        Kind::DnsNotFound | Kind::DnsTemporary => exit::RESOLVE,
        Kind::Tls(TlsFailure::Certificate) => exit::CERTIFICATE,
        Kind::Tls(_) => exit::TLS_HANDSHAKE,
        Kind::Refused
        | Kind::HostUnreachable
        | Kind::NetworkUnreachable
        | Kind::AddrNotAvailable
        | Kind::AddrInUse => exit::CONNECT,
        Kind::Reset if phase == Phase::Connect => exit::CONNECT,
        Kind::Reset if phase == Phase::Tls => exit::TLS_HANDSHAKE,
        Kind::Protocol(ProtocolFailure::Incomplete) | Kind::Closed => exit::EMPTY_REPLY,
        Kind::Protocol(_) | Kind::Reset | Kind::BrokenPipe => exit::RECEIVE,
        Kind::Status(status) if status.as_u16() >= 400 => exit::HTTP_ERROR,
        _ => exit::OTHER,
    }
}

/// Where the probe was going, for the sentences and commands.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The host as written in the URL (a name or an IP literal).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The address tried (or the first resolved one), when there is one.
    pub(crate) addr: Option<std::net::SocketAddr>,
    /// A `curl` command line repeating the request, `--resolve` and `--cacert` included.
    pub(crate) curl: String,
    /// `--cacert`, for the `openssl` command.
    pub(crate) cacert: Option<String>,
}

impl Target {
    fn where_(&self) -> String {
        match self.addr {
            Some(addr) if addr.ip().to_string() != self.host => {
                format!("{}:{} ({addr})", self.host, self.port)
            }
            Some(addr) => addr.to_string(),
            None => format!("{}:{}", self.host, self.port),
        }
    }

    fn is_local(&self) -> bool {
        self.addr.is_some_and(|a| a.ip().is_loopback())
    }
}

/// The diagnosis of a failure, as printed and as in the JSON report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Diagnosis {
    /// The layer that broke (`"tcp connect"`, `"tls"`, `"http (awaiting headers)"`…).
    pub(crate) layer: String,
    /// The classified kind's short name (`"refused"`, `"timed out (connect)"`…).
    pub(crate) kind: String,
    /// One sentence naming the address.
    pub(crate) summary: String,
    /// The kind's explanation.
    pub(crate) explanation: String,
    /// The kind's next step.
    pub(crate) next_step: String,
    /// The exact command to run next.
    pub(crate) next_command: String,
    /// The error chain, as the client reported it.
    pub(crate) error: String,
    pub(crate) exit_code: u8,
}

/// Diagnoses `kind` in `phase` for `target`; `timeout` is the bound that applied, if any.
pub(crate) fn diagnose(
    kind: Kind,
    phase: Phase,
    target: &Target,
    error: String,
    timeout: Option<std::time::Duration>,
) -> Diagnosis {
    let at = target.where_();
    let within = timeout
        .map(|t| format!(" within {}", crate::fmt_duration(t)))
        .unwrap_or_default();
    let summary = match (kind, phase) {
        (Kind::Refused, _) => format!("nothing is listening on {at}"),
        (Kind::DnsNotFound, _) => format!("the name {} has no address", target.host),
        (Kind::DnsTemporary, _) => format!("the resolver gave no answer for {} now", target.host),
        (Kind::TimedOut(_), Phase::Resolve) => {
            format!("resolving {} did not finish{within}", target.host)
        }
        (Kind::TimedOut(_), Phase::Connect) => {
            format!("{at} did not accept a TCP connection{within}")
        }
        (Kind::TimedOut(_), Phase::Tls) => {
            format!("{at} accepted the TCP connection but the TLS handshake did not finish{within}")
        }
        (Kind::TimedOut(_), Phase::Send | Phase::AwaitHeaders) => {
            format!("{at} took the request but sent no response headers{within}")
        }
        (Kind::TimedOut(_), _) => format!("the response from {at} stalled{within}"),
        (Kind::Tls(TlsFailure::Certificate), _) => {
            format!("the certificate {at} presented was rejected")
        }
        (Kind::Tls(_), _) => format!("the TLS handshake with {at} failed"),
        (Kind::Protocol(ProtocolFailure::Malformed), _) => {
            format!("{at} answered with bytes that are not HTTP")
        }
        (Kind::Protocol(ProtocolFailure::Incomplete) | Kind::Closed, _) => {
            format!("{at} closed the connection without a complete response")
        }
        (Kind::Reset, _) => format!("{at} reset the connection"),
        (Kind::Status(status), _) => format!("{at} answered {status}"),
        (Kind::HostUnreachable | Kind::NetworkUnreachable, _) => {
            format!("there is no route to {at}")
        }
        _ => format!("the call to {at} failed ({})", kind.name()),
    };
    let port = target.port;
    let host = &target.host;
    let next_command = match phase {
        Phase::Resolve => format!("dig {host}"),
        Phase::Connect if kind == Kind::Refused => {
            if target.is_local() {
                format!("ss -tlnp 'sport = :{port}'")
            } else {
                format!("ss -tlnp 'sport = :{port}'   # on {host}; from here: nc -vz {host} {port}")
            }
        }
        Phase::Connect => format!("nc -vz -w 5 {host} {port}"),
        Phase::Tls => {
            let connect = match target.addr {
                Some(addr) => addr.to_string(),
                None => format!("{host}:{port}"),
            };
            let ca = target
                .cacert
                .as_ref()
                .map(|f| format!(" -CAfile {f}"))
                .unwrap_or_default();
            format!("openssl s_client -connect {connect} -servername {host}{ca} </dev/null")
        }
        _ => target.curl.clone(),
    };
    Diagnosis {
        layer: layer(phase).to_owned(),
        kind: kind.name().to_owned(),
        summary,
        explanation: kind.explanation().to_owned(),
        next_step: kind.next_step().to_owned(),
        next_command,
        error,
        exit_code: exit_code(kind, phase),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layer_has_its_own_code() {
        use backstop::Timer;
        let cases = [
            (Kind::DnsNotFound, Phase::Resolve, exit::RESOLVE),
            (Kind::Refused, Phase::Connect, exit::CONNECT),
            (Kind::TimedOut(Timer::Connect), Phase::Tls, exit::TIMED_OUT),
            (
                Kind::Tls(TlsFailure::Handshake),
                Phase::Tls,
                exit::TLS_HANDSHAKE,
            ),
            (
                Kind::Tls(TlsFailure::Certificate),
                Phase::Tls,
                exit::CERTIFICATE,
            ),
            (
                Kind::Protocol(ProtocolFailure::Incomplete),
                Phase::AwaitHeaders,
                exit::EMPTY_REPLY,
            ),
            (
                Kind::Protocol(ProtocolFailure::Malformed),
                Phase::AwaitHeaders,
                exit::RECEIVE,
            ),
        ];
        for (kind, phase, code) in cases {
            assert_eq!(exit_code(kind, phase), code, "{kind:?} in {phase:?}");
        }
    }
}
