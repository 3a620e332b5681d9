//! [`Handle`] (send, state, shutdown) and [`Events`] (the incoming stream).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use backstop_classify::Error;
use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::state::{Event, State};

/// Why [`Handle::send`] did not take a message; the message comes back with the error, so
/// nothing is dropped silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError<M> {
    /// The outbound queue is full (typically during an outage): the message was not queued.
    Full(M),
    /// The supervisor has stopped: the message was not queued.
    Stopped(M),
}

impl<M> SendError<M> {
    /// The message that was not queued.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full(m) | SendError::Stopped(m) => m,
        }
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("outbound queue full; message not queued"),
            SendError::Stopped(_) => f.write_str("supervisor stopped; message not queued"),
        }
    }
}

impl<M: fmt::Debug> std::error::Error for SendError<M> {}

/// Sends through, observes and stops a supervisor. Cheap to clone; dropping every handle shuts
/// the supervisor down as [`shutdown`](Handle::shutdown) does.
pub struct Handle<M> {
    pub(crate) tx: mpsc::Sender<M>,
    pub(crate) state: watch::Receiver<State>,
    pub(crate) cancel: CancellationToken,
    /// Cancels the supervisor when the last handle is dropped: nobody could send or stop it.
    pub(crate) _last: Arc<DropGuard>,
}

impl<M> Clone for Handle<M> {
    fn clone(&self) -> Self {
        Handle {
            tx: self.tx.clone(),
            state: self.state.clone(),
            cancel: self.cancel.clone(),
            _last: Arc::clone(&self._last),
        }
    }
}

impl<M> fmt::Debug for Handle<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl<M> Handle<M> {
    /// Queues `msg` for the current or the next connection, without waiting.
    ///
    /// Fails with [`SendError::Full`] when `queue_capacity` messages are already waiting (during
    /// an outage) and [`SendError::Stopped`] after the supervisor stopped; either way the message
    /// is handed back.
    pub fn send(&self, msg: M) -> Result<(), SendError<M>> {
        self.tx.try_send(msg).map_err(|err| match err {
            mpsc::error::TrySendError::Full(m) => SendError::Full(m),
            mpsc::error::TrySendError::Closed(m) => SendError::Stopped(m),
        })
    }

    /// Queues `msg`, waiting for room in the queue; fails only when the supervisor stopped.
    pub async fn send_wait(&self, msg: M) -> Result<(), SendError<M>> {
        self.tx
            .send(msg)
            .await
            .map_err(|mpsc::error::SendError(m)| SendError::Stopped(m))
    }

    /// The supervisor's state, to read now or to watch for changes.
    pub fn state(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    /// Stops the supervisor: the current connection is closed (bounded by a short timeout) and
    /// every message not sent is handed back as [`Event::Unconfirmed`]. Resolves once it has
    /// stopped, with the reason it stopped (`None` for this shutdown).
    pub async fn shutdown(&self) -> Option<Arc<Error>> {
        self.cancel.cancel();
        self.stopped().await
    }

    /// Resolves once the supervisor has stopped, for whatever reason.
    pub async fn stopped(&self) -> Option<Arc<Error>> {
        let mut state = self.state.clone();
        loop {
            if let State::Stopped { error } = &*state.borrow_and_update() {
                return error.clone();
            }
            if state.changed().await.is_err() {
                // The task is gone; its last published state says why.
                return match &*state.borrow() {
                    State::Stopped { error } => error.clone(),
                    _ => None,
                };
            }
        }
    }
}

/// The incoming side: messages and connection events, surviving reconnections. Ends after
/// [`Event::Stopped`].
pub struct Events<M> {
    pub(crate) rx: mpsc::Receiver<Event<M>>,
}

impl<M> fmt::Debug for Events<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl<M> Events<M> {
    /// The next event; `None` once the supervisor has stopped and every event was read.
    pub async fn recv(&mut self) -> Option<Event<M>> {
        self.rx.recv().await
    }

    /// The next incoming message, skipping connection events; `None` once stopped.
    pub async fn next_message(&mut self) -> Option<M> {
        while let Some(event) = self.rx.recv().await {
            if let Event::Message(m) = event {
                return Some(m);
            }
        }
        None
    }
}

impl<M> Stream for Events<M> {
    type Item = Event<M>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event<M>>> {
        self.rx.poll_recv(cx)
    }
}
