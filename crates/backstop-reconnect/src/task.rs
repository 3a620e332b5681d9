//! The supervisor's task: connect, serve, classify the end, back off, again.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use backstop_classify::{Error, Kind, Phase, Timer};
use backstop_retry::Backoff;
use futures_util::{SinkExt, StreamExt};
use rand::rngs::SmallRng;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::connector::Connector;
use crate::heartbeat::Heartbeat;
use crate::state::{Event, State};
use crate::supervisor::{AckBox, Delivery, HookBox};

/// How long a shutdown waits for the connection to close cleanly.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) struct Task<C: Connector> {
    pub(crate) connector: C,
    pub(crate) backoff: Backoff,
    pub(crate) healthy_after: Duration,
    pub(crate) attempt_timeout: Duration,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) max_elapsed: Option<Duration>,
    pub(crate) unacked_capacity: usize,
    pub(crate) delivery: Delivery,
    pub(crate) heartbeat: Option<Heartbeat<C::Msg>>,
    pub(crate) on_connect: Option<HookBox<C::Conn>>,
    pub(crate) acknowledged_by: Option<AckBox<C::Msg>>,
    pub(crate) rng: SmallRng,
    pub(crate) rx: mpsc::Receiver<C::Msg>,
    pub(crate) events: mpsc::Sender<Event<C::Msg>>,
    pub(crate) state: watch::Sender<State>,
    pub(crate) cancel: CancellationToken,
    /// Messages to send before any new one from the queue: the in-flight messages of a lost
    /// connection under at-least-once.
    pub(crate) pending: VecDeque<C::Msg>,
    /// Messages written on the current connection and not yet confirmed, oldest first.
    pub(crate) unacked: VecDeque<C::Msg>,
}

/// How serving one connection ended.
enum End {
    Failed(Error),
    Shutdown,
}

impl<C: Connector> Task<C> {
    pub(crate) async fn run(mut self) {
        let error = self.supervise().await.map(Arc::new);
        self.finish(error).await;
    }

