//! The cool-down timer: armed when a breaker opens, it marks the end of the open period in the
//! state word, so a rejection before then needs no clock read.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Wake, Waker};

use super::Breaker;
use super::transition::Transitions;
use super::word::{TIMED, generation};

/// How early the cool-down timer fires: tokio rounds a deadline up to its next millisecond, so
/// a timer set a millisecond early fires no later than the cool-down's end (on a paused clock
/// too), and the exact clock comparison takes over from there.
const TIMER_LEAD: u64 = 1_000_000;

/// The waker of a cool-down timer. The timer driver calls it when the timer fires (or when the
/// runtime shuts down), synchronously, so the flag is down before any task runs again.
pub(super) struct CoolDownEnd<Key> {
    breaker: Weak<Breaker<Key>>,
    generation: u32,
    pub(super) fired: AtomicBool,
}

impl<Key: Send + Sync + 'static> Wake for CoolDownEnd<Key> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Set first: a transition that stores the flag after this checks it and clears the flag.
        self.fired.store(true, Ordering::SeqCst);
        if let Some(breaker) = self.breaker.upgrade() {
            breaker.untime(self.generation);
        }
    }
}

impl<Key> Breaker<Key> {
    /// Clears [`TIMED`] from open period `generation_timed`: its timer fired, or will never fire.
    pub(super) fn untime(&self, generation_timed: u32) {
        let mut word = self.word.load(Ordering::Acquire);
        while generation(word) == generation_timed && word & TIMED != 0 {
            match self.word.compare_exchange_weak(
                word,
                word & !TIMED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }
}

impl<Key: Clone + fmt::Debug + Send + Sync + 'static> Breaker<Key> {
    /// Arms the timer that ends open period `generation_timed` at `until`, when a tokio runtime
    /// is current; `None` if none was armed (rejections then read the clock).
    #[cold]
    pub(super) fn arm_timer(
        &self,
        guard: &mut Transitions,
        generation_timed: u32,
        until: u64,
    ) -> Option<Arc<CoolDownEnd<Key>>> {
        // A timer of an earlier period is of no use now (and may belong to a runtime since shut
        // down, which would fail to reset it): a fresh one every trip.
        guard.timer = None;
        if !self.settings().cool_down_timer || tokio::runtime::Handle::try_current().is_err() {
            return None;
        }
        let end = Arc::new(CoolDownEnd {
            breaker: self.this.clone(),
            generation: generation_timed,
            fired: AtomicBool::new(false),
        });
        let waker = Waker::from(end.clone());
        let deadline = self.clock().instant(until.saturating_sub(TIMER_LEAD));
        let mut sleep = Box::pin(tokio::time::sleep_until(deadline));
        if sleep
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready()
        {
            return None;
        }
        guard.timer = Some(sleep);
        Some(end)
    }
}
