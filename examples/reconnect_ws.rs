//! A WebSocket client following a sequence-numbered feed through `backstop::reconnect`, while the
//! server restarts itself over and over (up 1.2 s, down 0.5 s), ending its connections
//! alternately with a close frame and a TCP reset.
//!
//! `cargo run --example reconnect_ws` runs for 6 s (`-- --seconds N` to change it), printing every
//! state change of the supervisor, then proves there is no gap: every sequence number from 1 to
//! the last one received arrived, across every reconnection, because the on-connect hook replays
//! the subscription from the last sequence seen. It exits non-zero on a gap.
//! `RUST_LOG=backstop::reconnect=debug` shows the supervisor's tracing events too.
//!
//! Everything runs in this process, on 127.0.0.1.

use std::time::Duration;

use backstop_examples::feed::{
    BoxError, FeedConfig, FeedServer, FollowOptions, follow, print_change,
};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let run_for = seconds_argument()?.unwrap_or(Duration::from_secs(6));
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }

    let config = FeedConfig {
        up: Duration::from_millis(1200),
        down: Duration::from_millis(500),
        tick: Duration::from_millis(5),
    };
    let server = FeedServer::start(config).await?;
    println!(
        "feed at {}: one message every {} ms; the server is up {:.1} s, then down {:.1} s, again and again",
        server.url(),
        config.tick.as_millis(),
        config.up.as_secs_f64(),
        config.down.as_secs_f64()
    );
    println!(
        "following it for {:.1} s: on every connection the client sends SUB ticks FROM <last seen + 1>\n",
        run_for.as_secs_f64()
    );

    let report = follow(
        &server.url(),
        FollowOptions { run_for, seed: 7 },
        print_change,
    )
    .await?;

    println!(
        "\nserver: {} restart(s), {} messages published; client: {} connection(s), backoff: {}",
        server.restarts(),
        server.published(),
        report.connections,
        report.delays_summary()
    );
    println!("{}", report.verdict());
    if report.duplicates > 0 {
        println!(
            "duplicates are a replay overlapping messages that had already arrived \
             (at-least-once); the count above is distinct messages"
        );
    }
    println!("finished in {:.1}s", report.elapsed.as_secs_f64());
    report.check()?;
    Ok(())
}

/// `--seconds N` (fractions allowed), if given.
fn seconds_argument() -> Result<Option<Duration>, BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = match args.as_slice() {
        [] => return Ok(None),
        [flag, value] if flag == "--seconds" => value,
        _ => return Err("usage: reconnect_ws [--seconds N]".into()),
    };
    let seconds: f64 = value
        .parse()
        .map_err(|_| format!("--seconds: not a number: {value}"))?;
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .map(Some)
        .ok_or_else(|| format!("--seconds must be positive: {value}").into())
}