    /// Returns the give-up error, or `None` when told to stop.
    async fn supervise(&mut self) -> Option<Error> {
        let cancel = self.cancel.clone();
        // Consecutive failures since the last healthy connection: the backoff's retry number.
        let mut failures: u32 = 0;
        let mut previous_delay = Duration::ZERO;
        let mut streak_start = Instant::now();
        let mut connections: u64 = 0;
        loop {
            debug!(attempt = failures + 1, "connecting");
            let attempt_timeout = self.attempt_timeout;
            let outcome = tokio::select! {
                biased;
                _ = cancel.cancelled() => return None,
                outcome = timeout(attempt_timeout, self.establish()) => outcome,
            };
            let (error, event) = match outcome {
                Err(_) => {
                    let error = Arc::new(
                        Error::new(Kind::TimedOut(Timer::Attempt), Phase::Connect)
                            .with_source(Reason("connect and on-connect hook took too long")),
                    );
                    (error.clone(), attempt_failed(failures + 1, error))
                }
                Ok(Err(error)) => {
                    let error = Arc::new(error);
                    (error.clone(), attempt_failed(failures + 1, error))
                }
                Ok(Ok(mut conn)) => {
                    connections += 1;
                    let since = Instant::now();
                    info!(connection = connections, "connected");
                    self.state.send_replace(State::Connected {
                        connection: connections,
                    });
                    self.emit(Event::Connected {
                        connection: connections,
                    })
                    .await;
                    match self.serve(&mut conn).await {
                        End::Shutdown => {
                            // A clean close tells the peer we left on purpose; bounded, since
                            // a dead peer would never answer.
                            let _ = timeout(CLOSE_TIMEOUT, conn.close()).await;
                            return None;
                        }
                        End::Failed(error) => {
                            let up_for = since.elapsed();
                            if up_for >= self.healthy_after {
                                // Only a connection that proved healthy resets the backoff, so
                                // a server that accepts and drops cannot make us spin.
                                failures = 0;
                                previous_delay = Duration::ZERO;
                                streak_start = Instant::now();
                            }
                            warn!(
                                kind = error.kind().name(),
                                phase = error.phase().name(),
                                up_for = ?up_for,
                                error = %error,
                                "disconnected"
                            );
                            self.lost_in_flight().await;
                            let error = Arc::new(error);
                            (
                                error.clone(),
                                Event::Disconnected {
                                    error: error.clone(),
                                },
                            )
                        }
                    }
                }
            };
            if let Event::AttemptFailed { .. } = &event {
                warn!(
                    attempt = failures + 1,
                    kind = error.kind().name(),
                    phase = error.phase().name(),
                    error = %error,
                    "connection attempt failed"
                );
            }
            self.emit(event).await;

            failures = failures.saturating_add(1);
            if let Some(max) = self.max_attempts
                && failures >= max
            {
                return Some(give_up(error, failures, "max_attempts reached"));
            }
            let delay = self
                .backoff
                .delay(failures - 1, previous_delay, &mut self.rng);
            previous_delay = delay;
            if let Some(max) = self.max_elapsed
                && (Instant::now() + delay).duration_since(streak_start) > max
            {
                return Some(give_up(error, failures, "max_elapsed reached"));
            }
            debug!(attempt = failures + 1, delay = ?delay, "reconnecting after delay");
            self.state.send_replace(State::Reconnecting {
                attempt: failures + 1,
                next_delay: delay,
                last_error: error,
            });
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return None,
                _ = sleep(delay) => {}
            }
        }
    }

    /// Connects and runs the on-connect hook: both must succeed for the attempt to count.
    async fn establish(&mut self) -> Result<C::Conn, Error> {
        let mut conn = self.connector.connect().await?;
        if let Some(hook) = &mut self.on_connect {
            hook(&mut conn).await?;
        }
        Ok(conn)
    }

    /// Moves messages between the queue and the connection until it fails or we are told to
    /// stop.
    async fn serve(&mut self, conn: &mut C::Conn) -> End {
        let cancel = self.cancel.clone();
        let heartbeat = self.heartbeat.clone();
        let mut last_inbound = Instant::now();
        let mut next_ping = heartbeat.as_ref().map(|h| last_inbound + h.interval());
        loop {
            let dead_at = heartbeat.as_ref().map(|h| last_inbound + h.bound());
            let room = self.unacked.len() < self.unacked_capacity;
            // Messages handed back by the last connection go out before any new one.
            if room && let Some(msg) = self.pending.pop_front() {
                if let Err(end) = self.write_message(conn, msg, dead_at).await {
                    return end;
                }
                continue;
            }
            let tick = match (next_ping, dead_at) {
                (Some(p), Some(d)) => p.min(d),
                _ => Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return End::Shutdown,
                item = conn.next() => match item {
                    Some(Ok(msg)) => {
                        last_inbound = Instant::now();
                        next_ping = heartbeat.as_ref().map(|h| last_inbound + h.interval());
                        if let Some(ack) = &self.acknowledged_by {
                            let n = ack(&msg).min(self.unacked.len());
                            self.unacked.drain(..n);
                        }
                        if heartbeat.as_ref().is_some_and(|h| h.is_pong(&msg)) {
                            continue;
                        }
                        self.emit(Event::Message(msg)).await;
                        // While the application was slow to take it we were not reading, so
                        // the peer's silence meanwhile says nothing about its health.
                        last_inbound = Instant::now();
                        next_ping = heartbeat.as_ref().map(|h| last_inbound + h.interval());
                    }
                    Some(Err(error)) => return End::Failed(error),
                    None => {
                        return End::Failed(
                            Error::new(Kind::Closed, Phase::ReadBody)
                                .with_source(Reason("the peer closed the connection")),
                        );
                    }
                },
                msg = self.rx.recv(), if room => match msg {
                    Some(msg) => {
                        if let Err(end) = self.write_message(conn, msg, dead_at).await {
                            return end;
                        }
                    }
                    // Every handle is gone: nobody can send or stop us any more.
                    None => return End::Shutdown,
                },
                _ = sleep_until(tick), if heartbeat.is_some() => {
                    let (Some(h), Some(dead_at)) = (&heartbeat, dead_at) else { continue };
                    if Instant::now() >= dead_at {
                        return End::Failed(silent(h));
                    }
                    match self.write(conn, h.ping(), Some(dead_at)).await {
                        Ok(()) => next_ping = Some(Instant::now() + h.interval()),
                        Err(Some(error)) => return End::Failed(error),
                        Err(None) => return End::Shutdown,
                    }
                }
            }
        }
    }

    /// Writes an application message, keeping it in flight until confirmed.
    async fn write_message(
        &mut self,
        conn: &mut C::Conn,
        msg: C::Msg,
        deadline: Option<Instant>,
    ) -> Result<(), End> {
        let result = self.write(conn, msg.clone(), deadline).await;
        if result.is_err() || self.acknowledged_by.is_some() {
            // Either the write failed (the peer may or may not have it) or we wait for the
            // peer's word: in flight either way.
            self.unacked.push_back(msg);
        }
        result.map_err(|err| match err {
            Some(error) => End::Failed(error),
            None => End::Shutdown,
        })
    }

    /// Writes and flushes one message; `Err(None)` when told to stop meanwhile.
    fn write<'a>(
        &self,
        conn: &'a mut C::Conn,
        msg: C::Msg,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<(), Option<Error>>> + Send + 'a {
        let cancel = self.cancel.clone();
        let bound = self.heartbeat.as_ref().map(Heartbeat::bound);
        async move {
            let send = conn.send(msg);
            let bounded = async {
                match deadline {
                    Some(at) => match timeout_at(at, send).await {
                        Ok(result) => result,
                        // Only the heartbeat sets a deadline: the peer stopped reading.
                        Err(_) => Err(Error::new(Kind::TimedOut(Timer::Idle), Phase::Send)
                            .with_source(Silent(bound.unwrap_or_default()))),
                    },
                    None => send.await,
                }
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(None),
                result = bounded => result.map_err(Some),
            }
        }
    }

    /// Applies the delivery mode to the messages in flight on a lost connection.
    async fn lost_in_flight(&mut self) {
        if self.unacked.is_empty() {
            return;
        }
        match self.delivery {
            Delivery::AtLeastOnce => {
                debug!(count = self.unacked.len(), "resending in-flight messages");
                while let Some(msg) = self.unacked.pop_back() {
                    self.pending.push_front(msg);
                }
            }
            Delivery::AtMostOnce => {
                let lost: Vec<_> = self.unacked.drain(..).collect();
                debug!(count = lost.len(), "handing back unconfirmed messages");
                self.emit(Event::Unconfirmed(lost)).await;
            }
        }
    }

    /// Delivers an event unless told to stop meanwhile.
    fn emit(&self, event: Event<C::Msg>) -> impl Future<Output = ()> + Send + 'static {
        emit(self.events.clone(), self.cancel.clone(), event)
    }

    /// Stops taking messages, hands every unsent one back, and says why we stopped.
    async fn finish(mut self, error: Option<Arc<Error>>) {
        self.rx.close();
        let mut rest: Vec<_> = self.unacked.drain(..).collect();
        rest.extend(self.pending.drain(..));
        while let Ok(msg) = self.rx.try_recv() {
            rest.push(msg);
        }
        match &error {
            Some(error) => warn!(error = %error, "supervisor gave up"),
            None => info!("supervisor stopped"),
        }
        // Published first, so `shutdown()` resolves even if nobody reads the events.
        self.state.send_replace(State::Stopped {
            error: error.clone(),
        });
        if !rest.is_empty() {
            let _ = self.events.send(Event::Unconfirmed(rest)).await;
        }
        let _ = self.events.send(Event::Stopped { error }).await;
    }
}

