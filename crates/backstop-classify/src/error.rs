//! [`Error`]: one typed error for every failure. The mapping from the errors of std, tokio,
//! hyper, hyper-util, h2 and rustls into it lives in [`crate::map`], one library per module.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

use crate::failure::{Failure, Phase, Retryable};
use crate::kind::Kind;
use crate::map::{chain, classify_error};

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
