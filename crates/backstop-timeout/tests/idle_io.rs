//! IdleIo over in-memory pipes, on tokio's paused clock: what counts as waiting, on each side.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::time::Duration;

use backstop_classify::{Error, Kind, Phase, Timer};
use backstop_timeout::{IdleIo, Side};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, sleep};

const PERIOD: Duration = Duration::from_secs(1);
const SLACK: Duration = Duration::from_millis(20);

fn assert_idle(err: &io::Error, phase: Phase) {
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err:?}");
    let ours = Error::find_in(err).expect("a backstop error inside");
    assert_eq!(ours.kind(), Kind::TimedOut(Timer::Idle));
    assert_eq!(ours.phase(), phase);
}

fn assert_within(elapsed: Duration, expected: Duration) {
    assert!(
        elapsed >= expected && elapsed <= expected + SLACK,
        "took {elapsed:?}, expected {expected:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn client_read_is_not_timed_until_we_have_asked_for_something() {
    let (near, mut far) = tokio::io::duplex(1024);
    let (mut reader, mut writer) = tokio::io::split(IdleIo::new(near, PERIOD, Side::Client));
    let start = Instant::now();
    let read = async {
        let mut buf = [0u8; 16];
        reader.read(&mut buf).await
    };
    let ask_later = async {
        // Resting like a pooled connection, far longer than the period...
        sleep(PERIOD * 10).await;
        // ...then a request goes out and nothing comes back.
        writer.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    };
    let (read, ()) = tokio::join!(read, ask_later);
    assert_idle(&read.unwrap_err(), Phase::AwaitHeaders);
    assert_within(start.elapsed(), PERIOD * 11);
    let mut request = [0u8; 18];
    far.read_exact(&mut request).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_read_parked_in_one_task_is_timed_when_another_task_asks() {
    let (near, mut far) = tokio::io::duplex(1024);
    let (mut reader, mut writer) = tokio::io::split(IdleIo::new(near, PERIOD, Side::Client));
    let start = Instant::now();
    // The read parks in a task of its own, untimed: nothing has been asked yet.
    let read = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        let result = reader.read(&mut buf).await;
        (result, Instant::now())
    });
    sleep(PERIOD * 3).await;
    assert!(!read.is_finished(), "a resting read must not be timed");
    // Another task asks; nothing comes back. The timer must wake the reading task, not this one.
    let asked_at = Instant::now();
    tokio::spawn(async move {
        writer.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        writer
    })
    .await
    .unwrap();
    let (result, failed_at) = tokio::time::timeout(PERIOD * 10, read)
        .await
        .expect("the parked read was never woken to fail")
        .unwrap();
    assert_idle(&result.unwrap_err(), Phase::AwaitHeaders);
    assert_within(failed_at - asked_at, PERIOD);
    assert_within(failed_at - start, PERIOD * 4);
    let mut request = [0u8; 18];
    far.read_exact(&mut request).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_reader_parked_again_after_an_answer_is_timed_for_the_next_question() {
    let (near, mut far) = tokio::io::duplex(1024);
    let (mut reader, mut writer) = tokio::io::split(IdleIo::new(near, PERIOD, Side::Client));
    // One task reads for the whole connection, as hyper's connection task does.
    let reads = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        let first = reader.read(&mut buf).await;
        let second = reader.read(&mut buf).await;
        (first, second, Instant::now())
    });
    // The reader parks at rest before anything is asked...
    sleep(PERIOD * 2).await;
    assert!(!reads.is_finished(), "a resting read must not be timed");
    // ...then a first question, answered.
    writer.write_all(b"GET /1").await.unwrap();
    let mut request = [0u8; 6];
    far.read_exact(&mut request).await.unwrap();
    far.write_all(b"200").await.unwrap();
    // The reader parks again, at rest: well past the period, nothing fails.
    sleep(PERIOD * 3).await;
    assert!(!reads.is_finished(), "a resting read must not be timed");
    // A second question, never answered: the parked reader is woken to fail a period later.
    let asked_at = Instant::now();
    writer.write_all(b"GET /2").await.unwrap();
    let (first, second, failed_at) = tokio::time::timeout(PERIOD * 10, reads)
        .await
        .expect("the parked read was never woken to fail")
        .unwrap();
    assert_eq!(first.unwrap(), 3);
    assert_idle(&second.unwrap_err(), Phase::AwaitHeaders);
    assert_within(failed_at - asked_at, PERIOD);
    far.read_exact(&mut request).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn client_answer_stops_the_timer_and_the_connection_may_rest() {
    let (near, mut far) = tokio::io::duplex(1024);
    let mut io = IdleIo::new(near, PERIOD, Side::Client);
    io.write_all(b"request").await.unwrap();
    far.write_all(b"answer").await.unwrap();
    let mut buf = [0u8; 6];
    io.read_exact(&mut buf).await.unwrap();
    // Answered: a read now pending is a resting connection, never timed out.
    let rest = tokio::time::timeout(PERIOD * 10, io.read(&mut buf)).await;
    assert!(rest.is_err(), "the resting read ended: {rest:?}");
    assert!(!io.is_expired());
}

