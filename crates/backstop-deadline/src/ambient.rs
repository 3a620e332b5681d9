//! The *ambient* deadline: the one a server handler is running under, visible to every backstop
//! client called from inside it without anybody passing it along.
//!
//! The server [`DeadlineLayer`](crate::server::DeadlineLayer) sets it around the handler; the
//! client [`DeadlineLayer`](crate::DeadlineLayer) and [`AttemptTimeout`](crate::AttemptTimeout)
//! read it. It behaves as a task-local (set around each poll of the handler, restored after), so it
//! follows the handler's own task: work moved to another task with `tokio::spawn` does not inherit
//! it unless wrapped with [`scope`]:
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

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use backstop_classify::Deadline;
use pin_project_lite::pin_project;

thread_local! {
    // Set only for the duration of a poll (or a synchronous call) and restored afterwards, so it
    // behaves as a task-local: whoever runs next on this thread sees its own value. A `Cell` of a
    // `Copy` value makes entering and leaving a few loads and stores.
    static AMBIENT: Cell<Option<Deadline>> = const { Cell::new(None) };
}

/// The ambient deadline of the current task, if it runs under one.
pub fn current() -> Option<Deadline> {
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
    enter(earliest_with_current(deadline), f)
}

/// Like [`sync_scope`] without consulting the current value: the caller already folded it in.
pub(crate) fn enter<R>(deadline: Deadline, f: impl FnOnce() -> R) -> R {
    let _entered = Entered::new(deadline);
    f()
}

/// The ambient deadline set until dropped, then the outer one restored (also when unwinding).
/// A guard rather than a closure so that callers need not move their request into one.
pub(crate) struct Entered(Option<Deadline>);

impl Entered {
    #[inline]
    pub(crate) fn new(deadline: Deadline) -> Entered {
        Entered(AMBIENT.with(|ambient| ambient.replace(Some(deadline))))
    }
}

impl Drop for Entered {
    #[inline]
    fn drop(&mut self) {
        AMBIENT.with(|ambient| ambient.set(self.0));
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
        enter(*this.deadline, || this.future.poll(cx))
    }
}
