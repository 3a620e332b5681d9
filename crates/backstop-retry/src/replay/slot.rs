//! The hand-off: the attempt being polled takes the shared state out of its slot, owns it while
//! the caller's body runs, and puts it back — even when that body panics.

use std::mem;
use std::sync::Mutex;
use std::task::Waker;

use bytes::Bytes;

use super::{Cursor, Slot, State, TOO_LARGE, lock};

/// Puts `state` back in its slot and wakes the attempt that waited for it, if any.
fn put<B>(slot: &Mutex<Slot<B>>, state: State<B>) {
    let waiter = {
        let mut slot = lock(slot);
        slot.refusal = state.refusal;
        slot.state = Some(state);
        slot.waiter.take()
    };
    // Woken outside the lock: waking runs the executor's code.
    if let Some(waiter) = waiter {
        waiter.wake();
    }
}

/// What an attempt gets when it asks the slot for the state.
pub(super) enum Take<'a, B> {
    Owned(Held<'a, B>),
    /// A newer attempt exists.
    Superseded,
    /// An older attempt is polling with it; the waker will be woken when it is back.
    Busy,
}

/// The state, owned by the attempt polling with it; put back when dropped, even by a panic of
/// the caller's body, so a waiting attempt is never stranded.
pub(super) struct Held<'a, B> {
    pub(super) slot: &'a Mutex<Slot<B>>,
    pub(super) state: State<B>,
    /// Set once the caller's code (its poll, its hints) returned: if it is still unset when the
    /// state is put back, that code panicked.
    pub(super) finished: bool,
}

impl<B> Drop for Held<'_, B> {
    fn drop(&mut self) {
        let mut state = mem::replace(&mut self.state, State::vacant());
        if !self.finished {
            // The caller's body panicked: it is in no state to be polled again.
            // It is dropped later with the rest, not here during the unwinding.
            state.broken = true;
            state.refuse("the request body panicked while it was being sent");
        }
        put(self.slot, state);
    }
}

impl<B> State<B> {
    /// A state with nothing in it, standing in for the real one while that is being put back.
    /// It allocates nothing.
    fn vacant() -> State<B> {
        State {
            cursor: Cursor::new(0),
            body: None,
            chunks: Vec::new(),
            read: 0,
            limit: 0,
            too_large: TOO_LARGE,
            trailers: None,
            ended: true,
            broken: false,
            refusal: None,
        }
    }

    pub(super) fn keep(&mut self, bytes: &Bytes) {
        let len = bytes.len() as u64;
        self.read = self.read.saturating_add(len);
        if self.refusal.is_some() || bytes.is_empty() {
            return;
        }
        if self.read > self.limit as u64 {
            self.refuse(self.too_large);
            return;
        }
        self.chunks.push(bytes.clone());
    }

    pub(super) fn refuse(&mut self, why: &'static str) {
        self.refusal.get_or_insert(why);
        self.chunks = Vec::new();
    }
}

/// Takes the state out of `slot` for the attempt of `generation`, or registers `waker` to be
/// woken when an older attempt's poll puts it back.
pub(super) fn take<'a, B>(slot: &'a Mutex<Slot<B>>, generation: u32, waker: &Waker) -> Take<'a, B> {
    let (take, replaced) = {
        let mut guard = lock(slot);
        if guard.generation != generation {
            return Take::Superseded;
        }
        match guard.state.take() {
            Some(state) => (
                Take::Owned(Held {
                    slot,
                    state,
                    finished: false,
                }),
                None,
            ),
            None => {
                let replaced = match &guard.waiter {
                    Some(waiter) if waiter.will_wake(waker) => None,
                    _ => guard.waiter.replace(waker.clone()),
                };
                (Take::Busy, replaced)
            }
        }
    };
    // Dropped outside the lock: dropping a waker runs the executor's code.
    drop(replaced);
    take
}