#[tokio::test(start_paused = true)]
async fn server_read_is_timed_from_the_first_read() {
    let (near, _far) = tokio::io::duplex(1024);
    let mut io = IdleIo::new(near, PERIOD, Side::Server);
    let start = Instant::now();
    let err = io.read(&mut [0u8; 16]).await.unwrap_err();
    assert_within(start.elapsed(), PERIOD);
    assert_idle(&err, Phase::AwaitHeaders);
    // Once expired, it stays dead.
    assert!(io.is_expired());
    assert_idle(&io.write(b"x").await.unwrap_err(), Phase::AwaitHeaders);
}

#[tokio::test(start_paused = true)]
async fn a_write_that_makes_no_progress_fails_in_phase_send() {
    let (near, _far) = tokio::io::duplex(64);
    let mut io = IdleIo::new(near, PERIOD, Side::Client);
    let start = Instant::now();
    let err = io.write_all(&[0u8; 1024]).await.unwrap_err();
    assert_within(start.elapsed(), PERIOD);
    assert_idle(&err, Phase::Send);
}

#[tokio::test(start_paused = true)]
async fn a_steady_drip_keeps_the_connection_alive_and_silence_ends_it() {
    let (near, mut far) = tokio::io::duplex(1024);
    let mut io = IdleIo::new(near, PERIOD, Side::Server);
    let drip = async {
        for _ in 0..10 {
            sleep(PERIOD / 2).await;
            far.write_all(b"x").await.unwrap();
        }
        far
    };
    let read = async {
        let mut got = 0;
        let mut buf = [0u8; 16];
        let err = loop {
            match io.read(&mut buf).await {
                Ok(n) => got += n,
                Err(err) => break err,
            }
        };
        (got, err, Instant::now())
    };
    let start = Instant::now();
    let (far, (got, err, failed_at)) = tokio::join!(drip, read);
    assert_eq!(got, 10, "every drip arrived");
    assert_idle(&err, Phase::AwaitHeaders);
    // The last byte came at 5 periods; silence for one period after it ends the connection.
    assert_within(failed_at - start, PERIOD * 6);
    drop(far);
}

#[tokio::test(start_paused = true)]
async fn writing_counts_as_activity_for_a_server_read() {
    // A long download: the client sends nothing, the server keeps writing.
    let (near, mut far) = tokio::io::duplex(1024);
    let (mut reader, mut writer) = tokio::io::split(IdleIo::new(near, PERIOD, Side::Server));
    let download = async {
        for _ in 0..10 {
            writer.write_all(&[7u8; 100]).await.unwrap();
            sleep(PERIOD / 2).await;
        }
    };
    let drain = async {
        let mut buf = vec![0u8; 1000];
        far.read_exact(&mut buf).await.unwrap();
    };
    let mut one = [0u8; 1];
    let watch = tokio::time::timeout(PERIOD * 5, reader.read(&mut one));
    let ((), (), watch) = tokio::join!(download, drain, watch);
    assert!(
        watch.is_err(),
        "the read failed during the download: {watch:?}"
    );
}
