//! The attempt timeout's clock, and the timers it keeps between attempts.
//!
//! Every attempt that has to wait needs a timer. A fresh tokio `Sleep` is inserted into the
//! runtime's timer wheel on its first poll and taken out again when the attempt ends (a lock of
//! the wheel each time), which costs several times what the rest of the layer does. So the
//! attempts of an [`AttemptTimeout`](crate::AttemptTimeout) (and of its clones) hand their timers
//! back when they end, still registered, and the next attempt to wait takes one instead of
//! registering a new one. A kept timer is set for an earlier attempt's deadline, before this
//! one's: it is left there, and if the attempt is still waiting when it fires, its own deadline
//! (earlier than the attempt's) says so without a clock read, and it is moved on to the
//! attempt's deadline (one atomic update; the wheel catches up). Most attempts end before and
//! never move it. The attempt ends at its exact deadline either way.
//!
//! A kept timer nobody takes still fires at its old deadline, waking the task that last polled
//! it for nothing (once, at most one attempt timeout after that task's attempt); until then it
//! holds that task's waker, so a finished task's memory is freed that much later. It belongs to
//! the runtime it was made in: it is only reused in that same runtime (a timer of a runtime that
//! has shut down must never be polled), and others are dropped instead.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::runtime::{Handle, Id};
use tokio::time::{Instant, Sleep, sleep_until};

use crate::ambient::{self, Budget};

/// The most timers kept idle for one layer's services: as many as attempts commonly wait at
/// once through them. Beyond that, a returned timer is dropped.
const MAX_SPARES: usize = 64;

/// Timers of finished attempts, shared by a service and its clones, each with the runtime it
/// belongs to.
#[derive(Debug, Default)]
pub(crate) struct Spares {
    idle: Mutex<Vec<(Id, Pin<Box<Sleep>>)>>,
}

impl Spares {
    /// A timer for `at`: a kept one of the current runtime moved there, or a new one. Never
    /// waits for the list: a thread holding it means a new timer instead.
    fn take(&self, at: Instant) -> (Pin<Box<Sleep>>, Option<Id>) {
        let runtime = Handle::try_current().ok().map(|handle| handle.id());
        if let Some(runtime) = runtime {
            let kept = self.idle.try_lock().ok().and_then(|mut idle| idle.pop());
            // A timer of another runtime (which may have shut down) is dropped, never polled.
            if let Some((owner, mut sleep)) = kept
                && owner == runtime
            {
                // Still set for an earlier deadline: left there, it wakes the attempt early once
                // (if the attempt lasts that long), which then moves it on; most attempts end
                // before, and never pay for moving it. A timer that has fired, or is set for
                // later, is moved now.
                if sleep.deadline() > at || sleep.is_elapsed() {
                    sleep.as_mut().reset(at);
                }
                return (sleep, Some(runtime));
            }
        }
        // Outside a runtime this fails as `tokio::time::sleep` does.
        (Box::pin(sleep_until(at)), runtime)
    }

    fn give(&self, sleep: Pin<Box<Sleep>>, runtime: Id) {
        if let Ok(mut idle) = self.idle.try_lock()
            && idle.len() < MAX_SPARES
        {
            idle.push((runtime, sleep));
        }
    }
}

/// The clock of one attempt: not read until the attempt first has to wait, then a timer from
/// the layer's [`Spares`], handed back when the attempt ends (completed, failed or dropped).
#[derive(Debug)]
pub(crate) struct AttemptClock {
    budget: Budget,
    spares: Arc<Spares>,
    armed: Option<(Pin<Box<Sleep>>, Option<Id>)>,
}

impl AttemptClock {
    #[inline]
    pub(crate) fn new(budget: Budget, spares: Arc<Spares>) -> Self {
        AttemptClock {
            budget,
            spares,
            armed: None,
        }
    }

    /// Arms the timer on first use and polls it. A clock it starts starts the ambient
    /// deadline's too, if that has not started: inside a client `DeadlineLayer`, whose clock
    /// starts at this same poll anyway (the call has had to wait), one reading of the clock
    /// instead of two.
    #[inline]
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let at = match self.budget {
            Budget::At(deadline) => deadline.instant(),
            Budget::NotStarted(_) => {
                let now = Instant::now();
                ambient::start_at(now);
                let deadline = self.budget.start_at(now);
                self.budget = Budget::At(deadline);
                deadline.instant()
            }
        };
        let (sleep, _) = match &mut self.armed {
            Some(armed) => armed,
            None => self.armed.insert(self.spares.take(at)),
        };
        loop {
            ready!(sleep.as_mut().poll(cx));
            // A kept timer still set for an earlier attempt's deadline fires before ours: its
            // own deadline says so, without reading the clock. Moved on, it fires at ours.
            if sleep.deadline() < at {
                sleep.as_mut().reset(at);
                continue;
            }
            return Poll::Ready(());
        }
    }

    /// The instant the attempt ends, if the timer is armed.
    #[cfg(test)]
    fn armed_at(&self) -> Option<Instant> {
        self.armed
            .as_ref()
            .and(self.budget.started().map(|deadline| deadline.instant()))
    }
}

