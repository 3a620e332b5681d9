//! [`Error`]: one typed error for every failure, and the mapping from the errors of std, tokio,
//! hyper, hyper-util, h2 and rustls into it.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

use crate::failure::{Failure, Phase, Retryable};
use crate::kind::{Kind, ProtocolFailure, Timer, TlsFailure};

/// A boxed error, as tower and hyper pass them around.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// A classified failure with the error that caused it.
///
/// Every backstop layer fails with this type. The original error is kept as
/// [`source()`](StdError::source), so nothing is lost by classifying.
///
/// ```
/// use backstop_classify::{Error, Kind, Phase, Retryable};
///
/// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// let err = Error::from_io(refused, Phase::Connect);
/// assert_eq!(err.kind(), Kind::Refused);
/// assert_eq!(err.retryable(), Retryable::Safe);
/// println!("{err}: {}; {}", err.kind().explanation(), err.kind().next_step());
/// ```
pub struct Error {
    failure: Failure,
    source: Option<BoxError>,
    /// Attempts made before giving up, when a retry layer knows (0: not recorded).
    attempts: u32,
    /// What the layers learned about the call, as a response would carry it (the retry layer's
    /// record of attempts and why it stopped, the client's call info). Empty, and free, until a
    /// layer inserts something.
    extensions: http::Extensions,
}

impl Error {
    /// A new error of `kind` in `phase`, with no source.
    pub fn new(kind: Kind, phase: Phase) -> Error {
        Error::from_failure(Failure::new(kind, phase))
    }

    /// An error carrying an already classified failure.
    pub fn from_failure(failure: Failure) -> Error {
        Error {
            failure,
            source: None,
            attempts: 0,
            extensions: http::Extensions::new(),
        }
    }

    /// Attaches the error that caused this one.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Error {
        self.source = Some(source.into());
        self
    }

    /// Classifies any error, keeping it as the source.
    ///
    /// An [`Error`] (boxed, perhaps by an outer layer) comes back unchanged. Anything else is
    /// classified by walking its source chain ([`classify_error`]); `phase_hint` is used when the
    /// chain does not say where it failed.
    pub fn classify(err: impl Into<BoxError>, phase_hint: Phase) -> Error {
        let err = err.into();
        match err.downcast::<Error>() {
            Ok(ours) => *ours,
            Err(other) => Error {
                failure: classify_error(&*other, phase_hint),
                source: Some(other),
                attempts: 0,
                extensions: http::Extensions::new(),
            },
        }
    }

    /// Classifies an I/O error that happened in `phase`.
    pub fn from_io(err: io::Error, phase: Phase) -> Error {
        Error::classify(err, phase)
    }

    /// The classified failure.
    pub fn failure(&self) -> Failure {
        self.failure
    }

    /// What failed.
    pub fn kind(&self) -> Kind {
        self.failure.kind()
    }

    /// Where it failed.
    pub fn phase(&self) -> Phase {
        self.failure.phase()
    }

    /// Whether a retry is safe.
    pub fn retryable(&self) -> Retryable {
        self.failure.retryable()
    }

    /// The server's requested wait, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.failure.retry_after()
    }

    /// Replaces the classification, keeping the source (a layer that knows more, e.g. that the
    /// body could not be replayed).
    #[must_use]
    pub fn with_failure(mut self, failure: Failure) -> Error {
        self.failure = failure;
        self
    }

    /// Records how many attempts were made before this error was returned (set by the retry
    /// layer).
    #[must_use]
    pub fn with_attempts(mut self, attempts: u32) -> Error {
        self.attempts = attempts;
        self
    }

    /// How many attempts were made before this error was returned, when a retry layer recorded
    /// it.
    pub fn attempts(&self) -> Option<u32> {
        (self.attempts > 0).then_some(self.attempts)
    }

    /// What the layers recorded about the failed call, the way a response's extensions carry it
    /// for a successful one: e.g. `backstop_retry::RetryInfo` (attempts, delays, why retrying
    /// stopped) and the facade's `CallInfo`.
    pub fn extensions(&self) -> &http::Extensions {
        &self.extensions
    }

    /// The extensions, for a layer to record what it knows about the call.
    pub fn extensions_mut(&mut self) -> &mut http::Extensions {
        &mut self.extensions
    }

    /// Takes the source error out.
    pub fn into_source(self) -> Option<BoxError> {
        self.source
    }

    /// Walks `err`'s source chain looking for a backstop [`Error`].
    pub fn find_in<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a Error> {
        chain(err).find_map(|e| e.downcast_ref::<Error>())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("backstop::Error");
        d.field("kind", &self.failure.kind())
            .field("phase", &self.failure.phase())
            .field("retryable", &self.failure.retryable());
        if let Some(after) = self.failure.retry_after() {
            d.field("retry_after", &after);
        }
        if let Some(attempts) = self.attempts() {
            d.field("attempts", &attempts);
        }
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.failure)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Error {
        Error::from_failure(failure)
    }
}

