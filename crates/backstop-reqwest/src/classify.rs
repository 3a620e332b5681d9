//! What a reqwest call's failure was, in backstop's vocabulary: [`classify_reqwest`],
//! [`classify`] and [`classified`].

use backstop_classify::{Error, Failure, Kind, Phase, Retryable, Timer, classify_error};

/// Classifies a [`reqwest::Error`] into backstop's [`Kind`], [`Phase`] and [`Retryable`].
///
/// reqwest's own flags come first where they know more than the source chain: `is_connect()`
/// puts the failure before the request was sent ([`Phase::Connect`], safe to retry for any
/// method), `is_timeout()` makes it a timeout (of the connect when both are set; otherwise of the
/// attempt, reqwest's per-request timeout), `is_builder()` a local rejection and `is_redirect()`
/// final. The rest comes from walking the `source()` chain with [`classify_error`], which
/// recognises hyper's, hyper-util's and the OS's errors (a reset, a connection closed before the
/// request was written, an incomplete response…).
///
/// ```
/// use backstop_classify::{Kind, Phase, Retryable};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Nothing listens on a port just released: the connection is refused.
/// let addr = backstop_chaos::closed_port_addr().unwrap();
/// let err = reqwest::get(format!("http://{addr}/")).await.unwrap_err();
/// let failure = backstop_reqwest::classify_reqwest(&err);
/// assert_eq!((failure.kind(), failure.phase()), (Kind::Refused, Phase::Connect));
/// // Never sent: even a POST may be sent again.
/// assert_eq!(failure.retryable(), Retryable::Safe);
/// # }
/// ```
pub fn classify_reqwest(err: &reqwest::Error) -> Failure {
    let hint = if err.is_connect() {
        Phase::Connect
    } else if err.is_builder() {
        Phase::Local
    } else if err.is_decode() {
        Phase::ReadBody
    } else {
        Phase::AwaitHeaders
    };
    let mut failure = classify_error(err, hint);
    if err.is_connect() && !failure.phase().is_before_send() {
        // reqwest saw the connector fail: whatever the chain says, no byte of the request left.
        failure = failure.with_phase(Phase::Connect);
    }
    if err.is_timeout() && !failure.kind().is_timeout() {
        // reqwest's own timers are private types the chain walk cannot name.
        let timer = if err.is_connect() {
            Timer::Connect
        } else {
            Timer::Attempt
        };
        failure = Failure::new(Kind::TimedOut(timer), failure.phase());
    }
    if err.is_builder() && failure.phase() != Phase::Local {
        failure = failure.with_phase(Phase::Local);
    }
    if err.is_redirect() {
        // Too many redirects, or a loop: the same request would meet the same redirects.
        failure = failure.with_retryable(Retryable::Never);
    }
    failure
}

/// Classifies any error the middleware chain can return: a [`reqwest::Error`] through
/// [`classify_reqwest`], an error of another middleware by its source chain (a backstop
/// [`Error`] inside keeps its own classification).
pub fn classify(err: &reqwest_middleware::Error) -> Failure {
    match err {
        reqwest_middleware::Error::Reqwest(err) => classify_reqwest(err),
        reqwest_middleware::Error::Middleware(err) => match err.downcast_ref::<reqwest::Error>() {
            Some(err) => classify_reqwest(err),
            None => classify_error(err.as_ref(), Phase::AwaitHeaders),
        },
    }
}

/// The backstop [`Error`] a [`BackstopMiddleware`](crate::BackstopMiddleware) failed with: its
/// kind, phase and retry judgement, the attempts in its
/// [`RetryInfo`](backstop_retry::RetryInfo) (`RetryInfo::of_error`), the original error as its
/// `source()`. `None` for an error that did not come from the middleware.
pub fn classified(err: &reqwest_middleware::Error) -> Option<&Error> {
    match err {
        reqwest_middleware::Error::Middleware(err) => err.downcast_ref::<Error>(),
        reqwest_middleware::Error::Reqwest(_) => None,
    }
}
