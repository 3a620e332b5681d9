//! h2's errors into backstop's failures: `REFUSED_STREAM` and the peer's `GOAWAY` (HTTP/2's ways
//! of saying "never processed"), and the messages h2 puts in the I/O errors of a lost connection.
//! The messages need no h2 types, so they are read with or without the `h2` feature; the
//! errors themselves only with it.

use std::io;

use crate::failure::Phase;
use crate::kind::{Kind, ProtocolFailure};

/// Reads an h2 stream or connection error into the evidence.
#[cfg(feature = "h2")]
pub(super) fn classify_h2(h2: &h2::Error, evidence: &mut super::Evidence) {
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
}

/// h2 reports a connection lost under a stream as I/O errors whose kind says less than their
/// message: `BrokenPipe` for every stream of a connection that closed (the request had been
/// written; the answer never came) and `Other` for a connection that ended in the middle of a
/// frame (the peer sent something that is not HTTP/2). Read as their kind, they would claim a
/// failed write and an unknown error.
pub(super) fn connection_lost(err: &io::Error) -> Option<(Kind, Phase)> {
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

#[cfg(test)]
mod tests {
    use std::error::Error as StdError;

    use super::*;
    use crate::classify_error;
    use crate::failure::Retryable;

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
    #[cfg(feature = "h2")]
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
