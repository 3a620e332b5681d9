//! The *ambient* deadline: the one the current task runs under, visible to every layer called
//! from inside it without anybody passing it along.
//!
//! The server [`DeadlineLayer`](crate::server::ServerDeadlineLayer) sets it around its handler, so a
//! client called from the handler inherits the time left; the client
//! [`DeadlineLayer`](crate::DeadlineLayer) sets it around the layers inside it (retry, attempt
//! timeout), which read it with [`Deadline::current`](crate::Deadline::current) or [`current`].
//! It behaves as a task-local (set around each poll, restored after), so it follows the task that
//! polls: work moved to another task with `tokio::spawn` does not inherit it unless wrapped with
//! [`scope`]:
//!
//! ```
//! use std::time::Duration;
//! use backstop_deadline::{Deadline, ambient};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let deadline = Deadline::after(Duration::from_secs(1));
//! ambient::scope(deadline, async move {
//!     assert_eq!(ambient::current(), Some(deadline));
//!     // Carry it into a task of its own.
//!     let carried = ambient::current().map(|d| ambient::scope(d, async { ambient::current() }));
//!     if let Some(task) = carried {
//!         assert_eq!(tokio::spawn(task).await.ok().flatten(), Some(deadline));
//!     }
//! })
//! .await;
//! assert_eq!(ambient::current(), None);
//! # }
//! ```
//!
//! # Deadlines that start when first needed
//! A layer may set a [`Budget::NotStarted`] timeout instead of an instant: the clock is read only
//! when somebody asks ([`current`] fixes it then, for everybody inside the same [`Entered`]), so a
//! call that completes without anybody asking never reads the clock. [`peek`] looks without
//! starting it.

use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;

use crate::Deadline;

thread_local! {
    // Hand-rolled rather than `tokio::task_local!`, whose value is set only by `scope` (which
    // wraps, and so retypes, a whole future) or `sync_scope` (a closure): the layers set it with
    // a guard around a synchronous `call` and around each poll of a future they keep in their own
    // state, and a read must be able to write — the first read of a budget that has not started
    // fixes its instant for everybody inside the same scope, and the layer that set it learns
    // that instant when it leaves. Set only for the duration of a poll or call and restored
    // afterwards (also when unwinding), it behaves as a task-local; a `Cell` of a `Copy` value
    // without a destructor makes entering, leaving and reading a few loads and stores, with no
    // lazy registration.
    static AMBIENT: Cell<Option<Budget>> = const { Cell::new(None) };
}

/// An ambient deadline as set: an instant, or a timeout whose clock has not started yet.
///
/// ```
/// use std::time::Duration;
/// use backstop_deadline::ambient::{self, Budget, Entered};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let entered = Entered::new(Budget::NotStarted(Duration::from_secs(2)));
/// assert_eq!(ambient::peek(), Some(Budget::NotStarted(Duration::from_secs(2))));
/// let fixed = ambient::current().unwrap(); // reads the clock: 2 s from now
/// assert_eq!(fixed.remaining(), Duration::from_secs(2));
/// assert_eq!(entered.leave(), Budget::At(fixed)); // the layer learns the instant it started at
/// assert_eq!(ambient::peek(), None);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// A deadline fixed in time.
    At(Deadline),
    /// This long from the first moment anybody needs the deadline.
    NotStarted(Duration),
}

impl Budget {
    /// The deadline, reading the clock if it has not started yet.
    pub fn start(self) -> Deadline {
        match self {
            Budget::At(deadline) => deadline,
            Budget::NotStarted(timeout) => Deadline::after(timeout),
        }
    }

    /// The deadline, its clock started at `now` if it had not started.
    #[inline]
    pub(crate) fn start_at(self, now: tokio::time::Instant) -> Deadline {
        match self {
            Budget::At(deadline) => deadline,
            Budget::NotStarted(timeout) => Deadline::after_from(now, timeout),
        }
    }

    /// The deadline if it has started.
    pub fn started(self) -> Option<Deadline> {
        match self {
            Budget::At(deadline) => Some(deadline),
            Budget::NotStarted(_) => None,
        }
    }
}

/// The ambient deadline of the current task, if it runs under one. A deadline that has
/// [not started](Budget::NotStarted) starts now, for everybody inside the same scope.
#[inline]
pub fn current() -> Option<Deadline> {
    AMBIENT.with(|slot| match slot.get() {
        None => None,
        Some(Budget::At(deadline)) => Some(deadline),
        Some(budget @ Budget::NotStarted(_)) => {
            let deadline = budget.start();
            slot.set(Some(Budget::At(deadline)));
            Some(deadline)
        }
    })
}

/// Starts the ambient deadline's clock at `now`, if there is one that has not started: a
/// layer inside that has just read the clock to start its own lends it that reading.
#[inline]
pub(crate) fn start_at(now: tokio::time::Instant) {
    AMBIENT.with(|slot| {
        if let Some(budget @ Budget::NotStarted(_)) = slot.get() {
            slot.set(Some(Budget::At(budget.start_at(now))));
        }
    });
}

