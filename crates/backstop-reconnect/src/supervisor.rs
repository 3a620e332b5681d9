//! [`Supervisor`]: its builder (every setting, checked at [`spawn`](SupervisorBuilder::spawn))
//! and [`Delivery`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use backstop_classify::{ConfigError, Error};
use backstop_retry::{Backoff, Jitter};
use futures_util::future::BoxFuture;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::connector::Connector;
use crate::handle::{Events, Handle};
use crate::heartbeat::{Heartbeat, MAX_HEARTBEAT};
use crate::state::State;
use crate::task::Task;

/// The default period a connection must stay up before the backoff resets.
pub const DEFAULT_HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// The default bound of one attempt: connect plus on-connect hook.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default number of outbound messages queued while disconnected.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// The most messages a queue may hold.
pub const MAX_QUEUE_CAPACITY: usize = 1 << 20;

/// What happens to messages in flight when a connection is lost.
///
/// A message is *in flight* from the moment its write starts until it is confirmed: by a
/// successful flush, or, with [`acknowledged_by`](SupervisorBuilder::acknowledged_by), by the
/// peer's acknowledgement. A flush only proves the bytes reached the local kernel; use an
/// acknowledgement when the application needs to know the peer processed a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Delivery {
    /// Never sent twice: in-flight messages of a lost connection are handed back as
    /// [`Event::Unconfirmed`](crate::Event::Unconfirmed) and not resent. The default.
    #[default]
    AtMostOnce,
    /// Never lost while the supervisor runs: in-flight messages of a lost connection are sent
    /// again, first, on the next connection, so the peer may see one twice.
    AtLeastOnce,
}

type Hook<C> =
    Box<dyn for<'a> FnMut(&'a mut C) -> BoxFuture<'a, Result<(), Error>> + Send + 'static>;
type AckFn<M> = Box<dyn Fn(&M) -> usize + Send + 'static>;

/// What [`SupervisorBuilder::spawn`] returns: the handle and the incoming stream.
pub type Spawned<M> = (Handle<M>, Events<M>);

/// Builds and spawns a [`Supervisor`].
pub struct SupervisorBuilder<C: Connector> {
    connector: C,
    backoff: Backoff,
    healthy_after: Duration,
    attempt_timeout: Duration,
    max_attempts: Option<u32>,
    max_elapsed: Option<Duration>,
    queue_capacity: usize,
    incoming_capacity: usize,
    delivery: Delivery,
    heartbeat: Option<Heartbeat<C::Msg>>,
    on_connect: Option<Hook<C::Conn>>,
    acknowledged_by: Option<AckFn<C::Msg>>,
    seed: Option<u64>,
}

impl<C: Connector> fmt::Debug for SupervisorBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorBuilder")
            .field("backoff", &self.backoff)
            .field("healthy_after", &self.healthy_after)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("max_elapsed", &self.max_elapsed)
            .field("queue_capacity", &self.queue_capacity)
            .field("delivery", &self.delivery)
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

/// Keeps one long-lived connection up: reconnects with capped, jittered exponential backoff,
/// classifies every disconnect, and carries one outbound queue and one incoming stream across
/// connections. See the [crate docs](crate).
#[derive(Debug)]
pub struct Supervisor {
    _private: (),
}

impl Supervisor {
    /// A builder for a supervisor connecting through `connector`.
    ///
    /// Defaults: gRPC's connection backoff shape scaled down (base 1 s, cap 120 s, full jitter),
    /// healthy after 10 s, attempts bounded by 30 s, retrying forever, a queue of 1024,
    /// [`Delivery::AtMostOnce`], no heartbeat, no hook.
    pub fn builder<C: Connector>(connector: C) -> SupervisorBuilder<C> {
        SupervisorBuilder {
            connector,
            backoff: Backoff::new(
                Duration::from_secs(1),
                Duration::from_secs(120),
                Jitter::Full,
            )
            .unwrap_or_default(),
            healthy_after: DEFAULT_HEALTHY_AFTER,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            max_attempts: None,
            max_elapsed: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            incoming_capacity: DEFAULT_QUEUE_CAPACITY,
            delivery: Delivery::default(),
            heartbeat: None,
            on_connect: None,
            acknowledged_by: None,
            seed: None,
        }
    }
}

impl<C: Connector> SupervisorBuilder<C> {
    /// The delay between attempts (backstop-retry's [`Backoff`], the same as retries use).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long a connection must stay up to count as healthy (1 ms to one hour). Only then
    /// does the backoff start again from its base, so a server that accepts and drops at once
    /// cannot cause a tight loop.
    pub fn healthy_after(mut self, period: Duration) -> Self {
        self.healthy_after = period;
        self
    }

    /// Bounds each attempt, connect and on-connect hook together (1 ms to one hour).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Gives up after this many consecutive failed attempts (at least 1). A connection lost
    /// before it became healthy counts as a failed attempt.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Gives up when the next attempt would start more than this long after the first failure
    /// since the last healthy connection (at least 1 ms).
    pub fn max_elapsed(mut self, elapsed: Duration) -> Self {
        self.max_elapsed = Some(elapsed);
        self
    }

