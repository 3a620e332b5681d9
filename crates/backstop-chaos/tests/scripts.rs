//! Scripted sequences and runtime fault switches.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use backstop_chaos::{ChaosServer, Fault, Script};
use common::*;

async fn status(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Body,
    >,
    url: &str,
) -> u16 {
    bounded(client.request(get(url)))
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn fail_times_then_ok() {
    let chaos = ChaosServer::start().await.unwrap();
    chaos.script("/flaky", Script::fail_times(2, Fault::status(503)));
    let client = h1_client();
    let url = chaos.url("/flaky/thing");
    assert_eq!(status(&client, &url).await, 503);
    assert_eq!(status(&client, &url).await, 503);
    assert_eq!(status(&client, &url).await, 200);
    assert_eq!(status(&client, &url).await, 200);
    // Other paths are unaffected.
    assert_eq!(status(&client, &chaos.url("/other")).await, 200);
    assert_eq!(chaos.count_path("/flaky/thing"), 4);
}

#[tokio::test]
async fn fail_times_with_reset_then_ok() {
    let chaos = ChaosServer::builder()
        .script("/pay", Script::fail_times(1, Fault::ResetAfterRead))
        .start()
        .await
        .unwrap();
    let client = h1_client();
    let err = bounded(client.request(post(&chaos.url("/pay"), b"x")))
        .await
        .unwrap_err();
    assert!(is_reset(&err), "{}", describe(&err));
    let resp = bounded(client.request(post(&chaos.url("/pay"), b"x")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(chaos.count("POST", "/pay"), 2);
}

#[tokio::test(start_paused = true)]
async fn down_for_follows_paused_clock() {
    let chaos = ChaosServer::start().await.unwrap();
    chaos.script(
        "/svc",
        Script::down_for(Duration::from_secs(30), Fault::status(503)),
    );
    let client = h1_client();
    let url = chaos.url("/svc");
    assert_eq!(status(&client, &url).await, 503);
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(status(&client, &url).await, 503);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(status(&client, &url).await, 200);
}

#[tokio::test]
async fn sequence_flaps() {
    let chaos = ChaosServer::start().await.unwrap();
    chaos.script(
        "/flap",
        Script::sequence(vec![Fault::status(502), Fault::Ok, Fault::status(503)]),
    );
    let client = h1_client();
    let url = chaos.url("/flap");
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(status(&client, &url).await);
    }
    assert_eq!(got, [502, 200, 503, 200]);
}

#[tokio::test]
async fn set_fault_for_and_clear_longest_prefix_wins() {
    let chaos = ChaosServer::start().await.unwrap();
    let client = h1_client();
    chaos.set_fault_for("/api", Fault::status(500));
    chaos.set_fault_for("/api/health", Fault::Ok);
    assert_eq!(status(&client, &chaos.url("/api/users")).await, 500);
    assert_eq!(status(&client, &chaos.url("/api/health")).await, 200);
    // Explicit fault selection bypasses scripts.
    assert_eq!(
        status(&client, &chaos.url("/fault/status?code=404")).await,
        404
    );
    chaos.clear("/api");
    assert_eq!(status(&client, &chaos.url("/api/users")).await, 200);
    chaos.set_fault_for("/", Fault::status(503));
    assert_eq!(status(&client, &chaos.url("/anything")).await, 503);
    chaos.clear_all();
    assert_eq!(status(&client, &chaos.url("/anything")).await, 200);
}
