//! A sequence-numbered feed over WebSocket, served on loopback by a server that restarts itself,
//! and a client that follows it through `backstop::reconnect::Supervisor`, replaying its
//! subscription from the last sequence it saw on every new connection.
//!
//! Shared by the `reconnect_ws` example and part 3 of the tour.
//!
//! The protocol: after connecting, the client sends `SUB ticks FROM <seq>`; the server answers
//! with `EVT ticks <seq>` for every sequence number from there on, the ones published while the
//! client was away first. The feed keeps advancing while the server is down (its log outlives the
//! listener), so a client that resubscribed from the wrong place would show a gap.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backstop::classify::Kind;
use backstop::reconnect::{Event, Heartbeat, State, Supervisor, WebSocket, WsMessage};
use backstop::retry::{Backoff, Jitter};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior, interval, sleep, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Errors of the feed demo.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one topic the feed publishes.
pub const TOPIC: &str = "ticks";

/// How the server behaves.
#[derive(Debug, Clone, Copy)]
pub struct FeedConfig {
    /// How long the server listens and serves before it restarts.
    pub up: Duration,
    /// How long it stays down (not listening) during a restart.
    pub down: Duration,
    /// One message is published every `tick`.
    pub tick: Duration,
}

/// How a restart ends the connections it kills, alternately.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// A WebSocket close frame (1001, going away), as a polite server does.
    GoingAway,
    /// A TCP reset, as a crashed process or a dropped NAT entry does.
    Reset,
}

