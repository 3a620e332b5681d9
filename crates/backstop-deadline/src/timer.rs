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
                let entered = Entered::new(*budget);
                let result = poll();
                *budget = entered.leave();
                result
            }
            TimerProj::Armed { sleep } => {
                let _entered = Entered::new(Budget::At(Deadline::at(sleep.at())));
                poll()
            }
        }
    }

    /// Arms the timer on first use (starting the clock if needed) and polls it.
    pub(crate) fn poll_expired(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let TimerProj::Unarmed { budget } = self.as_mut().project() {
            let at = budget.start().instant();
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
