//! Assembling backstop's layers by hand around a hyper-util client, in the documented order:
//! Deadline → Retry → CircuitBreaker → Classify → AttemptTimeout → client, with a connector of
//! ConnectTimeout(IdleTimeout(HTTP)).
//!
//! `cargo run --example hyper_client` talks to an in-process chaos upstream on loopback.

use std::time::Duration;

use backstop::breaker::CircuitBreakerLayer;
use backstop::chaos::{ChaosServer, Fault, Script};
use backstop::classify::ClassifyLayer;
use backstop::deadline::{AttemptTimeoutLayer, DeadlineLayer, InnerWaits};
use backstop::retry::{ReplayBody, RetryInfo, RetryLayer};
use backstop::timeout::{
    BodyIdleTimeoutLayer, ConnectTimeoutLayer, ConnectionIdleTimeoutLayer, TcpConnector,
};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let chaos = ChaosServer::start().await?;
    chaos.script("/flaky", Script::fail_times(2, Fault::status(503)));

    // The connector: every connection bounded while it is made and while it waits for bytes.
    let idle = Duration::from_secs(5);
    let connector = ServiceBuilder::new()
        .layer(ConnectTimeoutLayer::new(Duration::from_secs(1)))
        .layer(ConnectionIdleTimeoutLayer::new(idle))
        .service(TcpConnector::new());
    let hyper_client =
        Client::builder(TokioExecutor::new()).build::<_, ReplayBody<Full<Bytes>>>(connector);

    // The call: outermost first.
    let client = ServiceBuilder::new()
        .layer(
            DeadlineLayer::builder()
                .timeout(Duration::from_secs(5))
                // The attempt timeout below bounds every attempt by this deadline too, and
                // backstop's retry never sleeps past it: one timer per attempt.
                .inner_waits(InnerWaits::BoundedByAttemptTimeout)
                .build()?,
        )
        .layer(RetryLayer::builder().max_attempts(3).build()?)
        .layer(CircuitBreakerLayer::new())
        .layer(ClassifyLayer::new())
        .layer(AttemptTimeoutLayer::new(Duration::from_secs(2)))
        .layer(BodyIdleTimeoutLayer::new(idle))
        .service(hyper_client);

    let req = http::Request::get(chaos.url("/flaky")).body(Full::new(Bytes::new()))?;
    let res = client.clone().oneshot(req).await?;
    let info = RetryInfo::of(&res);
    println!(
        "GET /flaky -> {} after {} attempt(s), delays {:?}",
        res.status(),
        info.attempts(),
        info.delays().collect::<Vec<_>>()
    );

    let req = http::Request::post(chaos.fault_url(&Fault::ResetAfterRead))
        .body(Full::new(Bytes::from_static(b"{\"amount\": 42}")))?;
    match client.oneshot(req).await {
        Ok(res) => println!("POST reset-after-read -> {}", res.status()),
        Err(err) => println!(
            "POST reset-after-read -> {} ({}); delivered {} time(s): never replayed",
            err.kind(),
            err.retryable(),
            chaos.count("POST", "/fault/reset-after-read")
        ),
    }
    Ok(())
}