impl From<tokio::time::error::Elapsed> for Error {
    /// A bare tokio timeout is taken for an attempt timeout: that is what a `tokio::time::timeout`
    /// around one call is. backstop's own timers report their precise [`Timer`].
    fn from(elapsed: tokio::time::error::Elapsed) -> Error {
        Error::new(Kind::TimedOut(Timer::Attempt), Phase::AwaitHeaders).with_source(elapsed)
    }
}

impl From<io::Error> for Error {
    /// Classifies with [`Phase::Send`] when the chain does not say where it failed; prefer
    /// [`Error::from_io`] when the phase is known.
    fn from(err: io::Error) -> Error {
        Error::classify(err, Phase::Send)
    }
}

impl From<hyper::Error> for Error {
    fn from(err: hyper::Error) -> Error {
        Error::classify(err, Phase::AwaitHeaders)
    }
}

impl From<hyper_util::client::legacy::Error> for Error {
    fn from(err: hyper_util::client::legacy::Error) -> Error {
        Error::classify(err, Phase::AwaitHeaders)
    }
}

impl From<rustls::Error> for Error {
    fn from(err: rustls::Error) -> Error {
        Error::classify(err, Phase::Tls)
    }
}

/// Iterates an error and its sources. `io::Error` hides the error it wraps from `source()` (it
/// returns the *inner's* source), so the walk steps into `get_ref()` explicitly.
fn chain<'a>(
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
/// client error (`is_connect()`) and its connector's "dns error" / "tcp connect error", hyper's
/// error kinds, h2's `REFUSED_STREAM` and `GOAWAY`, rustls errors, `std::io::Error` by kind and
/// raw OS error, and tokio's `Elapsed`. `phase_hint` is used when nothing in the chain says where
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
        if let Some(client) = link.downcast_ref::<hyper_util::client::legacy::Error>() {
            if client.is_connect() {
                evidence.phase(Phase::Connect);
            } else {
                match ClientErrorKind::of(client) {
                    ClientErrorKind::Canceled => {
                        // The connection failed before our request was dispatched (hyper hands
                        // the unwritten request back): the request never reached the peer.
                        evidence.phase(Phase::Send);
                        evidence.kind(Kind::Closed);
                        evidence.never_sent = true;
                    }
                    ClientErrorKind::User => {
                        evidence.phase(Phase::Local);
                        evidence.kind(Kind::Other);
                    }
                    ClientErrorKind::Other => {}
                }
            }
            continue;
        }
        if let Some(hyper) = link.downcast_ref::<hyper::Error>() {
            classify_hyper(hyper, &mut evidence);
            continue;
        }
        if let Some(h2) = link.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                evidence.kind(Kind::Protocol(ProtocolFailure::RefusedStream));
            } else if h2.is_go_away() {
                evidence.kind(Kind::Protocol(ProtocolFailure::GoAway));
                // h2 hands the peer's GOAWAY to a stream only when the stream is above the
                // frame's last-stream-id or was opened after it; the streams it covers end
                // with the connection instead ("broken pipe"). So a remote GOAWAY on our stream
                // is the server saying it never processed it (RFC 9113 §6.8, §8.7), as gRPC
                // reads it. A GOAWAY of our own (a protocol error we found) proves nothing.
                if h2.is_remote() {
                    evidence.never_processed = true;
                }
            } else if !h2.is_io() {
                evidence.kind(Kind::Protocol(ProtocolFailure::Http2));
            }
            continue;
        }
        if let Some(tls) = link.downcast_ref::<rustls::Error>() {
            evidence.kind(Kind::Tls(tls_failure(tls)));
            continue;
        }
        if link.is::<tokio::time::error::Elapsed>() {
            // An `io::Error(TimedOut)` wrapping the `Elapsed` already named its timer.
            if !evidence.kind.is_some_and(|kind| kind.is_timeout()) {
                evidence.kind(Kind::TimedOut(Timer::Attempt));
            }
            continue;
        }
        if let Some(io) = link.downcast_ref::<io::Error>() {
            if let Some((kind, phase)) = classify_io(io) {
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

fn classify_hyper(err: &hyper::Error, evidence: &mut Evidence) {
    if err.is_incomplete_message() {
        evidence.phase(Phase::AwaitHeaders);
        evidence.kind(Kind::Protocol(ProtocolFailure::Incomplete));
    } else if err.is_parse() || err.is_parse_status() || err.is_parse_too_large() {
        evidence.phase(Phase::AwaitHeaders);
        evidence.kind(Kind::Protocol(ProtocolFailure::Malformed));
    } else if err.is_timeout() {
        evidence.kind(Kind::TimedOut(Timer::Header));
    } else if err.is_canceled() {
        // hyper cancels a request it never started writing when its connection fails first.
        evidence.phase(Phase::Send);
        evidence.kind(Kind::Closed);
        evidence.never_sent = true;
    } else if err.is_body_write_aborted() {
        evidence.phase(Phase::Send);
        evidence.kind(Kind::Cancelled);
    } else if err.is_user() {
        evidence.phase(Phase::Local);
        evidence.kind(Kind::Other);
    } else if err.is_closed() {
        evidence.kind(Kind::Reset);
    } else {
        // Io, Body, BodyWrite, Http2: the source says more; the message says where.
        let text = err.to_string();
        if text.contains("writing a body") {
            evidence.phase(Phase::Send);
        } else if text.contains("reading a body") {
            evidence.phase(Phase::ReadBody);
        }
    }
}

fn tls_failure(err: &rustls::Error) -> TlsFailure {
    match err {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::InvalidCertRevocationList(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::UnsupportedNameType => TlsFailure::Certificate,
        rustls::Error::AlertReceived(
            rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnsupportedCertificate
            | rustls::AlertDescription::CertificateRevoked
            | rustls::AlertDescription::CertificateExpired
            | rustls::AlertDescription::CertificateUnknown
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateRequired,
        ) => TlsFailure::Certificate,
        _ => TlsFailure::Handshake,
    }
}

/// Maps an I/O error by its portable kind, then by raw OS error (Linux numbers) for kinds std does
/// not name, with the phase each kind implies when nothing else says.
pub(crate) fn classify_io(err: &io::Error) -> Option<(Kind, Phase)> {
    use io::ErrorKind as E;
    if let Some(h2) = h2_connection_lost(err) {
        return Some(h2);
    }
    let by_kind = match err.kind() {
        E::ConnectionRefused => Some((Kind::Refused, Phase::Connect)),
        E::ConnectionReset | E::ConnectionAborted => Some((Kind::Reset, Phase::AwaitHeaders)),
        E::TimedOut => Some((timer_of(err), Phase::Connect)),
        E::HostUnreachable => Some((Kind::HostUnreachable, Phase::Connect)),
        E::NetworkUnreachable | E::NetworkDown => Some((Kind::NetworkUnreachable, Phase::Connect)),
        E::BrokenPipe => Some((Kind::BrokenPipe, Phase::Send)),
        E::AddrInUse => Some((Kind::AddrInUse, Phase::Connect)),
        E::AddrNotAvailable => Some((Kind::AddrNotAvailable, Phase::Connect)),
        E::UnexpectedEof => Some((
            Kind::Protocol(ProtocolFailure::Incomplete),
            Phase::AwaitHeaders,
        )),
        E::NotConnected => Some((Kind::Closed, Phase::Send)),
        _ => None,
    };
    by_kind.or_else(|| err.raw_os_error().and_then(classify_errno))
}

/// h2 reports a connection lost under a stream as I/O errors whose kind says less than their
/// message: `BrokenPipe` for every stream of a connection that closed (the request had been
/// written; the answer never came) and `Other` for a connection that ended in the middle of a
/// frame (the peer sent something that is not HTTP/2). Read as their kind, they would claim a
/// failed write and an unknown error.
fn h2_connection_lost(err: &io::Error) -> Option<(Kind, Phase)> {
    let message = err.get_ref()?.to_string();
    match message.as_str() {
        "stream closed because of a broken pipe" => Some((
            Kind::Protocol(ProtocolFailure::Incomplete),
            Phase::AwaitHeaders,
        )),
        "bytes remaining on stream" => Some((
            Kind::Protocol(ProtocolFailure::Malformed),
            Phase::AwaitHeaders,
        )),
        _ => None,
    }
}

/// The timer is "connect" only when a connector's own timeout says so; otherwise it is the OS's
/// own `ETIMEDOUT`.
fn timer_of(err: &io::Error) -> Kind {
    match err.get_ref() {
        // hyper-util's `HttpConnector` reports its connect timeout as `io::Error(TimedOut,
        // Elapsed)`.
        Some(inner) if inner.is::<tokio::time::error::Elapsed>() => Kind::TimedOut(Timer::Connect),
        Some(inner) if inner.to_string() == "connect timeout" => Kind::TimedOut(Timer::Connect),
        _ => Kind::TimedOut(Timer::Os),
    }
}

/// Linux errno values for the cases std's `ErrorKind` leaves uncategorised on some versions.
fn classify_errno(errno: i32) -> Option<(Kind, Phase)> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    match errno {
        111 => Some((Kind::Refused, Phase::Connect)),
        104 | 103 => Some((Kind::Reset, Phase::AwaitHeaders)),
        110 => Some((Kind::TimedOut(Timer::Os), Phase::Connect)),
        113 => Some((Kind::HostUnreachable, Phase::Connect)),
        101 | 100 => Some((Kind::NetworkUnreachable, Phase::Connect)),
        32 => Some((Kind::BrokenPipe, Phase::Send)),
        98 => Some((Kind::AddrInUse, Phase::Connect)),
        99 => Some((Kind::AddrNotAvailable, Phase::Connect)),
        _ => None,
    }
}

/// The variants of hyper-util's legacy client error that only its `Debug` output names.
enum ClientErrorKind {
    Canceled,
    User,
    Other,
}

impl ClientErrorKind {
    fn of(err: &hyper_util::client::legacy::Error) -> ClientErrorKind {
        let text = format!("{err:?}");
        if text.contains("Canceled") {
            ClientErrorKind::Canceled
        } else if text.contains("UserUnsupported") || text.contains("UserAbsoluteUriRequired") {
            ClientErrorKind::User
        } else {
            ClientErrorKind::Other
        }
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
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// h2's messages for a lost connection say what happened; their I/O kinds do not.
    #[test]
    fn h2_connection_losses_are_named_by_their_message() {
        let closed = io::Error::new(
            io::ErrorKind::BrokenPipe,
            "stream closed because of a broken pipe",
        );
        let failure = classify_error(&closed, Phase::Send);
        assert_eq!(
            (failure.kind(), failure.phase()),
            (
                Kind::Protocol(ProtocolFailure::Incomplete),
                Phase::AwaitHeaders
            )
        );
        assert_eq!(failure.retryable(), Retryable::IfIdempotent);

        let cut = io::Error::other("bytes remaining on stream");
        let failure = classify_error(&cut, Phase::AwaitHeaders);
        assert_eq!(failure.kind(), Kind::Protocol(ProtocolFailure::Malformed));

        // A plain broken pipe is still one.
        let pipe = io::Error::from(io::ErrorKind::BrokenPipe);
        assert_eq!(classify_error(&pipe, Phase::Send).kind(), Kind::BrokenPipe);
    }

    /// Real HTTP/2 errors, from an h2 client and server talking over an in-memory pipe: the
    /// tests need the errors' private kinds (remote or local GOAWAY), which no constructor makes.
    mod h2_exchange {
        #![allow(clippy::unwrap_used, clippy::expect_used)]

        use super::*;
        use bytes::Bytes;
        use h2::Reason;
        use tokio::io::DuplexStream;
        use tokio::sync::oneshot;

        type Server = h2::server::Connection<DuplexStream, Bytes>;

        /// A connected client (its connection driven in the background) and server.
        async fn pair() -> (h2::client::SendRequest<Bytes>, Server) {
            let (client_io, server_io) = tokio::io::duplex(64 * 1024);
            let server = tokio::spawn(h2::server::handshake(server_io));
            let (send, conn) = h2::client::handshake(client_io).await.unwrap();
            tokio::spawn(conn);
            (send, server.await.unwrap().unwrap())
        }

        fn post() -> http::Request<()> {
            http::Request::post("http://upstream.test/pay")
                .body(())
                .unwrap()
        }

        fn assert_safe(err: &(dyn StdError + 'static), kind: Kind) {
            let failure = classify_error(err, Phase::AwaitHeaders);
            assert_eq!(failure.kind(), kind, "{err}");
            assert_eq!(failure.retryable(), Retryable::Safe, "{err}");
        }

        #[tokio::test]
        async fn refused_stream_is_safe_for_any_method() {
            let (mut client, mut server) = pair().await;
            tokio::spawn(async move {
                let (_req, mut respond) = server.accept().await.unwrap().unwrap();
                respond.send_reset(Reason::REFUSED_STREAM);
                while server.accept().await.is_some() {}
            });
            client = client.ready().await.unwrap();
            let (response, _) = client.send_request(post(), true).unwrap();
            let err = response.await.unwrap_err();
            assert!(err.is_remote());
            assert_safe(&err, Kind::Protocol(ProtocolFailure::RefusedStream));
            // Nested, as hyper-util and hyper hand it over.
            let nested = io::Error::other(err);
            assert_safe(&nested, Kind::Protocol(ProtocolFailure::RefusedStream));
        }

        /// The server's GOAWAY names a last-stream-id below our stream: it was never processed.
        #[tokio::test]
        async fn a_stream_above_the_peers_goaway_is_safe_for_any_method() {
            let (mut client, mut server) = pair().await;
            let (sent, was_sent) = oneshot::channel();
            tokio::spawn(async move {
                // The GOAWAY is decided before the server reads our HEADERS: last-stream-id 0.
                was_sent.await.unwrap();
                server.abrupt_shutdown(Reason::NO_ERROR);
                while server.accept().await.is_some() {}
            });
            client = client.ready().await.unwrap();
            let (response, _) = client.send_request(post(), true).unwrap();
            sent.send(()).unwrap();
            let err = response.await.unwrap_err();
            assert!(err.is_go_away() && err.is_remote(), "{err:?}");
            assert_safe(&err, Kind::Protocol(ProtocolFailure::GoAway));
            assert_safe(
                &io::Error::other(err),
                Kind::Protocol(ProtocolFailure::GoAway),
            );
        }

        /// A stream the GOAWAY covers may have been processed, and a GOAWAY we sent ourselves
        /// says nothing about the peer: both stay "if idempotent".
        #[tokio::test]
        async fn a_covered_stream_and_our_own_goaway_are_not_safe() {
            let (mut client, mut server) = pair().await;
            let (got, server_saw) = oneshot::channel();
            tokio::spawn(async move {
                let (req, _respond) = server.accept().await.unwrap().unwrap();
                // Stream 1 was received: the GOAWAY's last-stream-id is 1.
                server.abrupt_shutdown(Reason::INTERNAL_ERROR);
                let mut body = req.into_body();
                let local = body.data().await.unwrap().unwrap_err();
                got.send(local).unwrap();
                // Sends the GOAWAY and closes.
                while server.accept().await.is_some() {}
            });
            client = client.ready().await.unwrap();
            // The body stays open, so the server's stream is still receiving when it goes away.
            let (response, _body) = client.send_request(post(), false).unwrap();
            let remote = response.await.unwrap_err();
            assert!(
                !remote.is_go_away(),
                "a covered stream ends with the connection"
            );
            let failure = classify_error(&remote, Phase::AwaitHeaders);
            assert_eq!(failure.retryable(), Retryable::IfIdempotent, "{remote:?}");

            let local = server_saw.await.unwrap();
            assert!(local.is_go_away() && !local.is_remote(), "{local:?}");
            let failure = classify_error(&local, Phase::AwaitHeaders);
            assert_eq!(failure.kind(), Kind::Protocol(ProtocolFailure::GoAway));
            assert_eq!(failure.retryable(), Retryable::IfIdempotent);
        }
    }
}
