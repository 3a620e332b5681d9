//! Loopback tests of the supervisor, on tokio's paused clock where timing matters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backstop_classify::{Error, Kind, Phase, Timer};
use backstop_reconnect::{
    Connector, Delivery, Event, Events, Handle, Heartbeat, SendError, State, Supervisor, TcpLines,
    connect_fn,
};
use backstop_retry::{Backoff, Jitter};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep, timeout};

const MS: Duration = Duration::from_millis(1);
/// Every wait in these tests is bounded; on the paused clock a hang becomes a prompt failure.
const BOUND: Duration = Duration::from_secs(600);

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

/// Waits until the state satisfies `pred`.
async fn wait_state(state: &mut watch::Receiver<State>, pred: impl Fn(&State) -> bool) -> State {
    timeout(BOUND, async {
        loop {
            {
                let s = state.borrow_and_update();
                if pred(&s) {
                    return s.clone();
                }
            }
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("state not reached in time")
}

/// Waits for the first event matching `pred`, returning the events skipped on the way too.
async fn wait_event<M: std::fmt::Debug>(
    events: &mut Events<M>,
    pred: impl Fn(&Event<M>) -> bool,
) -> Event<M> {
    timeout(BOUND, async {
        loop {
            let ev = events.recv().await.expect("events ended");
            if pred(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("event not seen in time")
}

fn backoff(base: u32, cap: u32, jitter: Jitter) -> Backoff {
    Backoff::new(base * MS, cap * MS, jitter).unwrap()
}

/// Records every `Reconnecting` state (attempt, delay) as it is published.
fn record_delays(handle: &Handle<String>) -> Arc<Mutex<Vec<(u32, Duration)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut state = handle.state();
    let out = seen.clone();
    tokio::spawn(async move {
        while state.changed().await.is_ok() {
            if let State::Reconnecting {
                attempt,
                next_delay,
                ..
            } = &*state.borrow_and_update()
            {
                out.lock().unwrap().push((*attempt, *next_delay));
            }
        }
    });
    seen
}

// === backoff ===

#[tokio::test(start_paused = true)]
async fn delays_grow_within_jitter_bounds_and_reset_after_a_healthy_connection() {
    let (listener, addr) = listener().await;
    // Connections live 100 ms, except the 7th which stays up past the healthy period.
    let accepts = Arc::new(Mutex::new(Vec::new()));
    let acc = accepts.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((socket, _)) = listener.accept().await {
            n += 1;
            acc.lock().unwrap().push(Instant::now());
            let hold = if n == 7 { 2000 * MS } else { 100 * MS };
            tokio::spawn(async move {
                sleep(hold).await;
                drop(socket);
            });
        }
    });

    let (base, cap) = (100u32, 1000u32);
    let (handle, mut events) = Supervisor::builder(TcpLines::new(&addr).unwrap())
        .backoff(backoff(base, cap, Jitter::Equal))
        .healthy_after(1000 * MS)
        .seed(7)
        .spawn()
        .unwrap();
    let delays = record_delays(&handle);

    // 10 disconnects: 6 short, the healthy one, then short ones again.
    for _ in 0..10 {
        let ev = wait_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
        // The server's close is classified as such, while reading.
        let Event::Disconnected { error } = ev else {
            unreachable!()
        };
        assert_eq!(
            (error.kind(), error.phase()),
            (Kind::Closed, Phase::ReadBody)
        );
    }
    let mut state = handle.state();
    wait_state(&mut state, |s| {
        matches!(s, State::Connected { connection: 11 })
    })
    .await;
    let delays = delays.lock().unwrap().clone();
    let accepts = accepts.lock().unwrap().clone();
    assert!(delays.len() >= 10, "{delays:?}");

    // The 6 connections before the healthy one: attempt k waits within [e/2, e] of
    // e = min(cap, base·2^(k-2)), growing to the cap.
    for (i, (attempt, delay)) in delays.iter().take(6).enumerate() {
        assert_eq!(*attempt as usize, i + 2);
        let e = (base * MS * 2u32.pow(i as u32)).min(cap * MS);
        assert!(
            *delay >= e / 2 && *delay <= e,
            "attempt {attempt}: {delay:?} vs {e:?}"
        );
        // The gap between two accepts is the connection's 100 ms plus the delay.
        let gap = accepts[i + 1] - accepts[i];
        assert!(
            gap >= 100 * MS + *delay && gap <= 100 * MS + *delay + 5 * MS,
            "{gap:?}"
        );
    }
    assert!(delays[5].1 >= (cap * MS) / 2, "reached the cap region");
    // After the healthy connection the count restarts: attempt 2, base delay.
    let (attempt, delay) = delays[6];
    assert_eq!(attempt, 2);
    assert!(delay >= base * MS / 2 && delay <= base * MS, "{delay:?}");
    // And grows again from there.
    let (attempt, delay) = delays[7];
    assert_eq!(attempt, 3);
    assert!(delay >= base * MS && delay <= 2 * base * MS, "{delay:?}");
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn accept_then_close_is_retried_no_faster_than_the_backoff() {
    let (listener, addr) = listener().await;
    let (tx, mut accepted) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
            let _ = tx.send(Instant::now());
        }
    });
    let (handle, _events) = Supervisor::builder(TcpLines::new(&addr).unwrap())
        .backoff(backoff(100, 1000, Jitter::Equal))
        .seed(1)
        .spawn()
        .unwrap();

    let start = Instant::now();
    let mut times = Vec::new();
    for _ in 0..20 {
        times.push(timeout(BOUND, accepted.recv()).await.unwrap().unwrap());
    }
    // Equal jitter never waits less than half the exponential delay: 50, 100, 200, 400, then
    // 500 ms for every further attempt.
    let min_total: Duration = (0..19)
        .map(|n| (100 * MS * 2u32.pow(n.min(10))).min(1000 * MS) / 2)
        .sum();
    let elapsed = times[19] - start;
    assert!(elapsed >= min_total, "{elapsed:?} < {min_total:?}");
    // So over 10 s at most ~24 attempts happen, not thousands.
    let in_first_10s = times.iter().filter(|t| **t - start <= 10_000 * MS).count();
    assert!(in_first_10s <= 24, "{in_first_10s}");
    handle.shutdown().await;
}

// === on-connect hook ===

#[tokio::test(start_paused = true)]
async fn subscriptions_are_replayed_on_every_connection_and_a_failing_hook_is_retried() {
    let (listener, addr) = listener().await;
    let seen = Arc::new(Mutex::new(Vec::<(usize, String)>::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((socket, _)) = listener.accept().await {
            n += 1;
            let seen = seen2.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                let Ok(Some(line)) = lines.next_line().await else {
                    return;
                };
                seen.lock().unwrap().push((n, line));
                // Connection 2 refuses the subscription; the others accept it, say hello,
                // and close after a moment.
                let reply = if n == 2 { "NO\n" } else { "OK\nhello\n" };
                let _ = write.write_all(reply.as_bytes()).await;
                sleep(50 * MS).await;
            });
        }
    });

    let (handle, mut events) = Supervisor::builder(TcpLines::new(&addr).unwrap())
        .backoff(backoff(100, 1000, Jitter::Equal))
        .seed(3)
        .on_connect(|conn| {
            Box::pin(async move {
                conn.send("SUB prices".to_string()).await?;
                match conn.next().await {
                    Some(Ok(line)) if line == "OK" => Ok(()),
                    Some(Err(e)) => Err(e),
                    _ => Err(Error::new(Kind::Other, Phase::Local)),
                }
            })
        })
        .spawn()
        .unwrap();
    let delays = record_delays(&handle);

    let mut log = Vec::new();
    while log
        .iter()
        .filter(|e| matches!(e, Event::Connected { .. }))
        .count()
        < 3
    {
        let ev = timeout(BOUND, events.recv()).await.unwrap().unwrap();
        log.push(ev);
    }
    // The hook's failure on connection 2 was a failed attempt, not a connection.
    assert!(log.iter().any(|e| matches!(
        e,
        Event::AttemptFailed { attempt: 2, error } if error.kind() == Kind::Other
    )));
    // The application never saw the hook's reply, only what came after it.
    let messages: Vec<_> = log
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.as_str()),
            _ => None,
        })
        .collect();
    assert!(messages.iter().all(|m| *m == "hello"), "{messages:?}");
    // The hook's failure was the second in a row: the next attempt waited the second delay.
    let delays = delays.lock().unwrap().clone();
    assert!(
        delays
            .iter()
            .any(|(attempt, d)| *attempt == 3 && *d >= 100 * MS && *d <= 200 * MS),
        "{delays:?}"
    );
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 4, "{seen:?}");
    for (n, line) in &seen {
        assert_eq!(line, "SUB prices", "connection {n}");
    }
    handle.shutdown().await;
}

