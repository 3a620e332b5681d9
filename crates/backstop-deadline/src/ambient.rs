//! The *ambient* deadline: the one a server handler is running under, visible to every backstop
//! client called from inside it without anybody passing it along. This is
//! [`backstop_classify::ambient`], re-exported: one thread-local shared by every backstop crate.
//!
//! The server [`DeadlineLayer`](crate::server::DeadlineLayer) sets it around the handler; the
//! client [`DeadlineLayer`](crate::DeadlineLayer) sets it around the layers inside it (by
//! default, instead of touching the request), and reads it, as do
//! [`AttemptTimeout`](crate::AttemptTimeout) and retry (through
//! [`Deadline::current`](crate::Deadline::current)). It behaves as a task-local (set around each poll of the handler, restored after), so it
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

pub use backstop_classify::ambient::{Budget, Entered, Scoped, current, peek, scope, sync_scope};
