//! [`CallInfo`]: what happened during a call, in the response's (or the error's) extensions.

use std::time::Duration;

use backstop_breaker::State;
use backstop_classify::Error;
use backstop_retry::{RetryInfo, StopReason};
use http::Response;

use crate::timed::{ConnectTimings, OpenedConnection};

/// What happened during a call, in the response's extensions.
#[derive(Debug, PartialEq)]
pub struct CallInfo {
    /// Attempts made, the first included.
    pub attempts: u32,
    /// The backoff delays slept between attempts.
    pub delays: Vec<Duration>,
    /// Why the client stopped retrying, when the call ended on a failure: attempts exhausted,
    /// budget spent, not retryable, body not replayable, the deadline, a local rejection (open
    /// breaker) or a server asking to wait longer than the client will. `None` on success.
    pub retry_stopped: Option<StopReason>,
    /// The state of the destination's circuit breaker after the call (`None` when breakers are
    /// off).
    pub breaker: Option<State>,
    /// Time from the call until the response head arrived (time to first byte), retries
    /// included; for a failed call, until it failed.
    pub time_to_headers: Duration,
    /// How long establishing the connection took, in all and per phase (DNS, TCP, TLS), when
    /// the call's answer came over a new connection — the first call answered over a
    /// connection reports it, every later one gets `None` (a pooled connection). `None` too
    /// for a failed call that has no connection to show for it (a connect failure, or a call
    /// cut by its attempt timeout or deadline before any answer).
    pub connect: Option<ConnectTimings>,
    /// The facts of the connection, while hyper-util carries this record from a new connection
    /// to the client (see `timed.rs`); `None` in every record a caller sees.
    pub(crate) connection: Option<OpenedConnection>,
}

impl Clone for CallInfo {
    fn clone(&self) -> CallInfo {
        CallInfo {
            attempts: self.attempts,
            // hyper-util clones a connection's record, which has no delays, into every response
            // over it: that clone skips `Vec`'s (a call's path runs every line it touches).
            delays: if self.delays.is_empty() {
                Vec::new()
            } else {
                self.delays.clone()
            },
            retry_stopped: self.retry_stopped,
            breaker: self.breaker,
            time_to_headers: self.time_to_headers,
            connect: self.connect,
            // Every response over a pooled connection gets a clone of its carrier, long after
            // the first call claimed the connection's timings: a claimed connection has nothing
            // more to give, and its count is not raised and dropped again for nothing.
            connection: self
                .connection
                .as_ref()
                .filter(|opened| !opened.is_claimed())
                .cloned(),
        }
    }
}

impl CallInfo {
    pub(crate) fn new(
        retry: RetryInfo,
        breaker: Option<State>,
        time_to_headers: Duration,
        connect: Option<ConnectTimings>,
    ) -> CallInfo {
        CallInfo {
            attempts: retry.attempts(),
            delays: retry.delays().collect(),
            retry_stopped: retry.stopped(),
            breaker,
            time_to_headers,
            connect,
            connection: None,
        }
    }

    /// Makes `self` the record [`CallInfo::new`] would make, in place: the record the
    /// connection brought into the response is filled, not replaced by one built, moved in, and
    /// the old one dropped.
    pub(crate) fn fill(
        &mut self,
        retry: &RetryInfo,
        breaker: Option<State>,
        time_to_headers: Duration,
        connect: Option<ConnectTimings>,
    ) {
        self.attempts = retry.attempts();
        self.delays.clear();
        self.delays.extend(retry.delays());
        self.retry_stopped = retry.stopped();
        self.breaker = breaker;
        self.time_to_headers = time_to_headers;
        self.connect = connect;
        self.connection = None;
    }

    /// The call info of a response from a [`Client`](crate::Client).
    pub fn of<B>(res: &Response<B>) -> Option<&CallInfo> {
        res.extensions().get::<CallInfo>()
    }

    /// The call info of an error from a [`Client`](crate::Client): the same record as a response's, for a call
    /// that failed.
    pub fn of_error(err: &Error) -> Option<&CallInfo> {
        err.extensions().get::<CallInfo>()
    }
}

/// `.call_info()` on what a [`Client`](crate::Client) returns, response or error.
///
/// ```no_run
/// use backstop::CallInfoExt;
/// # async fn demo(client: backstop::Client) {
/// match client.get("http://127.0.0.1:3000/").await {
///     Ok(res) => println!("{:?}", res.call_info()),
///     Err(err) => println!("{err}: {:?}", err.call_info()),
/// }
/// # }
/// ```
pub trait CallInfoExt: sealed::Sealed {
    /// What happened during the call.
    fn call_info(&self) -> Option<&CallInfo>;
}

impl<B> CallInfoExt for Response<B> {
    fn call_info(&self) -> Option<&CallInfo> {
        CallInfo::of(self)
    }
}

impl CallInfoExt for Error {
    fn call_info(&self) -> Option<&CallInfo> {
        CallInfo::of_error(self)
    }
}

mod sealed {
    pub trait Sealed {}
    impl<B> Sealed for http::Response<B> {}
    impl Sealed for backstop_classify::Error {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_filled_in_place_is_the_record_new_makes_whatever_it_held() {
        let mut retry = RetryInfo::default();
        retry.record_attempt(Duration::from_millis(20));
        retry.record_attempt(Duration::from_millis(40));
        retry.stop(StopReason::AttemptsExhausted);
        let connect = ConnectTimings {
            resolve: None,
            tcp: Duration::from_millis(1),
            tls: None,
            total: Duration::from_millis(1),
        };
        let made = CallInfo::new(
            retry,
            Some(State::Closed),
            Duration::from_secs(1),
            Some(connect),
        );
        // A record that held another call's delays and timings.
        let mut filled = CallInfo::new(
            RetryInfo::default(),
            Some(State::Open),
            Duration::from_secs(9),
            None,
        );
        filled.delays = vec![Duration::from_secs(5); 4];
        filled.fill(
            &retry,
            Some(State::Closed),
            Duration::from_secs(1),
            Some(connect),
        );
        assert_eq!(filled, made);
        assert_eq!(
            filled.delays,
            [Duration::from_millis(20), Duration::from_millis(40)]
        );
    }

    #[test]
    fn a_clone_is_the_record_it_was_made_of_with_delays_or_without() {
        let mut retry = RetryInfo::default();
        retry.record_attempt(Duration::from_millis(20));
        retry.stop(StopReason::Deadline);
        let with_delays =
            CallInfo::new(retry, Some(State::HalfOpen), Duration::from_millis(7), None);
        assert_eq!(with_delays.clone(), with_delays);
        assert_eq!(with_delays.clone().delays, [Duration::from_millis(20)]);
        let without = CallInfo::new(RetryInfo::default(), None, Duration::ZERO, None);
        assert_eq!(without.clone(), without);
        assert!(without.clone().delays.is_empty());
    }
}