// === heartbeat ===

/// A line server that answers PING with PONG until `stop_at`, then reads without answering.
async fn pong_server(listener: TcpListener, answer_for: Duration) {
    let (socket, _) = listener.accept().await.unwrap();
    let stop_at = Instant::now() + answer_for;
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line == "PING" && Instant::now() < stop_at {
            write.write_all(b"PONG\n").await.unwrap();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_tcp_peer_that_stops_answering_pings_is_detected_within_the_bound() {
    let (listener, addr) = listener().await;
    let answer_for = 10_000 * MS;
    tokio::spawn(pong_server(listener, answer_for));
    let heartbeat = Heartbeat::new(
        1000 * MS,
        2000 * MS,
        || "PING".to_string(),
        |m: &String| m == "PONG",
    )
    .unwrap();
    let bound = heartbeat.bound();
    let start = Instant::now();
    let (handle, mut events) = Supervisor::builder(TcpLines::new(&addr).unwrap())
        .heartbeat(heartbeat)
        .spawn()
        .unwrap();
    let ev = wait_event(&mut events, |e| {
        matches!(e, Event::Disconnected { .. } | Event::Message(_))
    })
    .await;
    let Event::Disconnected { error } = ev else {
        panic!("pongs must not be delivered: {ev:?}")
    };
    assert_eq!(error.kind(), Kind::TimedOut(Timer::Idle));
    let detected = start.elapsed();
    // The last PONG answered a ping at most one interval before the server stopped.
    assert!(detected >= answer_for, "{detected:?}");
    assert!(detected <= answer_for + bound, "{detected:?}");
    handle.shutdown().await;
}

// === outbound queue and delivery ===

/// A connector that refuses while `down` is set: a controllable outage.
fn switchable(addr: String, down: Arc<AtomicBool>) -> impl Connector<Msg = String> {
    let tcp = TcpLines::new(addr).unwrap();
    connect_fn(move || {
        let mut tcp = tcp.clone();
        let down = down.load(Ordering::SeqCst);
        async move {
            if down {
                return Err(Error::new(Kind::Refused, Phase::Connect));
            }
            tcp.connect().await
        }
    })
}

/// Serves connections in order, sending each line received to `lines` tagged with the
/// connection number; `close` tells the current connection to end.
fn line_server(
    listener: TcpListener,
) -> (
    mpsc::UnboundedReceiver<(usize, String)>,
    mpsc::UnboundedSender<()>,
    mpsc::UnboundedSender<String>,
) {
    let (lines_tx, lines_rx) = mpsc::unbounded_channel();
    let (close_tx, mut close_rx) = mpsc::unbounded_channel::<()>();
    let (say_tx, mut say_rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((socket, _)) = listener.accept().await {
            n += 1;
            let (read, mut write) = socket.into_split();
            let mut lines = BufReader::new(read).lines();
            loop {
                tokio::select! {
                    line = lines.next_line() => match line {
                        Ok(Some(line)) => { let _ = lines_tx.send((n, line)); }
                        _ => break,
                    },
                    say = say_rx.recv() => match say {
                        Some(say) => { let _ = write.write_all(format!("{say}\n").as_bytes()).await; }
                        None => break,
                    },
                    _ = close_rx.recv() => break,
                }
            }
        }
    });
    (lines_rx, close_tx, say_tx)
}

#[tokio::test(start_paused = true)]
async fn messages_sent_during_an_outage_are_delivered_after_reconnect_or_rejected_when_full() {
    let (listener, addr) = listener().await;
    let (mut lines, close, _say) = line_server(listener);
    let down = Arc::new(AtomicBool::new(false));
    let (handle, _events) = Supervisor::builder(switchable(addr, down.clone()))
        .backoff(backoff(100, 1000, Jitter::Equal))
        .queue_capacity(3)
        .seed(5)
        .spawn()
        .unwrap();
    let mut state = handle.state();
    wait_state(&mut state, State::is_connected).await;

    // Outage: the connection drops and reconnects are refused.
    down.store(true, Ordering::SeqCst);
    close.send(()).unwrap();
    wait_state(&mut state, |s| matches!(s, State::Reconnecting { .. })).await;

    let mut verdicts = Vec::new();
    for i in 1..=5 {
        verdicts.push(handle.send(format!("m{i}")));
    }
    assert_eq!(
        verdicts,
        vec![
            Ok(()),
            Ok(()),
            Ok(()),
            Err(SendError::Full("m4".to_string())),
            Err(SendError::Full("m5".to_string())),
        ]
    );

    down.store(false, Ordering::SeqCst);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(timeout(BOUND, lines.recv()).await.unwrap().unwrap());
    }
    assert_eq!(
        got,
        vec![(2, "m1".into()), (2, "m2".into()), (2, "m3".into())]
    );
    handle.shutdown().await;
    assert!(lines.try_recv().is_err(), "nothing else was sent");
}