/// The ambient deadline as set, without starting one that has not started.
#[inline]
pub fn peek() -> Option<Budget> {
    AMBIENT.with(Cell::get)
}

/// Runs `future` under `deadline`, or under the ambient deadline already in force if that one is
/// earlier: a nested scope never extends its caller's.
pub fn scope<F: Future>(deadline: Deadline, future: F) -> Scoped<F> {
    Scoped {
        deadline: earliest_with_current(deadline),
        future,
    }
}

/// Runs `f` under `deadline` (or the earlier ambient one), synchronously.
pub fn sync_scope<R>(deadline: Deadline, f: impl FnOnce() -> R) -> R {
    let _entered = Entered::new(Budget::At(earliest_with_current(deadline)));
    f()
}

/// The ambient deadline set until dropped (or [left](Entered::leave)), then the outer one
/// restored, also when unwinding. A guard rather than a closure so that a layer need not move its
/// request into one. It is set as given: the caller folds in any outer deadline it must respect
/// (with [`current`]); prefer [`scope`] and [`sync_scope`], which do.
///
/// Not `Send`: it belongs to the poll (or call) it was made in and must not be held across an
/// `.await`.
#[derive(Debug)]
#[must_use = "the ambient deadline is restored as soon as the guard is dropped"]
pub struct Entered {
    entered: Budget,
    outer: Option<Budget>,
    _not_send: PhantomData<*const ()>,
}

impl Entered {
    /// Sets `budget` as the ambient deadline until the guard is dropped.
    #[inline]
    pub fn new(budget: Budget) -> Entered {
        Entered {
            entered: budget,
            outer: AMBIENT.with(|slot| slot.replace(Some(budget))),
            _not_send: PhantomData,
        }
    }

    /// Restores the outer deadline and returns this one as it was left: [`Budget::At`] if
    /// somebody inside started it, so the layer that set it keeps the same instant from then on.
    #[inline]
    pub fn leave(self) -> Budget {
        // `self` restores the outer value when it drops at the end of this function.
        self.inside()
    }

    /// This guard's budget as it is now: [`Budget::At`] if somebody inside started it.
    #[inline]
    pub(crate) fn inside(&self) -> Budget {
        // Only nested guards wrote to the slot meanwhile, and each restored what it found, so the
        // slot holds this guard's budget (started or not).
        AMBIENT.with(Cell::get).unwrap_or(self.entered)
    }
}

impl Drop for Entered {
    #[inline]
    fn drop(&mut self) {
        AMBIENT.with(|slot| slot.set(self.outer));
    }
}

fn earliest_with_current(deadline: Deadline) -> Deadline {
    match current() {
        Some(outer) => outer.earliest(deadline),
        None => deadline,
    }
}

pin_project! {
    /// A future running under an ambient deadline, returned by [`scope`].
    #[derive(Debug)]
    pub struct Scoped<F> {
        deadline: Deadline,
        #[pin]
        future: F,
    }
}

impl<F> Scoped<F> {
    /// The deadline the future runs under.
    pub fn deadline(&self) -> Deadline {
        self.deadline
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = Entered::new(Budget::At(*this.deadline));
        this.future.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_deadline_not_started_starts_when_first_read_and_stays_fixed() {
        let entered = Entered::new(Budget::NotStarted(Duration::from_secs(1)));
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Nothing asked yet: the second of the budget is all still there.
        assert_eq!(peek(), Some(Budget::NotStarted(Duration::from_secs(1))));
        let first = current().unwrap();
        assert_eq!(first.remaining(), Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(current(), Some(first), "read again, it does not restart");
        assert_eq!(entered.leave(), Budget::At(first));
        assert_eq!(peek(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn nested_guards_restore_in_order_and_report_what_was_started_inside() {
        let outer = Entered::new(Budget::NotStarted(Duration::from_secs(5)));
        {
            let near = Deadline::after(Duration::from_secs(1));
            let inner = Entered::new(Budget::At(near));
            assert_eq!(current(), Some(near));
            assert_eq!(inner.leave(), Budget::At(near));
        }
        // The inner guard neither started nor replaced the outer budget.
        assert_eq!(peek(), Some(Budget::NotStarted(Duration::from_secs(5))));
        let inside = sync_scope(Deadline::after(Duration::from_secs(9)), current).unwrap();
        // The nested scope never extends: it started the outer budget and took the earlier.
        assert_eq!(inside.remaining(), Duration::from_secs(5));
        assert_eq!(outer.leave(), Budget::At(inside));
        assert_eq!(current(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_scoped_future_sees_its_deadline_only_while_polled() {
        let deadline = Deadline::after(Duration::from_secs(1));
        let seen = scope(deadline, async {
            let before = current();
            tokio::task::yield_now().await;
            (before, current())
        })
        .await;
        assert_eq!(seen, (Some(deadline), Some(deadline)));
        assert_eq!(current(), None);
    }
}
