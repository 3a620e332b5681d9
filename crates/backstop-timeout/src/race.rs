//! Happy eyeballs: racing a destination's addresses, each attempt bounded (RFC 8305).

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use backstop_classify::{Error, Kind, Phase, Timer};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::socket::SocketOptions;
use crate::tcp::invalid;

/// Orders addresses as RFC 8305 §4 asks: alternate families, starting with the resolver's first.
pub(crate) fn interleave_families(addrs: impl Iterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let addrs: Vec<SocketAddr> = addrs.collect();
    let Some(first) = addrs.first() else {
        return addrs;
    };
    let first_is_v6 = first.is_ipv6();
    let (preferred, other): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addrs.iter().partition(|addr| addr.is_ipv6() == first_is_v6);
    let mut ordered = Vec::with_capacity(addrs.len());
    let mut preferred = preferred.into_iter();
    let mut other = other.into_iter();
    loop {
        match (preferred.next(), other.next()) {
            (None, None) => return ordered,
            (a, b) => ordered.extend(a.into_iter().chain(b)),
        }
    }
}

type AttemptFuture = Pin<Box<dyn Future<Output = Result<TcpStream, Error>> + Send>>;

#[derive(Debug, Clone)]
pub(crate) struct Attempts {
    /// The bound of every attempt but the last.
    pub(crate) timeout: Duration,
    /// How long an attempt runs alone before the next one starts alongside it.
    pub(crate) delay: Duration,
    /// The socket options to set before connecting; `None` (every option unset) connects as
    /// `TcpStream::connect` does, with no shared state to count.
    pub(crate) options: Option<Arc<SocketOptions>>,
}

impl Attempts {
    /// Races the addresses: staggered starts, each bounded but the last, first success wins.
    pub(crate) async fn race(self, addrs: Vec<SocketAddr>) -> Result<TcpStream, Error> {
        if let [only] = addrs[..] {
            // Nothing to race: the one attempt has the whole budget, and no bookkeeping.
            return attempt(only, None, self.options).await;
        }
        let total = addrs.len();
        let mut queue = addrs.into_iter().enumerate();
        let mut running: Vec<AttemptFuture> = Vec::with_capacity(total.min(4));
        let mut last_error: Option<Error> = None;
        let stagger = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(stagger);
        let mut start_next = true;
        poll_fn(move |cx: &mut Context<'_>| {
            loop {
                if start_next {
                    start_next = false;
                    if let Some((index, addr)) = queue.next() {
                        let bound = (index + 1 < total).then_some(self.timeout);
                        running.push(Box::pin(attempt(addr, bound, self.options.clone())));
                        stagger.as_mut().reset(Instant::now() + self.delay);
                    }
                }
                let mut index = 0;
                while index < running.len() {
                    match running[index].as_mut().poll(cx) {
                        Poll::Ready(Ok(stream)) => return Poll::Ready(Ok(stream)),
                        Poll::Ready(Err(err)) => {
                            drop(running.swap_remove(index));
                            last_error = Some(err);
                            // A failed address frees its slot for the next one at once.
                            start_next = true;
                        }
                        Poll::Pending => index += 1,
                    }
                }
                if start_next && queue.len() > 0 {
                    continue;
                }
                if running.is_empty() && queue.len() == 0 {
                    return Poll::Ready(Err(last_error
                        .take()
                        .unwrap_or_else(|| invalid("no address to connect to"))));
                }
                if queue.len() > 0 && stagger.as_mut().poll(cx).is_ready() {
                    start_next = true;
                    continue;
                }
                return Poll::Pending;
            }
        })
        .await
    }
}

async fn attempt(
    addr: SocketAddr,
    bound: Option<Duration>,
    options: Option<Arc<SocketOptions>>,
) -> Result<TcpStream, Error> {
    let connect = async move {
        match options {
            Some(options) => options.connect(addr).await,
            None => TcpStream::connect(addr).await,
        }
    };
    let result = match bound {
        Some(bound) => match tokio::time::timeout(bound, connect).await {
            Ok(result) => result,
            Err(_) => {
                return Err(Error::new(Kind::TimedOut(Timer::Connect), Phase::Connect)
                    .with_source(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect to {addr} timed out after {bound:?}"),
                    )));
            }
        },
        None => connect.await,
    };
    result.map_err(|err| {
        let err = io::Error::new(err.kind(), AddrError { addr, source: err });
        Error::from_io(err, Phase::Connect)
    })
}

/// An I/O error while connecting to one address, naming it.
#[derive(Debug)]
struct AddrError {
    addr: SocketAddr,
    source: io::Error,
}

impl std::fmt::Display for AddrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tcp connect to {} failed: {}", self.addr, self.source)
    }
}

impl std::error::Error for AddrError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn families_alternate_starting_with_the_first() {
        let v4 = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let v6 = |port| SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port));
        let ordered = interleave_families([v6(1), v6(2), v6(3), v4(4)].into_iter());
        assert_eq!(ordered, vec![v6(1), v4(4), v6(2), v6(3)]);
        assert!(interleave_families(std::iter::empty()).is_empty());
    }
}