impl Drop for AttemptClock {
    fn drop(&mut self) {
        if let Some((sleep, Some(runtime))) = self.armed.take() {
            self.spares.give(sleep, runtime);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;
    use crate::Deadline;
    use crate::ambient::Entered;

    fn poll_once(clock: &mut AttemptClock) -> Poll<()> {
        clock.poll_expired(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_starting_lends_its_start_to_the_ambient_deadline() {
        let entered = Entered::new(Budget::NotStarted(Duration::from_secs(5)));
        let spares = Arc::new(Spares::default());
        let mut clock = AttemptClock::new(Budget::NotStarted(Duration::from_secs(1)), spares);
        let now = Instant::now();
        assert!(poll_once(&mut clock).is_pending());
        assert_eq!(clock.armed_at(), Some(now + Duration::from_secs(1)));
        assert_eq!(
            ambient::peek(),
            Some(Budget::At(Deadline::at(now + Duration::from_secs(5))))
        );
        drop(entered);
        assert_eq!(ambient::peek(), None);
        // Nothing ambient: lending is a no-op.
        let mut clock = AttemptClock::new(
            Budget::NotStarted(Duration::from_secs(1)),
            Arc::new(Spares::default()),
        );
        assert!(poll_once(&mut clock).is_pending());
        assert_eq!(ambient::peek(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_budget_lends_nothing() {
        let _entered = Entered::new(Budget::NotStarted(Duration::from_secs(5)));
        let at = Deadline::after(Duration::from_secs(1));
        let mut clock = AttemptClock::new(Budget::At(at), Arc::new(Spares::default()));
        assert!(poll_once(&mut clock).is_pending());
        assert_eq!(clock.armed_at(), Some(at.instant()));
        assert_eq!(
            ambient::peek(),
            Some(Budget::NotStarted(Duration::from_secs(5)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_handed_back_serves_the_next_attempt_and_ends_it_at_its_own_deadline() {
        let spares = Arc::new(Spares::default());
        let mut first =
            AttemptClock::new(Budget::NotStarted(Duration::from_secs(1)), spares.clone());
        assert!(poll_once(&mut first).is_pending());
        drop(first);
        assert_eq!(spares.idle.lock().unwrap().len(), 1, "handed back");

        tokio::time::sleep(Duration::from_millis(400)).await;
        let start = Instant::now();
        let mut second =
            AttemptClock::new(Budget::NotStarted(Duration::from_secs(1)), spares.clone());
        assert!(poll_once(&mut second).is_pending());
        assert!(
            spares.idle.lock().unwrap().is_empty(),
            "reused, not made anew"
        );
        assert_eq!(second.armed_at(), Some(start + Duration::from_secs(1)));
        // The old deadline (600 ms from here) wakes the attempt without ending it...
        std::future::poll_fn(|cx| second.poll_expired(cx)).await;
        // ...which ends at its own.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        drop(second);

        // A shorter attempt moves the kept timer (now set for later) back to its deadline.
        let start = Instant::now();
        let mut third = AttemptClock::new(
            Budget::At(Deadline::after(Duration::from_millis(200))),
            spares.clone(),
        );
        std::future::poll_fn(|cx| third.poll_expired(cx)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(200));
    }

    #[test]
    fn a_timer_of_another_runtime_is_dropped_not_reused() {
        let spares = Arc::new(Spares::default());
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap()
        };
        let first = runtime();
        first.block_on(async {
            let mut clock =
                AttemptClock::new(Budget::NotStarted(Duration::from_secs(1)), spares.clone());
            assert!(poll_once(&mut clock).is_pending());
        });
        drop(first);
        assert_eq!(spares.idle.lock().unwrap().len(), 1);
        // The first runtime has shut down: polling its timer would panic.
        runtime().block_on(async {
            let start = Instant::now();
            let mut clock =
                AttemptClock::new(Budget::NotStarted(Duration::from_secs(1)), spares.clone());
            std::future::poll_fn(|cx| clock.poll_expired(cx)).await;
            assert_eq!(start.elapsed(), Duration::from_secs(1));
        });
    }
}
