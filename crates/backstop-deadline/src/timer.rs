//! The timer of a layer's response future: not armed (and, for a deadline that has not started,
//! not even read from the clock) until the inner future first has to wait.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Sleep, sleep_until};

use crate::Deadline;
use crate::ambient::{Budget, Entered};

pin_project! {
    // One enum rather than a budget beside an `Option<Sleep>`: the budget is only needed until the
    // sleep exists (which then holds the instant). The sleep is boxed, so that a future which
    // rarely arms its timer stays small (it is moved on every call). (The attempt timeout's
    // clock is [`AttemptClock`](crate::spare::AttemptClock), which reuses its timers.)
    #[derive(Debug)]
    #[project = TimerProj]
    pub(crate) enum Timer {
        Unarmed { budget: Budget },
        Armed { sleep: Pin<Box<Sleep>> },
    }
}

impl Timer {
    #[inline]
    pub(crate) fn new(budget: Budget) -> Self {
        Timer::Unarmed { budget }
    }

    /// The deadline, starting the clock now if it has not started.
    #[inline]
    pub(crate) fn deadline(self: Pin<&mut Self>) -> Deadline {
        match self.project() {
            TimerProj::Unarmed { budget } => {
                let deadline = budget.start();
                *budget = Budget::At(deadline);
                deadline
            }
            TimerProj::Armed { sleep } => Deadline::at(sleep.deadline()),
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
                let _entered = Entered::new(Budget::At(Deadline::at(sleep.deadline())));
                poll()
            }
        }
    }

    /// Arms the timer on first use (starting the clock if needed) and polls it.
    #[inline]
    pub(crate) fn poll_expired(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let TimerProj::Unarmed { budget } = self.as_mut().project() {
            let at = budget.start().instant();
            self.set(Timer::Armed {
                sleep: Box::pin(sleep_until(at)),
            });
        }
        match self.project() {
            TimerProj::Armed { sleep } => sleep.as_mut().poll(cx),
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

    use tokio::time::Instant;

    use super::*;
    use crate::ambient;

    #[tokio::test(start_paused = true)]
    async fn a_timer_starting_its_clock_leaves_the_ambient_deadline_unstarted() {
        let _entered = Entered::new(Budget::NotStarted(Duration::from_secs(5)));
        let mut timer = std::pin::pin!(Timer::new(Budget::NotStarted(Duration::from_secs(1))));
        let now = Instant::now();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(timer.as_mut().poll_expired(&mut cx).is_pending());
        assert_eq!(
            timer.as_mut().deadline(),
            Deadline::at(now + Duration::from_secs(1))
        );
        assert_eq!(
            ambient::peek(),
            Some(Budget::NotStarted(Duration::from_secs(5)))
        );
    }
}
