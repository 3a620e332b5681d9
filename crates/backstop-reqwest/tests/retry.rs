//! The retry budget and the seeded jitter, through the middleware against the chaos upstream on
//! tokio's paused clock; and reqwest's own timeouts as `classify_reqwest` names them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use backstop_chaos::{BlackHole, ChaosServer, Fault, Script};
use backstop_classify::Timer;
use backstop_reqwest::{
    BackstopMiddleware, Kind, Phase, RetryBudget, RetryInfo, Retryable, StopReason,
    classify_reqwest,
};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};

fn client_with(backstop: BackstopMiddleware) -> ClientWithMiddleware {
    let inner = reqwest::Client::builder().no_proxy().build().unwrap();
    ClientBuilder::new(inner).with(backstop).build()
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_returns_the_failure_unretried() {
    let chaos = ChaosServer::builder().tls(false).start().await.unwrap();
    chaos.script("/flaky", Script::always(Fault::ResetAfterRead));
    // Half a retry per call, no floor.
    let backstop = BackstopMiddleware::builder()
        .budget(RetryBudget::builder().ratio(0.5).min_per_second(0))
        .build()
        .unwrap();
    let client = client_with(backstop.clone());

    let err = client.get(chaos.url("/flaky")).send().await.unwrap_err();
    let ours = backstop_reqwest::classified(&err).unwrap();
    // The error is the reset, not the budget; the budget is why it stopped.
    assert_eq!(ours.kind(), Kind::Reset);
    let info = RetryInfo::of_error(ours).unwrap();
    assert_eq!(
        (info.attempts(), info.stopped()),
        (1, Some(StopReason::BudgetExhausted))
    );
    assert_eq!(chaos.request_count(), 1);

    // The second call's deposit makes one whole retry: it is retried once, then stops again.
    chaos.reset_counts();
    let err = client.get(chaos.url("/flaky")).send().await.unwrap_err();
    let info = RetryInfo::of_error(backstop_reqwest::classified(&err).unwrap()).unwrap();
    assert_eq!(
        (info.attempts(), info.stopped()),
        (2, Some(StopReason::BudgetExhausted))
    );
    assert_eq!(chaos.request_count(), 2);
    assert_eq!(backstop.budget().unwrap().available(), 0);
    chaos.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_seed_repeats_the_backoff_and_it_stays_within_its_cap() {
    let chaos = ChaosServer::builder().tls(false).start().await.unwrap();
    chaos.script("/down", Script::always(Fault::status(503)));
    let delays = |seed| {
        let url = chaos.url("/down");
        async move {
            let client = client_with(
                BackstopMiddleware::builder()
                    .base_delay(Duration::from_millis(100))
                    .max_delay(Duration::from_millis(150))
                    .seed(seed)
                    .build()
                    .unwrap(),
            );
            let res = client.get(url).send().await.unwrap();
            let info = *res.extensions().get::<RetryInfo>().unwrap();
            assert_eq!(info.attempts(), 3);
            info.delays().collect::<Vec<_>>()
        }
    };
    let first = delays(1).await;
    assert_eq!(first, delays(1).await);
    assert_ne!(first, delays(2).await);
    // Full jitter: random(0, min(cap, base·2ⁿ)).
    assert!(first[0] <= Duration::from_millis(100), "{first:?}");
    assert!(first[1] <= Duration::from_millis(150), "{first:?}");
    chaos.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn reqwests_own_timeouts_are_named() {
    // The connect timeout: nothing was sent, any method may try again.
    let hole = BlackHole::start().await.unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let err = client
        .post(format!("http://{}/", hole.addr()))
        .send()
        .await
        .unwrap_err();
    let failure = classify_reqwest(&err);
    assert_eq!(
        (failure.kind(), failure.phase(), failure.retryable()),
        (
            Kind::TimedOut(Timer::Connect),
            Phase::Connect,
            Retryable::Safe
        )
    );

    // reqwest's per-request timeout while the head is awaited: an attempt timed out, which only
    // an idempotent request may repeat.
    let chaos = ChaosServer::builder().tls(false).start().await.unwrap();
    chaos.script(
        "/slow",
        Script::always(Fault::StallHeaders { duration: None }),
    );
    let err = client
        .get(chaos.url("/slow"))
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    let failure = classify_reqwest(&err);
    assert_eq!(failure.kind(), Kind::TimedOut(Timer::Attempt));
    assert_eq!(failure.retryable(), Retryable::IfIdempotent);
    chaos.shutdown().await;
}
