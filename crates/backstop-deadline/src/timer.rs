//! The timer of a layer's response future: not armed (and, for a deadline that has not started,
//! not even read from the clock) until the inner future first has to wait.

use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use backstop_classify::Deadline;
use backstop_classify::ambient::{Budget, Entered};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

thread_local! {
    // The earliest instant by which a timer armed during the poll in progress (under a
    // `WakeWatch`) wakes the task. An attempt timeout inside a deadline layer reports its timer
    // here, so the deadline layer need not register a second timer that would fire no earlier.
    static WAKE_BY: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Collects, for one poll of an inner future, the earliest instant by which a timer armed
/// inside it (and reported with [`report_wake`]) will wake the task.
pub(crate) struct WakeWatch {
    outer: Option<Instant>,
    _not_send: PhantomData<*const ()>,
}

impl WakeWatch {
    #[inline]
    pub(crate) fn new() -> WakeWatch {
        WakeWatch {
            outer: WAKE_BY.with(|slot| slot.replace(None)),
            _not_send: PhantomData,
        }
    }

    /// The earliest wake reported since [`new`](Self::new).
    #[inline]
    pub(crate) fn finish(self) -> Option<Instant> {
        WAKE_BY.with(Cell::get)
    }
}

impl Drop for WakeWatch {
    #[inline]
    fn drop(&mut self) {
        // A timer inside wakes the task for an enclosing watcher too: keep the earlier. (With
        // no enclosing watcher the slot already holds the right value.)
        if let Some(outer) = self.outer {
            WAKE_BY.with(|slot| slot.set(earlier(Some(outer), slot.get())));
        }
    }
}

fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Tells the enclosing [`WakeWatch`], if any, that a timer registered with the current task's
/// waker will wake it by `at`.
#[inline]
pub(crate) fn report_wake(at: Instant) {
    WAKE_BY.with(|slot| slot.set(earlier(slot.get(), Some(at))));
}

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

    /// Like [`poll_expired`](Self::poll_expired), but leaves the timer unarmed (the clock
    /// started all the same) while a timer inside wakes the task by `wake_by`, no later than
    /// this deadline: that wake re-polls this layer before its deadline has passed, and the
    /// decision is made again then.
    #[inline]
    pub(crate) fn poll_expired_unless_woken(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        wake_by: Option<Instant>,
    ) -> Poll<()> {
        if let Some(wake_by) = wake_by
            && let TimerProj::Unarmed { budget } = self.as_mut().project()
        {
            let deadline = budget.start();
            *budget = Budget::At(deadline);
            if wake_by <= deadline.instant() {
                return Poll::Pending;
            }
        }
        self.poll_expired(cx)
    }

    /// The instant this timer is armed for, if it is.
    #[inline]
    pub(crate) fn armed_at(&self) -> Option<Instant> {
        match self {
            Timer::Armed { sleep } => Some(sleep.at()),
            Timer::Unarmed { .. } => None,
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
