//! The mapping from other libraries' errors into backstop's [`Failure`]: the walk down an
//! error's source chain, and what each link says. Separate from [`Error`](crate::Error) itself
//! because the mapping depends on every I/O and HTTP library backstop meets, the type on none of
//! them; each library's part lives in its own `from_*` module, behind the cargo feature of the
//! same name (`hyper`, `hyper-util`, `h2`, `rustls`): a crate that never meets a library's errors
//! does not compile that library in. Without a library's feature its errors are still
//! classified, by what their `io::Error` sources and messages say, only less precisely.

use std::error::Error as StdError;
use std::io;

use crate::error::Error;
use crate::failure::{Failure, Phase, Retryable};
use crate::kind::{Kind, Timer};

mod from_h2;
#[cfg(feature = "hyper")]
mod from_hyper;
#[cfg(feature = "hyper-util")]
mod from_hyper_util;
mod from_io;
#[cfg(feature = "rustls")]
mod from_rustls;

/// Iterates an error and its sources. `io::Error` hides the error it wraps from `source()` (it
/// returns the *inner's* source), so the walk steps into `get_ref()` explicitly.
pub(crate) fn chain<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut next = Some(err);
    std::iter::from_fn(move || {
        let current = next?;
        next = match current.downcast_ref::<io::Error>() {
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner as &(dyn StdError + 'static)),
                None => current.source(),
            },
            None => current.source(),
        };
        Some(current)
    })
    .take(32)
}

/// What one link of the chain told us.
#[derive(Default)]
struct Evidence {
    kind: Option<Kind>,
    phase: Option<Phase>,
    /// hyper gave the request back unwritten: whatever broke the connection, the peer never saw
    /// a byte of this request.
    never_sent: bool,
    /// The peer said it never processed the request (a `GOAWAY` whose last-stream-id is below
    /// the request's stream), whatever was written.
    never_processed: bool,
}

impl Evidence {
    fn kind(&mut self, kind: Kind) {
        // The deepest specific cause wins: an outer "connection error" is less precise than the
        // `ECONNREFUSED` under it.
        self.kind = Some(kind);
    }

    fn phase(&mut self, phase: Phase) {
        // The outermost context wins: it knows where in the call the failure surfaced.
        self.phase.get_or_insert(phase);
    }
}