/// Sends m1 and m2; the peer acknowledges m1 only, then the connection drops.
async fn lose_one_unacknowledged(delivery: Delivery) -> (Vec<(usize, String)>, Vec<Event<String>>) {
    let (listener, addr) = listener().await;
    let (mut lines, close, say) = line_server(listener);
    let (handle, mut events) = Supervisor::builder(TcpLines::new(&addr).unwrap())
        .backoff(backoff(100, 1000, Jitter::Equal))
        .delivery(delivery)
        .acknowledged_by(|m: &String| usize::from(m == "ACK"))
        .seed(9)
        .spawn()
        .unwrap();
    wait_event(&mut events, |e| matches!(e, Event::Connected { .. })).await;
    handle.send("m1".into()).unwrap();
    let mut got = vec![timeout(BOUND, lines.recv()).await.unwrap().unwrap()];
    say.send("ACK".into()).unwrap();
    wait_event(
        &mut events,
        |e| matches!(e, Event::Message(m) if m == "ACK"),
    )
    .await;
    handle.send("m2".into()).unwrap();
    got.push(timeout(BOUND, lines.recv()).await.unwrap().unwrap());
    close.send(()).unwrap();

    let mut log = Vec::new();
    loop {
        let ev = timeout(BOUND, events.recv()).await.unwrap().unwrap();
        let connected = matches!(ev, Event::Connected { .. });
        log.push(ev);
        if connected {
            break;
        }
    }
    handle.send("m3".into()).unwrap();
    while got.last().map(|(_, m)| m.as_str()) != Some("m3") {
        got.push(timeout(BOUND, lines.recv()).await.unwrap().unwrap());
    }
    handle.shutdown().await;
    (got, log)
}

