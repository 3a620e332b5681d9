//! The timer of a layer's response future: not armed (and, for a deadline that has not started,
//! not even read from the clock) until the inner future first has to wait.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::Deadline;
use crate::ambient::{Budget, Entered};

/// Where an armed [`Timer`] keeps its `Sleep`: in place, or boxed so that a future which rarely
/// arms its timer stays small (it is moved on every call).
pub(crate) trait SleepSlot: Future<Output = ()> {
    fn until(at: Instant) -> Self;
    fn at(&self) -> Instant;
}

impl SleepSlot for Sleep {
    #[inline]
    fn until(at: Instant) -> Self {
        sleep_until(at)
    }

    #[inline]
    fn at(&self) -> Instant {
        self.deadline()
    }
}

impl SleepSlot for Pin<Box<Sleep>> {
    fn until(at: Instant) -> Self {
        Box::pin(sleep_until(at))
    }

    #[inline]
    fn at(&self) -> Instant {
        self.deadline()
    }
}

pin_project! {
    // One enum rather than a budget beside an `Option<Sleep>`: the budget is only needed until the
    // sleep exists (which then holds the instant).
    #[derive(Debug)]
    #[project = TimerProj]
    pub(crate) enum Timer<S = Sleep> {
        Unarmed { budget: Budget },
        Armed {
            #[pin]
            sleep: S,
        },
    }
}

impl<S: SleepSlot> Timer<S> {
    #[inline]
    pub(crate) fn new(budget: Budget) -> Self {
        Timer::Unarmed { budget }
    }

    /// The deadline, starting the clock now if it has not started.
    pub(crate) fn deadline(self: Pin<&mut Self>) -> Deadline {
        match self.project() {
            TimerProj::Unarmed { budget } => {
                let deadline = budget.start();
                *budget = Budget::At(deadline);
                deadline
            }
            TimerProj::Armed { sleep } => Deadline::at(sleep.at()),
        }
    }

    /// Runs `poll` (of the inner future, or its `call`) with this deadline ambient, and keeps the
    /// instant if somebody inside started the clock.
    #[inline]
    pub(crate) fn run<R>(self: Pin<&mut Self>, poll: impl FnOnce() -> R) -> R {
        match self.project() {
            TimerProj::Unarmed { budget } => {
                // A guard keeps the instant (when dropped, after `poll`) rather than a `leave`
                // after it: the result, a whole response, is then returned where it was built
                // instead of being copied past the bookkeeping.
                let _keep = KeepStarted {
                    entered: Entered::new(*budget),
                    budget,
                };
                poll()
            }
            TimerProj::Armed { sleep } => {
                let _entered = Entered::new(Budget::At(Deadline::at(sleep.at())));
                poll()
            }
        }
    }

    /// Arms the timer on first use (starting the clock if needed) and polls it.
    pub(crate) fn poll_expired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_expired_with(cx, false)
    }

    /// As [`poll_expired`](Self::poll_expired), and a clock it starts starts the ambient
    /// deadline's too, if that has not started: for a timer inside a client `DeadlineLayer`,
    /// whose clock starts at this same poll anyway (the call has had to wait), one reading of
    /// the clock instead of two.
    pub(crate) fn poll_expired_lending_start(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        self.poll_expired_with(cx, true)
    }

    #[inline]
    fn poll_expired_with(mut self: Pin<&mut Self>, cx: &mut Context<'_>, lend: bool) -> Poll<()> {
        if let TimerProj::Unarmed { budget } = self.as_mut().project() {
            let at = match *budget {
                Budget::At(deadline) => deadline.instant(),
                Budget::NotStarted(_) => {
                    let now = Instant::now();
                    if lend {
                        crate::ambient::start_at(now);
                    }
                    budget.start_at(now).instant()
                }
            };
            self.set(Timer::Armed {
                sleep: S::until(at),
            });
        }
        match self.project() {
            TimerProj::Armed { sleep } => sleep.poll(cx),
            // Armed just above.
            TimerProj::Unarmed { .. } => Poll::Pending,
        }
    }
}

/// Keeps, when dropped, the budget as the code inside left it (started or not); then the
/// ambient deadline is restored.
struct KeepStarted<'a> {
    entered: Entered,
    budget: &'a mut Budget,
}

impl Drop for KeepStarted<'_> {
    #[inline]
    fn drop(&mut self) {
        *self.budget = self.entered.inside();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;
    use crate::ambient;

    fn poll_once(timer: Pin<&mut Timer>, lend: bool) -> Poll<()> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if lend {
            timer.poll_expired_lending_start(&mut cx)
        } else {
            timer.poll_expired(&mut cx)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_lending_its_start_starts_the_ambient_deadline_at_the_same_instant() {
        let entered = Entered::new(Budget::NotStarted(Duration::from_secs(5)));
        let mut timer = std::pin::pin!(Timer::new(Budget::NotStarted(Duration::from_secs(1))));
        let now = Instant::now();
        assert!(poll_once(timer.as_mut(), true).is_pending());
        assert_eq!(
            timer.as_mut().deadline(),
            Deadline::at(now + Duration::from_secs(1))
        );
        assert_eq!(
            ambient::peek(),
            Some(Budget::At(Deadline::at(now + Duration::from_secs(5))))
        );
        // Started once: a later reading finds the same instant.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            ambient::current(),
            Some(Deadline::at(now + Duration::from_secs(5)))
        );
        drop(entered);
        assert_eq!(ambient::peek(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_that_does_not_lend_leaves_the_ambient_deadline_unstarted() {
        let _entered = Entered::new(Budget::NotStarted(Duration::from_secs(5)));
        let mut timer = std::pin::pin!(Timer::new(Budget::NotStarted(Duration::from_secs(1))));
        assert!(poll_once(timer.as_mut(), false).is_pending());
        assert_eq!(
            ambient::peek(),
            Some(Budget::NotStarted(Duration::from_secs(5)))
        );
        // Nothing ambient: lending is a no-op.
        drop(_entered);
        let mut timer = std::pin::pin!(Timer::new(Budget::NotStarted(Duration::from_secs(1))));
        assert!(poll_once(timer.as_mut(), true).is_pending());
        assert_eq!(ambient::peek(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_budget_lends_nothing() {
        let _entered = Entered::new(Budget::NotStarted(Duration::from_secs(5)));
        let at = Deadline::after(Duration::from_secs(1));
        let mut timer = std::pin::pin!(Timer::new(Budget::At(at)));
        assert!(poll_once(timer.as_mut(), true).is_pending());
        assert_eq!(timer.as_mut().deadline(), at);
        assert_eq!(
            ambient::peek(),
            Some(Budget::NotStarted(Duration::from_secs(5)))
        );
    }
}
