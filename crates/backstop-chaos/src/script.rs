//! Scripted fault sequences attached to a path prefix.

use std::time::Duration;

use tokio::time::Instant;

use crate::Fault;

/// A scripted sequence of faults for the requests under one path prefix
/// (see [`ChaosServer::script`](crate::ChaosServer::script)).
///
/// Time is measured with [`tokio::time::Instant`], so scripts follow a paused
/// tokio clock.
#[derive(Debug, Clone)]
pub struct Script {
    kind: Kind,
    seen: u64,
    started: Option<Instant>,
}

#[derive(Debug, Clone)]
enum Kind {
    Always(Fault),
    FailTimes(u64, Fault),
    DownFor(Duration, Fault),
    Sequence(Vec<Fault>),
}

impl Script {
    fn new(kind: Kind, started: Option<Instant>) -> Script {
        Script {
            kind,
            seen: 0,
            started,
        }
    }

    /// Every request gets `fault`.
    pub fn always(fault: Fault) -> Script {
        Script::new(Kind::Always(fault), None)
    }

    /// The first `n` requests get `fault`, every later one [`Fault::Ok`].
    pub fn fail_times(n: u64, fault: Fault) -> Script {
        Script::new(Kind::FailTimes(n, fault), None)
    }

    /// Requests get `fault` during `period` counted from the first matching
    /// request, and [`Fault::Ok`] afterwards.
    pub fn down_for(period: Duration, fault: Fault) -> Script {
        Script::new(Kind::DownFor(period, fault), None)
    }

    /// Requests get `fault` during `period` counted from now (the call to this
    /// constructor), and [`Fault::Ok`] afterwards.
    pub fn down_for_from_now(period: Duration, fault: Fault) -> Script {
        Script::new(Kind::DownFor(period, fault), Some(Instant::now()))
    }

    /// The i-th request gets `faults[i]`; requests beyond the list get
    /// [`Fault::Ok`]. Handy for flapping: `[status(503), Ok, status(503)]`.
    pub fn sequence(faults: Vec<Fault>) -> Script {
        Script::new(Kind::Sequence(faults), None)
    }

    /// How many requests this script has answered so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Picks the fault for the next request and advances the script.
    pub(crate) fn next_fault(&mut self, now: Instant) -> Fault {
        let index = self.seen;
        self.seen += 1;
        let started = *self.started.get_or_insert(now);
        match &self.kind {
            Kind::Always(f) => f.clone(),
            Kind::FailTimes(n, f) if index < *n => f.clone(),
            Kind::FailTimes(..) => Fault::Ok,
            Kind::DownFor(period, f) if now.saturating_duration_since(started) < *period => {
                f.clone()
            }
            Kind::DownFor(..) => Fault::Ok,
            Kind::Sequence(list) => usize::try_from(index)
                .ok()
                .and_then(|i| list.get(i))
                .cloned()
                .unwrap_or(Fault::Ok),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn scripts_advance() {
        let now = Instant::now();
        let mut s = Script::fail_times(2, Fault::status(503));
        assert_eq!(s.next_fault(now), Fault::status(503));
        assert_eq!(s.next_fault(now), Fault::status(503));
        assert_eq!(s.next_fault(now), Fault::Ok);
        assert_eq!(s.seen(), 3);

        let mut d = Script::down_for(Duration::from_secs(5), Fault::ResetAfterRead);
        tokio::time::advance(Duration::from_secs(10)).await;
        let t0 = Instant::now();
        assert_eq!(d.next_fault(t0), Fault::ResetAfterRead);
        assert_eq!(
            d.next_fault(t0 + Duration::from_secs(4)),
            Fault::ResetAfterRead
        );
        assert_eq!(d.next_fault(t0 + Duration::from_secs(5)), Fault::Ok);

        let mut q = Script::sequence(vec![Fault::Garbage, Fault::Ok, Fault::Garbage]);
        let got: Vec<_> = (0..4).map(|_| q.next_fault(t0)).collect();
        assert_eq!(got, [Fault::Garbage, Fault::Ok, Fault::Garbage, Fault::Ok]);
    }
}