    /// How many outbound messages wait while disconnected (1 to 2²⁰); beyond it
    /// [`Handle::send`] rejects with [`SendError::Full`](crate::SendError::Full).
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// How many incoming events wait for the application before the supervisor stops reading
    /// (1 to 2²⁰): a slow application slows the peer down instead of growing memory. Time spent
    /// waiting for the application does not count against the heartbeat.
    pub fn incoming_capacity(mut self, capacity: usize) -> Self {
        self.incoming_capacity = capacity;
        self
    }

    /// What happens to in-flight messages when a connection is lost.
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// Pings quiet connections and drops dead ones; see [`Heartbeat`].
    pub fn heartbeat(mut self, heartbeat: Heartbeat<C::Msg>) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }

    /// Runs on every new connection before the application sees it: authenticate, replay
    /// subscriptions or offsets. Its failure counts as a failed attempt (retried with backoff).
    ///
    /// ```
    /// # use backstop_reconnect::{Supervisor, TcpLines};
    /// use futures_util::SinkExt;
    ///
    /// let builder = Supervisor::builder(TcpLines::new("127.0.0.1:9")?)
    ///     .on_connect(|conn| Box::pin(async move { conn.send("SUB prices".to_string()).await }));
    /// # drop(builder);
    /// # Ok::<(), backstop_classify::ConfigError>(())
    /// ```
    pub fn on_connect<F>(mut self, hook: F) -> Self
    where
        F: for<'a> FnMut(&'a mut C::Conn) -> BoxFuture<'a, Result<(), Error>> + Send + 'static,
    {
        self.on_connect = Some(Box::new(hook));
        self
    }

    /// Keeps written messages in flight until the peer acknowledges them: `ack(incoming)` says
    /// how many of the oldest unacknowledged messages that incoming message confirms (0 for
    /// most). At most `queue_capacity` messages are unacknowledged at once.
    pub fn acknowledged_by(mut self, ack: impl Fn(&C::Msg) -> usize + Send + 'static) -> Self {
        self.acknowledged_by = Some(Box::new(ack));
        self
    }

    /// Seeds the jitter's random numbers (for reproducible tests); by default they come from
    /// the OS.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the settings and starts the supervisor on the current tokio runtime.
    ///
    /// Returns the [`Handle`] to send through, watch and stop it, and the [`Events`] stream of
    /// incoming messages. Fails naming the first invalid setting, or `runtime` when called
    /// outside a tokio runtime.
    pub fn spawn(self) -> Result<Spawned<C::Msg>, ConfigError> {
        check_duration("healthy_after", self.healthy_after)?;
        check_duration("attempt_timeout", self.attempt_timeout)?;
        if self.max_attempts == Some(0) {
            return Err(ConfigError::new("max_attempts", "must be at least 1"));
        }
        if let Some(elapsed) = self.max_elapsed
            && elapsed < Duration::from_millis(1)
        {
            return Err(ConfigError::new("max_elapsed", "must be at least 1 ms"));
        }
        check_capacity("queue_capacity", self.queue_capacity)?;
        check_capacity("incoming_capacity", self.incoming_capacity)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError::new("runtime", "spawn must be called inside a tokio runtime")
        })?;

        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let (events_tx, events_rx) = mpsc::channel(self.incoming_capacity);
        let (state_tx, state_rx) = watch::channel(State::Connecting);
        let cancel = CancellationToken::new();
        let rng = match self.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_os_rng(),
        };
        let task = Task {
            connector: self.connector,
            backoff: self.backoff,
            healthy_after: self.healthy_after,
            attempt_timeout: self.attempt_timeout,
            max_attempts: self.max_attempts,
            max_elapsed: self.max_elapsed,
            unacked_capacity: self.queue_capacity,
            delivery: self.delivery,
            heartbeat: self.heartbeat,
            on_connect: self.on_connect,
            acknowledged_by: self.acknowledged_by,
            rng,
            rx,
            events: events_tx,
            state: state_tx,
            cancel: cancel.clone(),
            pending: Default::default(),
            unacked: Default::default(),
        };
        runtime.spawn(task.run());
        Ok((
            Handle {
                tx,
                state: state_rx,
                _last: Arc::new(cancel.clone().drop_guard()),
                cancel,
            },
            Events { rx: events_rx },
        ))
    }
}

fn check_duration(field: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value < Duration::from_millis(1) {
        return Err(ConfigError::new(field, "must be at least 1 ms"));
    }
    if value > MAX_HEARTBEAT {
        return Err(ConfigError::new(field, "must be at most one hour"));
    }
    Ok(())
}

fn check_capacity(field: &'static str, value: usize) -> Result<(), ConfigError> {
    if value == 0 || value > MAX_QUEUE_CAPACITY {
        return Err(ConfigError::new(field, "must be between 1 and 2^20"));
    }
    Ok(())
}

pub(crate) type HookBox<C> = Hook<C>;
pub(crate) type AckBox<M> = AckFn<M>;
