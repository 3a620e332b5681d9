//! [`Deadline`]: the instant by which a whole call must be done, shared by every layer.
//!
//! The deadline layer makes it [ambient](mod@crate::ambient) around the layers inside it, or puts
//! it in the request's extensions; those layers (retry, attempt timeout) read it with
//! [`Deadline::current`] to clamp sleeps and bound attempts. A layer that only reads a deadline
//! (backstop-retry) depends on this crate for it; the arrow runs one way, from the readers to
//! here.

use std::time::Duration;

use http::Request;
use tokio::time::Instant;

/// The instant by which a call must be done, on tokio's clock (so it pauses with
/// `tokio::time::pause` in tests).
///
/// ```
/// use std::time::Duration;
/// use backstop_deadline::Deadline;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let deadline = Deadline::after(Duration::from_secs(2));
/// tokio::time::sleep(Duration::from_millis(500)).await;
/// assert_eq!(deadline.remaining(), Duration::from_millis(1500));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline {
    at: Instant,
}

/// How far ahead a deadline may lie: longer timeouts are clamped to it ([`Deadline::after`], the
/// client [`DeadlineLayer`](crate::DeadlineLayer)) so instant arithmetic can never overflow
/// (about 30 years, as tokio's own "far future").
pub const MAX_DEADLINE_AHEAD: Duration = Duration::from_secs(86_400 * 365 * 30);

impl Deadline {
    /// The deadline at `at`.
    pub fn at(at: Instant) -> Deadline {
        Deadline { at }
    }

    /// The deadline `timeout` from now (clamped to [`MAX_DEADLINE_AHEAD`]).
    pub fn after(timeout: Duration) -> Deadline {
        Deadline::after_from(Instant::now(), timeout)
    }

    /// The deadline `timeout` after `now` (clamped as [`Deadline::after`]).
    #[inline]
    pub(crate) fn after_from(now: Instant, timeout: Duration) -> Deadline {
        Deadline {
            at: now + timeout.min(MAX_DEADLINE_AHEAD),
        }
    }

    /// The instant itself.
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// The time left; zero once expired.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn is_expired(&self) -> bool {
        Instant::now() >= self.at
    }

    /// The earlier of two deadlines: nested calls never extend their caller's.
    #[must_use]
    pub fn earliest(self, other: Deadline) -> Deadline {
        self.min(other)
    }

    /// The deadline carried by a request, if any.
    pub fn of<B>(req: &Request<B>) -> Option<Deadline> {
        req.extensions().get::<Deadline>().copied()
    }

    /// The deadline `req` must meet: the one in its extensions ([`Deadline::of`]) or the
    /// [ambient](mod@crate::ambient) one of the task, the earlier if both are set. This is what a
    /// layer inside a deadline layer should read: the client deadline layer carries its deadline
    /// ambiently by default, without touching the request.
    ///
    /// ```
    /// use std::time::Duration;
    /// use backstop_deadline::{Deadline, ambient};
    /// use http::Request;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut req = Request::new(());
    /// assert_eq!(Deadline::current(&req), None);
    /// let near = Deadline::after(Duration::from_secs(1));
    /// let far = Deadline::after(Duration::from_secs(5));
    /// ambient::sync_scope(near, || assert_eq!(Deadline::current(&req), Some(near)));
    /// far.apply(&mut req);
    /// assert_eq!(Deadline::current(&req), Some(far));
    /// ambient::sync_scope(near, || assert_eq!(Deadline::current(&req), Some(near)));
    /// # }
    /// ```
    #[inline]
    pub fn current<B>(req: &Request<B>) -> Option<Deadline> {
        Deadline::current_in(req.extensions())
    }

    /// [`Deadline::current`] for a request already split into parts: the deadline in
    /// `extensions` or the ambient one, the earlier if both are set.
    #[inline]
    pub fn current_in(extensions: &http::Extensions) -> Option<Deadline> {
        let ambient = crate::ambient::current();
        match extensions.get::<Deadline>().copied() {
            Some(carried) => Some(ambient.map_or(carried, |a| a.earliest(carried))),
            None => ambient,
        }
    }

    /// Puts `self` on the request, keeping an earlier deadline already there.
    pub fn apply<B>(self, req: &mut Request<B>) -> Deadline {
        let effective = match Deadline::of(req) {
            Some(existing) => existing.earliest(self),
            None => self,
        };
        req.extensions_mut().insert(effective);
        effective
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn remaining_counts_down_and_saturates() {
        let deadline = Deadline::after(Duration::from_secs(1));
        assert!(!deadline.is_expired());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(deadline.is_expired());
        assert_eq!(deadline.remaining(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn apply_keeps_the_earlier_deadline() {
        let mut req = Request::new(());
        let near = Deadline::after(Duration::from_secs(1));
        let far = Deadline::after(Duration::from_secs(10));
        near.apply(&mut req);
        assert_eq!(far.apply(&mut req), near);
        assert_eq!(Deadline::of(&req), Some(near));
        let absurd = Deadline::after(Duration::MAX);
        assert!(absurd > far);
    }
}