/// Delivers an event unless told to stop meanwhile; a dropped [`Events`](crate::Events) means
/// nobody listens, so the event is discarded.
async fn emit<M>(events: mpsc::Sender<Event<M>>, cancel: CancellationToken, event: Event<M>) {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => {}
        _ = events.send(event) => {}
    }
}

fn attempt_failed<M>(attempt: u32, error: Arc<Error>) -> Event<M> {
    Event::AttemptFailed { attempt, error }
}

fn silent<M>(heartbeat: &Heartbeat<M>) -> Error {
    Error::new(Kind::TimedOut(Timer::Idle), Phase::ReadBody).with_source(Silent(heartbeat.bound()))
}

fn give_up(last: Arc<Error>, attempts: u32, why: &'static str) -> Error {
    Error::from_failure(last.failure())
        .with_attempts(attempts)
        .with_source(GaveUp {
            why,
            attempts,
            last,
        })
}

/// A fixed explanation as an error source.
#[derive(Debug)]
struct Reason(&'static str);

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Reason {}

/// The source of a heartbeat failure.
#[derive(Debug)]
struct Silent(Duration);

impl fmt::Display for Silent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "heartbeat: nothing received from the peer for {:?}",
            self.0
        )
    }
}

impl std::error::Error for Silent {}

/// The source of a give-up error: why, after how many attempts, and the last failure.
#[derive(Debug)]
struct GaveUp {
    why: &'static str,
    attempts: u32,
    last: Arc<Error>,
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up reconnecting after {} failed attempts ({}); last failure: {}",
            self.attempts, self.why, self.last
        )
    }
}

impl std::error::Error for GaveUp {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.last)
    }
}