/// The feed's server on 127.0.0.1: up for `up`, then every connection killed and the listener
/// closed for `down`, then back on the same port, again and again. Stopped when dropped.
#[derive(Debug)]
pub struct FeedServer {
    addr: SocketAddr,
    restarts: Arc<AtomicU64>,
    published: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl FeedServer {
    /// Binds a free port on 127.0.0.1 and starts publishing and serving.
    pub async fn start(config: FeedConfig) -> io::Result<FeedServer> {
        let listener = bind("127.0.0.1:0".parse().map_err(io::Error::other)?)?;
        let addr = listener.local_addr()?;
        let restarts = Arc::new(AtomicU64::new(0));
        let (published_tx, published) = watch::channel(0);
        let task = tokio::spawn(run(listener, config, published_tx, Arc::clone(&restarts)));
        Ok(FeedServer {
            addr,
            restarts,
            published,
            task,
        })
    }

    /// The URL to connect to.
    pub fn url(&self) -> String {
        format!("ws://{}/feed", self.addr)
    }

    /// How many times the server has restarted so far.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// The last sequence number published so far.
    pub fn published(&self) -> u64 {
        *self.published.borrow()
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        // The connection tasks live in a JoinSet inside this task: aborting it ends them too.
        self.task.abort();
    }
}

/// A listener that may take the same port again as soon as the previous one is closed.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

async fn run(
    first: TcpListener,
    config: FeedConfig,
    published: watch::Sender<u64>,
    restarts: Arc<AtomicU64>,
) {
    let producer = async {
        let mut ticks = interval(config.tick);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            published.send_modify(|seq| *seq += 1);
        }
    };
    let server = async {
        let Ok(addr) = first.local_addr() else { return };
        let mut listener = Some(first);
        loop {
            let listening = match listener.take() {
                Some(listening) => listening,
                None => match rebind(addr).await {
                    Some(listening) => listening,
                    None => return,
                },
            };
            let (kill, _) = watch::channel(None::<Ending>);
            let mut connections = JoinSet::new();
            let restart_at = Instant::now() + config.up;
            loop {
                tokio::select! {
                    _ = sleep_until(restart_at) => break,
                    accepted = listening.accept() => if let Ok((socket, _)) = accepted {
                        connections.spawn(serve(socket, published.subscribe(), kill.subscribe()));
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
            // Down: new connections are refused, then the open ones are killed.
            drop(listening);
            let restart = restarts.fetch_add(1, Ordering::Relaxed) + 1;
            kill.send_replace(Some(if restart % 2 == 1 {
                Ending::GoingAway
            } else {
                Ending::Reset
            }));
            let _ = timeout(Duration::from_millis(300), async {
                while connections.join_next().await.is_some() {}
            })
            .await;
            drop(connections);
            sleep(config.down).await;
        }
    };
    tokio::select! {
        _ = producer => {}
        _ = server => {}
    }
}

/// Takes the port back after a restart (a few tries: a closing socket may hold it a moment).
async fn rebind(addr: SocketAddr) -> Option<TcpListener> {
    for _ in 0..20 {
        if let Ok(listener) = bind(addr) {
            return Some(listener);
        }
        sleep(Duration::from_millis(50)).await;
    }
    None
}

/// One connection: wait for `SUB`, then stream from the asked sequence until killed.
async fn serve(
    socket: TcpStream,
    mut published: watch::Receiver<u64>,
    mut kill: watch::Receiver<Option<Ending>>,
) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(socket).await else {
        return;
    };
    let mut next: Option<u64> = None;
    loop {
        let ending = *kill.borrow();
        if let Some(ending) = ending {
            return end(ws, ending).await;
        }
        let latest = *published.borrow_and_update();
        if let Some(seq) = next
            && seq <= latest
        {
            if ws
                .send(WsMessage::text(format!("EVT {TOPIC} {seq}")))
                .await
                .is_err()
            {
                return;
            }
            next = Some(seq + 1);
            continue;
        }
        tokio::select! {
            killed = kill.changed() => if killed.is_err() { return },
            msg = ws.next() => match msg {
                Some(Ok(WsMessage::Text(text))) => {
                    if let Some(from) = parse_sub(&text) {
                        next = Some(from.max(1));
                    }
                }
                Some(Ok(WsMessage::Close(_)) | Err(_)) | None => return,
                // Pings are answered by tungstenite itself.
                Some(Ok(_)) => {}
            },
            changed = published.changed(), if next.is_some() => if changed.is_err() { return },
        }
    }
}

async fn end(mut ws: WebSocketStream<TcpStream>, ending: Ending) {
    match ending {
        Ending::GoingAway => {
            let frame = CloseFrame {
                code: CloseCode::Away,
                reason: "restarting".into(),
            };
            // Wait briefly for the client's closing frame, so the close is clean on both sides.
            let _ = timeout(Duration::from_millis(200), async {
                let _ = ws.close(Some(frame)).await;
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
        }
        Ending::Reset => {
            let _ = ws.get_ref().set_zero_linger();
        }
    }
}

/// `SUB ticks FROM 42` → 42.
fn parse_sub(text: &str) -> Option<u64> {
    let mut words = text.split_whitespace();
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some("SUB"), Some(TOPIC), Some("FROM"), Some(from)) => from.parse().ok(),
        _ => None,
    }
}

/// `EVT ticks 42` → 42.
fn parse_event(text: &str) -> Option<u64> {
    text.strip_prefix("EVT ")?
        .strip_prefix(TOPIC)?
        .trim()
        .parse()
        .ok()
}

/// How the client follows the feed.
#[derive(Debug, Clone, Copy)]
pub struct FollowOptions {
    /// How long to follow before shutting down.
    pub run_for: Duration,
    /// Seeds the backoff's jitter, so a run's delays are reproducible.
    pub seed: u64,
}

/// One observed state change, with what the client knew at that moment.
#[derive(Debug)]
pub struct Seen<'a> {
    /// Since the client started.
    pub at: Duration,
    /// The supervisor's new state.
    pub state: &'a State,
    /// The sequence the last `SUB` asked to start from.
    pub subscribed_from: u64,
    /// The highest sequence received so far.
    pub last_seq: u64,
}

/// What following the feed proved.
#[derive(Debug, Default)]
pub struct Report {
    /// Feed messages received, duplicates included.
    pub messages: u64,
    /// The highest sequence number received: the proof covers `1..=highest`.
    pub highest: u64,
    /// Messages received more than once (a replay overlapping what had already arrived).
    pub duplicates: u64,
    /// Sequence numbers in `1..=highest` never received.
    pub missing: Vec<u64>,
    /// Connections established (the first one, then one per reconnection).
    pub connections: u64,
    /// The delays the supervisor announced before its reconnection attempts.
    pub delays: Vec<Duration>,
    /// How long the client ran, shutdown included.
    pub elapsed: Duration,
}

impl Report {
    /// Reconnections: connections after the first.
    pub fn reconnections(&self) -> u64 {
        self.connections.saturating_sub(1)
    }

