//! std's and tokio's I/O errors (by kind, then by raw OS error) and tokio's `Elapsed` into
//! backstop's failures. Its own module, like every source library's mapping, so that each can
//! later sit behind a cargo feature of its own.

use std::io;

use super::Evidence;
use crate::error::Error;
use crate::failure::Phase;
use crate::kind::{Kind, ProtocolFailure, Timer};

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

/// A bare `Elapsed` in the chain: an attempt timeout, unless an outer link named its timer.
pub(super) fn classify_elapsed(evidence: &mut Evidence) {
    // An `io::Error(TimedOut)` wrapping the `Elapsed` already named its timer.
    if !evidence.kind.is_some_and(|kind| kind.is_timeout()) {
        evidence.kind(Kind::TimedOut(Timer::Attempt));
    }
}

/// Maps an I/O error by its portable kind, then by raw OS error (Linux numbers) for kinds std does
/// not name, with the phase each kind implies when nothing else says.
pub(super) fn classify_io(err: &io::Error) -> Option<(Kind, Phase)> {
    use io::ErrorKind as E;
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
