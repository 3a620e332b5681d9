//! hyper's [`hyper::Error`] into backstop's failures (feature `hyper`). It reads only the kind
//! predicates hyper has with any of its features, so turning this on adds no hyper feature.

use super::Evidence;
use crate::error::Error;
use crate::failure::Phase;
use crate::kind::{Kind, ProtocolFailure, Timer};

impl From<hyper::Error> for Error {
    fn from(err: hyper::Error) -> Error {
        Error::classify(err, Phase::AwaitHeaders)
    }
}

/// Reads one of hyper's error kinds into the evidence.
pub(super) fn classify_hyper(err: &hyper::Error, evidence: &mut Evidence) {
    if err.is_incomplete_message() {
        evidence.phase(Phase::AwaitHeaders);
        evidence.kind(Kind::Protocol(ProtocolFailure::Incomplete));
    } else if err.is_parse() {
        // Every parse error, a status line's and a head too large included (`is_parse_status`
        // and `is_parse_too_large` are narrower views of the same kind).
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