    /// `Ok` when every sequence number from 1 to the highest arrived and the client did
    /// reconnect at least once (otherwise nothing was proved).
    pub fn check(&self) -> Result<(), String> {
        if self.highest == 0 {
            return Err("no message received".into());
        }
        if !self.missing.is_empty() {
            return Err(format!(
                "gap: {} sequence number(s) never received in 1..={}, first {:?}",
                self.missing.len(),
                self.highest,
                &self.missing[..self.missing.len().min(10)]
            ));
        }
        if self.reconnections() == 0 {
            return Err("the client never reconnected: nothing was proved".into());
        }
        Ok(())
    }

    /// One line: the verdict and the counts behind it.
    pub fn verdict(&self) -> String {
        let mut line = match self.check() {
            Ok(()) => format!("no gap: 1..={}", self.highest),
            Err(why) => format!("FAILED: {why}"),
        };
        let _ = write!(
            line,
            " — {} messages received, {} distinct, {} duplicate(s), across {} reconnection(s)",
            self.messages,
            self.messages - self.duplicates,
            self.duplicates,
            self.reconnections()
        );
        line
    }

    /// The reconnection delays in short, e.g. `6 delays, 2 ms to 481 ms`.
    pub fn delays_summary(&self) -> String {
        match (self.delays.iter().min(), self.delays.iter().max()) {
            (Some(min), Some(max)) => format!(
                "{} delay(s), {} ms to {} ms",
                self.delays.len(),
                min.as_millis(),
                max.as_millis()
            ),
            _ => "no delay".into(),
        }
    }
}

/// Counts every sequence number received.
#[derive(Default)]
struct Tally {
    counts: Vec<u32>,
    messages: u64,
}

impl Tally {
    fn record(&mut self, seq: u64) {
        let Ok(index) = usize::try_from(seq) else {
            return;
        };
        if self.counts.len() <= index {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
        self.messages += 1;
    }

    fn report(&self, report: &mut Report) {
        report.messages = self.messages;
        report.highest = self.counts.len().saturating_sub(1) as u64;
        report.duplicates = self
            .counts
            .iter()
            .map(|&n| u64::from(n.saturating_sub(1)))
            .sum();
        report.missing = (1..self.counts.len())
            .filter(|&seq| self.counts[seq] == 0)
            .map(|seq| seq as u64)
            .collect();
    }
}

/// Follows the feed at `url` for `options.run_for`, calling `on_change` for every state change
/// the supervisor publishes, then shuts down and reports what arrived.
///
/// The supervisor: a WebSocket connector, a ping every 250 ms of silence (dead after 500 ms),
/// backoff from 50 ms to 500 ms with full, seeded jitter, healthy after 500 ms up, and an
/// on-connect hook that resubscribes from the sequence after the last one seen.
pub async fn follow(
    url: &str,
    options: FollowOptions,
    mut on_change: impl FnMut(&Seen<'_>),
) -> Result<Report, BoxError> {
    let started = Instant::now();
    // Written by the application as messages arrive, read by the hook on every new connection.
    let last_seen = Arc::new(AtomicU64::new(0));
    let subscribed_from = Arc::new(AtomicU64::new(0));
    let hook_last = Arc::clone(&last_seen);
    let hook_from = Arc::clone(&subscribed_from);

    let (handle, mut events) =
        Supervisor::builder(WebSocket::new(url)?.connect_timeout(Duration::from_millis(500))?)
            .backoff(Backoff::new(
                Duration::from_millis(50),
                Duration::from_millis(500),
                Jitter::Full,
            )?)
            .seed(options.seed)
            .healthy_after(Duration::from_millis(500))
            .attempt_timeout(Duration::from_secs(1))
            .heartbeat(Heartbeat::websocket(
                Duration::from_millis(250),
                Duration::from_millis(250),
            )?)
            .on_connect(move |conn| {
                let from = hook_last.load(Ordering::Acquire) + 1;
                hook_from.store(from, Ordering::Release);
                Box::pin(async move {
                    conn.send(WsMessage::text(format!("SUB {TOPIC} FROM {from}")))
                        .await
                })
            })
            .spawn()?;

    let mut state = handle.state();
    let mut state_open = true;
    let mut stopped_seen = false;
    let mut tally = Tally::default();
    let mut report = Report::default();
    let mut seen = |state: &State, report: &mut Report| {
        if let State::Reconnecting { next_delay, .. } = state {
            report.delays.push(*next_delay);
        }
        on_change(&Seen {
            at: started.elapsed(),
            state,
            subscribed_from: subscribed_from.load(Ordering::Acquire),
            last_seq: last_seen.load(Ordering::Acquire),
        });
    };
    let current = state.borrow_and_update().clone();
    seen(&current, &mut report);

    let stop_at = started + options.run_for;
    let mut stopping = false;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Message(WsMessage::Text(text))) => {
                    if let Some(seq) = parse_event(&text) {
                        tally.record(seq);
                        last_seen.fetch_max(seq, Ordering::AcqRel);
                    }
                }
                Some(Event::Connected { .. }) => report.connections += 1,
                Some(_) => {}
                None => break,
            },
            changed = state.changed(), if state_open => match changed {
                Ok(()) => {
                    let current = state.borrow_and_update().clone();
                    stopped_seen |= current.is_stopped();
                    seen(&current, &mut report);
                }
                Err(_) => state_open = false,
            },
            _ = sleep_until(stop_at), if !stopping => {
                stopping = true;
                // Resolves once stopped; the events that follow are still drained below.
                handle.shutdown().await;
            }
        }
    }
    // The events may end before the final state was read: show it once.
    if !stopped_seen {
        let current = state.borrow_and_update().clone();
        if current.is_stopped() {
            seen(&current, &mut report);
        }
    }
    tally.report(&mut report);
    report.elapsed = started.elapsed();
    Ok(report)
}

