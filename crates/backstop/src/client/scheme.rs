//! [`Schemes`]: which URLs a [`Client`](crate::Client) calls — `https://` only when built with
//! TLS, `http://` unless `https_only` — checked before a request enters the stack, so a refused
//! call is never sent, retried, or counted by a breaker.

use std::fmt;

use backstop_classify::{Error, Failure, Kind, Phase, Retryable};
use http::Uri;
use http::uri::Scheme;

use crate::policy::ConfigError;

/// Why a build without the `tls` feature cannot call an `https://` URL, and what to enable.
pub(crate) const NO_TLS: &str = "an https:// URL needs TLS, which this build of backstop leaves \
    out: enable backstop's `rustls-ring` or `rustls-aws-lc` feature (and `webpki-roots`, \
    `native-roots` or `platform-verifier` for the roots)";

/// The schemes a client calls.
#[derive(Debug, Clone, Copy)]
pub(super) struct Schemes {
    https_only: bool,
}

impl Schemes {
    /// The rules of a client built with `https_only`; without TLS, `https_only` would refuse
    /// every call, so it is a [`ConfigError`] naming it.
    pub(super) fn new(https_only: bool) -> Result<Schemes, ConfigError> {
        if https_only && !cfg!(feature = "tls") {
            return Err(ConfigError::new(
                "https_only",
                format!("would refuse every call: {NO_TLS}"),
            ));
        }
        Ok(Schemes { https_only })
    }

    /// The error a call to `uri` fails with before anything is sent, or `None` when it may go.
    #[inline]
    pub(super) fn refuse(self, uri: &Uri) -> Option<Error> {
        let https = uri.scheme() == Some(&Scheme::HTTPS);
        if https && !cfg!(feature = "tls") {
            return Some(refused(NO_TLS));
        }
        if self.https_only && !https {
            return Some(refused(
                "the client is https_only: a URL other than https:// is refused",
            ));
        }
        None
    }
}

/// A call refused locally: no retry could change the answer.
#[cold]
fn refused(why: &'static str) -> Error {
    let failure = Failure::new(Kind::Other, Phase::Local).with_retryable(Retryable::Never);
    Error::from_failure(failure).with_source(SchemeRefused(why))
}

/// The source of a refused call's [`Error`]: why, and what to change.
#[derive(Debug)]
struct SchemeRefused(&'static str);

impl fmt::Display for SchemeRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for SchemeRefused {}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::ErrorKind;
    use std::net::TcpListener;

    use backstop_classify::{Kind, Phase, Retryable};

    use crate::{CallInfoExt, Client};

    /// A listener that would see any connection the client opened: accepting does not block, so
    /// a connection not made shows as `WouldBlock`.
    fn watched() -> TcpListener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        listener
    }

    /// What a refused call must be: local, never retried, never sent, saying why.
    #[track_caller]
    fn assert_refused(err: &crate::Error, listener: &TcpListener, says: &[&str]) {
        assert_eq!(
            (err.kind(), err.phase(), err.retryable()),
            (Kind::Other, Phase::Local, Retryable::Never),
            "{err:?}"
        );
        let message = err.to_string();
        for said in says {
            assert!(message.contains(said), "{said:?} in {message}");
        }
        assert!(
            err.call_info().is_some(),
            "a refused call has its CallInfo too"
        );
        let accepted = listener.accept().map(drop).map_err(|e| e.kind());
        assert_eq!(accepted, Err(ErrorKind::WouldBlock), "nothing was sent");
    }

    #[cfg(not(feature = "tls"))]
    #[tokio::test]
    async fn without_tls_an_https_url_fails_at_once_naming_the_features() {
        let listener = watched();
        let addr = listener.local_addr().unwrap();
        let client = Client::builder().max_attempts(2).build().unwrap();
        let err = client.get(&format!("https://{addr}/")).await.unwrap_err();
        assert_refused(
            &err,
            &listener,
            &["https://", "rustls-ring", "rustls-aws-lc"],
        );
        // The same client calls http:// (here, to the listener: a connection shows).
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let call = tokio::spawn(async move { client.get(&format!("http://{addr}/")).await });
        let accepted = tokio::time::timeout(std::time::Duration::from_secs(10), listener.accept());
        assert!(accepted.await.is_ok_and(|a| a.is_ok()), "http:// goes out");
        call.abort();
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_tls_https_only_is_a_config_error_at_build() {
        let err = Client::builder().https_only(true).build().unwrap_err();
        assert_eq!(err.field(), "https_only");
        assert!(err.rule().contains("rustls-ring"), "{}", err.rule());
        assert!(Client::builder().https_only(false).build().is_ok());
    }

    #[cfg(feature = "tls")]
    #[tokio::test]
    async fn https_only_refuses_http_urls_at_once() {
        let listener = watched();
        let addr = listener.local_addr().unwrap();
        // A configuration of its own: the default one may need a provider or roots the
        // features under test leave out.
        let client = Client::builder()
            .https_only(true)
            .tls(crate::tls::test_config())
            .build()
            .unwrap();
        let err = client.get(&format!("http://{addr}/")).await.unwrap_err();
        assert_refused(&err, &listener, &["https_only"]);
    }
}
