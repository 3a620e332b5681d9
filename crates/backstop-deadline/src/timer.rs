//! The timer of a layer's response future: not armed (and, for a deadline that has not started,
//! not even read from the clock) until the inner future first has to wait.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use backstop_classify::Deadline;
use backstop_classify::ambient::{Budget, Entered};
use pin_project_lite::pin_project;
use tokio::time::{Sleep, sleep_until};

pin_project! {
    // One enum rather than a budget beside an `Option<Sleep>`: the budget is only needed until the
    // sleep exists (which then holds the instant), and the future stays as small as the sleep.
    #[derive(Debug)]
    #[project = TimerProj]
    pub(crate) enum Timer {
        Unarmed { budget: Budget },
        Armed {
            #[pin]
            sleep: Sleep,
        },
    }
}

impl Timer {
    #[inline]
    pub(crate) fn new(budget: Budget) -> Timer {
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
            TimerProj::Armed { sleep } => Deadline::at(sleep.deadline()),
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
                let _entered = Entered::new(Budget::At(Deadline::at(sleep.deadline())));
                poll()
            }
        }
    }

    /// Arms the timer on first use (starting the clock if needed) and polls it.
    pub(crate) fn poll_expired(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let TimerProj::Unarmed { budget } = self.as_mut().project() {
            let at = budget.start().instant();
            self.set(Timer::Armed {
                sleep: sleep_until(at),
            });
        }
        match self.project() {
            TimerProj::Armed { sleep } => sleep.poll(cx),
            // Armed just above.
            TimerProj::Unarmed { .. } => Poll::Pending,
        }
    }
}