/// Classifies any error by walking its source chain.
///
/// It recognises, at any depth: backstop's own [`Error`] (returned as is), hyper-util's legacy
/// client error (`is_connect()`, feature `hyper-util`) and its connector's "dns error" / "tcp
/// connect error", hyper's error kinds (feature `hyper`), h2's `REFUSED_STREAM` and `GOAWAY`
/// (feature `h2`), rustls errors (feature `rustls`), `std::io::Error` by kind and raw OS error,
/// and tokio's `Elapsed`. `phase_hint` is used when nothing in the chain says where
/// the call failed.
///
/// HTTP/2's two ways of saying "never processed" are [`Retryable::Safe`] for any method: a
/// stream reset with `REFUSED_STREAM`, and the peer's `GOAWAY` reaching a stream above its
/// last-stream-id (h2 reports it as a remote GOAWAY error on that stream only). A GOAWAY this
/// side sent, and a stream the GOAWAY covers (it ends with the connection), stay
/// [`Retryable::IfIdempotent`].
pub fn classify_error(err: &(dyn StdError + 'static), phase_hint: Phase) -> Failure {
    let mut evidence = Evidence::default();
    let mut inferred_phase = None;
    for link in chain(err) {
        if let Some(ours) = link.downcast_ref::<Error>() {
            // backstop's own layers already know exactly what and where.
            return ours.failure();
        }
        #[cfg(feature = "hyper-util")]
        if let Some(client) = link.downcast_ref::<hyper_util::client::legacy::Error>() {
            from_hyper_util::classify_client(client, &mut evidence);
            continue;
        }
        #[cfg(feature = "hyper")]
        if let Some(hyper) = link.downcast_ref::<hyper::Error>() {
            from_hyper::classify_hyper(hyper, &mut evidence);
            continue;
        }
        #[cfg(feature = "h2")]
        if let Some(h2) = link.downcast_ref::<h2::Error>() {
            from_h2::classify_h2(h2, &mut evidence);
            continue;
        }
        #[cfg(feature = "rustls")]
        if let Some(tls) = link.downcast_ref::<rustls::Error>() {
            evidence.kind(Kind::Tls(from_rustls::tls_failure(tls)));
            continue;
        }
        if link.is::<tokio::time::error::Elapsed>() {
            from_io::classify_elapsed(&mut evidence);
            continue;
        }
        if let Some(io) = link.downcast_ref::<io::Error>() {
            // h2's own messages first: for a lost connection they say more than the I/O kind.
            if let Some((kind, phase)) =
                from_h2::connection_lost(io).or_else(|| from_io::classify_io(io))
            {
                evidence.kind(kind);
                inferred_phase.get_or_insert(phase);
                continue;
            }
            if io.get_ref().is_some() {
                // The wrapped error is the next link and says more than this one's message.
                continue;
            }
        }
        // Errors we cannot downcast (private types) may still say what they are.
        match connector_message(link) {
            Some(ConnectorMessage::Dns) => {
                evidence.phase = Some(Phase::Resolve);
            }
            Some(ConnectorMessage::Tcp) => evidence.phase(Phase::Connect),
            Some(ConnectorMessage::ConnectTimeout) => {
                evidence.phase(Phase::Connect);
                evidence.kind(Kind::TimedOut(Timer::Connect));
            }
            Some(ConnectorMessage::DnsNotFound) => evidence.kind(Kind::DnsNotFound),
            Some(ConnectorMessage::DnsTemporary) => evidence.kind(Kind::DnsTemporary),
            Some(ConnectorMessage::Overloaded) => {
                evidence.phase(Phase::Local);
                evidence.kind(Kind::Overloaded);
            }
            Some(ConnectorMessage::GrpcTimeout) => evidence.kind(Kind::TimedOut(Timer::Deadline)),
            None => {}
        }
    }
    let phase = evidence.phase.or(inferred_phase).unwrap_or(phase_hint);
    let kind = evidence.kind.unwrap_or(Kind::Other);
    let (kind, phase) = reconcile(kind, phase);
    let failure = Failure::new(kind, phase);
    if (evidence.never_sent || evidence.never_processed)
        && failure.retryable() == Retryable::IfIdempotent
    {
        failure.with_retryable(Retryable::Safe)
    } else {
        failure
    }
}

/// Makes kind and phase agree where the kind itself proves the phase: a TLS failure surfacing
/// through a connector's "connect" error happened during the TLS handshake, a DNS failure during
/// resolution.
fn reconcile(kind: Kind, phase: Phase) -> (Kind, Phase) {
    match (kind, phase) {
        (Kind::Tls(_), Phase::Connect) => (kind, Phase::Tls),
        (Kind::DnsNotFound | Kind::DnsTemporary, _) => (kind, Phase::Resolve),
        // "dns error" with an unrecognised cause is still the resolver failing.
        (Kind::Other, Phase::Resolve) => (Kind::DnsTemporary, phase),
        _ => (kind, phase),
    }
}

/// Messages of error types that cannot be downcast (hyper-util's private `ConnectError`, the
/// resolver's `getaddrinfo` errors).
enum ConnectorMessage {
    Dns,
    Tcp,
    ConnectTimeout,
    DnsNotFound,
    DnsTemporary,
    /// tower's `load_shed::error::Overloaded`, whose message is all a crate without tower's
    /// `load-shed` feature can see.
    Overloaded,
    /// tonic's `TimeoutExpired`: its `Channel` enforces the `grpc-timeout` header of each request
    /// itself — the deadline backstop propagated, minus the margin — so the caller's deadline has
    /// passed (never retried; tonic alone would report `CANCELLED`).
    GrpcTimeout,
}

fn connector_message(err: &(dyn StdError + 'static)) -> Option<ConnectorMessage> {
    let text = err.to_string();
    if text == "dns error" {
        Some(ConnectorMessage::Dns)
    } else if text.starts_with("tcp ") && text.ends_with(" error") {
        Some(ConnectorMessage::Tcp)
    } else if text == "connect timeout" {
        Some(ConnectorMessage::ConnectTimeout)
    } else if text.contains("Name or service not known")
        || text.contains("No address associated with hostname")
        || text.contains("nodename nor servname")
        || text.contains("no record found")
        || text.contains("NXDomain")
    {
        Some(ConnectorMessage::DnsNotFound)
    } else if text.contains("Temporary failure in name resolution") {
        Some(ConnectorMessage::DnsTemporary)
    } else if text == "service overloaded" {
        Some(ConnectorMessage::Overloaded)
    } else if text == "Timeout expired" {
        Some(ConnectorMessage::GrpcTimeout)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    /// An error that says what tonic's private-to-downcast `TimeoutExpired` says.
    #[derive(Debug)]
    struct Expired;

    impl fmt::Display for Expired {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Timeout expired")
        }
    }

    impl StdError for Expired {}

    #[test]
    fn tonics_own_grpc_timeout_is_the_deadline() {
        let failure = classify_error(&Expired, Phase::AwaitHeaders);
        assert_eq!(failure.kind(), Kind::TimedOut(Timer::Deadline));
        assert_eq!(failure.retryable(), Retryable::Never);
        assert_eq!(
            failure.kind().grpc_code(),
            crate::GrpcCode::DeadlineExceeded
        );
    }
}
