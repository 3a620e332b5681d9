//! hyper-util's legacy client error into backstop's failures (feature `hyper-util`).

use super::Evidence;
use crate::error::Error;
use crate::failure::Phase;
use crate::kind::Kind;

impl From<hyper_util::client::legacy::Error> for Error {
    fn from(err: hyper_util::client::legacy::Error) -> Error {
        Error::classify(err, Phase::AwaitHeaders)
    }
}

/// Reads the legacy client's error into the evidence: a connect error says where; the kinds its
/// `Debug` output names say what.
pub(super) fn classify_client(client: &hyper_util::client::legacy::Error, evidence: &mut Evidence) {
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