#[tokio::test(start_paused = true)]
async fn at_least_once_resends_what_was_not_acknowledged() {
    let (got, log) = lose_one_unacknowledged(Delivery::AtLeastOnce).await;
    assert_eq!(
        got,
        vec![
            (1, "m1".into()),
            (1, "m2".into()),
            (2, "m2".into()),
            (2, "m3".into())
        ]
    );
    assert!(!log.iter().any(|e| matches!(e, Event::Unconfirmed(_))));
}

#[tokio::test(start_paused = true)]
async fn at_most_once_hands_back_what_was_not_acknowledged() {
    let (got, log) = lose_one_unacknowledged(Delivery::AtMostOnce).await;
    assert_eq!(
        got,
        vec![(1, "m1".into()), (1, "m2".into()), (2, "m3".into())]
    );
    assert!(
        log.iter()
            .any(|e| matches!(e, Event::Unconfirmed(v) if v == &["m2".to_string()]))
    );
}

// === stopping ===

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts_with_a_classified_error() {
    let (listener, addr) = listener().await;
    drop(listener); // nothing listens: refused
    let (handle, mut events) = Supervisor::builder(TcpLines::new(&addr).unwrap())
        .backoff(backoff(10, 100, Jitter::Full))
        .max_attempts(3)
        .seed(2)
        .spawn()
        .unwrap();
    let error = timeout(BOUND, handle.stopped()).await.unwrap().unwrap();
    assert_eq!(error.kind(), Kind::Refused);
    assert_eq!(error.phase(), Phase::Connect);
    assert_eq!(error.attempts(), Some(3));
    assert!(error.to_string().contains("refused") || format!("{error:?}").contains("Refused"));
    let failed = {
        let mut n = 0;
        while let Some(ev) = events.recv().await {
            n += usize::from(matches!(ev, Event::AttemptFailed { .. }));
        }
        n
    };
    assert_eq!(failed, 3);
    assert!(matches!(
        handle.send("late".into()),
        Err(SendError::Stopped(m)) if m == "late"
    ));
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_elapsed() {
    let (listener, addr) = listener().await;
    drop(listener);
    let start = Instant::now();
    let (handle, _events) = Supervisor::builder(TcpLines::new(&addr).unwrap())
        .backoff(backoff(100, 1000, Jitter::None))
        .max_elapsed(2000 * MS)
        .spawn()
        .unwrap();
    let error = timeout(BOUND, handle.stopped()).await.unwrap().unwrap();
    assert_eq!(error.kind(), Kind::Refused);
    // 100 + 200 + 400 + 800 = 1500 ms slept; the next 1000 ms would pass the budget.
    assert_eq!(start.elapsed().as_millis() / 10, 150);
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_prompt_and_hands_back_queued_messages() {
    let (listener, addr) = listener().await;
    drop(listener);
    let (handle, mut events) = Supervisor::builder(TcpLines::new(&addr).unwrap())
        .backoff(backoff(60_000, 60_000, Jitter::None))
        .spawn()
        .unwrap();
    let mut state = handle.state();
    wait_state(&mut state, |s| matches!(s, State::Reconnecting { .. })).await;
    handle.send("a".into()).unwrap();
    handle.send("b".into()).unwrap();
    let start = Instant::now();
    assert!(handle.shutdown().await.is_none());
    assert!(start.elapsed() < MS, "no waiting out the 60 s backoff");
    let mut tail = VecDeque::new();
    while let Some(ev) = events.recv().await {
        tail.push_back(ev);
    }
    assert!(
        tail.iter().any(
            |e| matches!(e, Event::Unconfirmed(v) if v == &["a".to_string(), "b".to_string()])
        )
    );
    assert!(matches!(tail.back(), Some(Event::Stopped { error: None })));
}

// === configuration ===

#[tokio::test]
async fn invalid_settings_are_rejected_naming_the_field() {
    let tcp = || TcpLines::new("127.0.0.1:1").unwrap();
    let field = |r: Result<_, backstop_classify::ConfigError>| {
        r.map(|_| ()).unwrap_err().field().to_string()
    };
    assert_eq!(
        field(Supervisor::builder(tcp()).queue_capacity(0).spawn()),
        "queue_capacity"
    );
    assert_eq!(
        field(Supervisor::builder(tcp()).max_attempts(0).spawn()),
        "max_attempts"
    );
    assert_eq!(
        field(
            Supervisor::builder(tcp())
                .healthy_after(Duration::ZERO)
                .spawn()
        ),
        "healthy_after"
    );
    assert_eq!(
        field(
            Supervisor::builder(tcp())
                .max_elapsed(Duration::ZERO)
                .spawn()
        ),
        "max_elapsed"
    );
    assert_eq!(
        field(
            Supervisor::builder(tcp())
                .attempt_timeout(Duration::ZERO)
                .spawn()
        ),
        "attempt_timeout"
    );
    let hb = Heartbeat::new(Duration::ZERO, MS, String::new, |_: &String| false);
    assert_eq!(hb.unwrap_err().field(), "heartbeat.interval");
    assert_eq!(TcpLines::new("no port").unwrap_err().field(), "addr");
    assert_eq!(TcpLines::new("127.0.0.1").unwrap_err().field(), "addr");
}

#[test]
fn spawning_outside_a_runtime_is_an_error_not_a_panic() {
    let err = Supervisor::builder(TcpLines::new("127.0.0.1:1").unwrap())
        .spawn()
        .unwrap_err();
    assert_eq!(err.field(), "runtime");
}

// === connectors and handles ===

#[tokio::test(start_paused = true)]
async fn a_tower_service_connects_and_dropping_every_handle_stops_the_supervisor() {
    let (listener, addr) = listener().await;
    let (mut lines, _close, say) = line_server(listener);
    let service = tower::service_fn(|addr: String| {
        let mut tcp = TcpLines::new(addr).unwrap();
        async move { tcp.connect().await }
    });
    let (handle, mut events) =
        Supervisor::builder(backstop_reconnect::ServiceConnector::new(service, addr))
            .spawn()
            .unwrap();
    handle.send("up".into()).unwrap();
    assert_eq!(
        timeout(BOUND, lines.recv()).await.unwrap(),
        Some((1, "up".into()))
    );
    say.send("down".into()).unwrap();
    assert_eq!(events.next_message().await.as_deref(), Some("down"));

    let state = handle.state();
    drop(handle);
    let last = timeout(BOUND, async {
        let mut last = None;
        while let Some(ev) = events.recv().await {
            last = Some(ev);
        }
        last
    })
    .await
    .unwrap();
    assert!(
        matches!(last, Some(Event::Stopped { error: None })),
        "{last:?}"
    );
    assert!(state.borrow().is_stopped());
}