/// A state change as one line: `reconnecting: attempt 2 in 61 ms after refused in connect`.
pub fn describe(seen: &Seen<'_>) -> String {
    match seen.state {
        State::Connecting => "connecting".into(),
        State::Connected { connection } => format!(
            "connected (connection #{connection}), subscribed: SUB {TOPIC} FROM {}",
            seen.subscribed_from
        ),
        State::Reconnecting {
            attempt,
            next_delay,
            last_error,
        } => format!(
            "reconnecting: attempt {attempt} in {} ms after {} in {} (last seq {})",
            next_delay.as_millis(),
            kind_label(last_error.kind()),
            last_error.phase(),
            seen.last_seq
        ),
        State::Stopped { error: None } => "stopped (shutdown)".into(),
        State::Stopped { error: Some(error) } => format!("stopped: gave up: {error}"),
        other => format!("{other:?}"),
    }
}

/// Prints a state change with its time: `[  1.52s] reconnecting: ...`.
pub fn print_change(seen: &Seen<'_>) {
    println!("[{:>6.2}s] {}", seen.at.as_secs_f64(), describe(seen));
}

/// The kind's name; for a WebSocket, `Closed` while reading means the peer closed it.
fn kind_label(kind: Kind) -> String {
    match kind {
        Kind::Closed => "close by the peer".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lines_parse() {
        assert_eq!(parse_sub("SUB ticks FROM 42"), Some(42));
        assert_eq!(parse_sub("SUB other FROM 42"), None);
        assert_eq!(parse_event("EVT ticks 7"), Some(7));
        assert_eq!(parse_event("EVT tickss 7"), None);
    }

    #[test]
    fn the_tally_finds_gaps_and_duplicates() {
        let mut tally = Tally::default();
        for seq in [1, 2, 2, 4] {
            tally.record(seq);
        }
        let mut report = Report::default();
        tally.report(&mut report);
        assert_eq!(report.highest, 4);
        assert_eq!(report.duplicates, 1);
        assert_eq!(report.missing, vec![3]);
        assert!(report.check().is_err());
    }
}
