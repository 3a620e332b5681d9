//! backstop's budget and backoff driving tower's own `Retry` (feature `tower-retry`), in paused
//! time.
#![cfg(feature = "tower-retry")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backstop_retry::{
    Backoff, BackoffMaker, BackoffSession, Jitter, ReplayBody, RetryBudget, RetryInfo, RetryLayer,
};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;
use tower::retry::backoff::{Backoff as _, MakeBackoff};
use tower::retry::budget::Budget;
use tower::retry::{Policy, Retry};
use tower::{Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);
const SEED: u64 = 42;

/// The policy of tower's budget example, made to deposit once per request (tower's example
/// deposits on success only, which an upstream that always fails never reaches), with an
/// optional backoff and a hard stop so that a budget that never refuses still ends the test.
#[derive(Clone)]
struct BudgetPolicy {
    budget: RetryBudget,
    backoff: Option<BackoffSession>,
    first_result: bool,
    attempts_left: u32,
}

impl BudgetPolicy {
    fn new(budget: RetryBudget, backoff: Option<BackoffSession>) -> Self {
        BudgetPolicy {
            budget,
            backoff,
            first_result: true,
            attempts_left: 1000,
        }
    }
}

impl<Req: Clone, Res, E> Policy<Req, Res, E> for BudgetPolicy {
    type Future = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        if std::mem::take(&mut self.first_result) {
            Budget::deposit(&self.budget);
        }
        if result.is_ok() || self.attempts_left == 0 || !self.budget.withdraw() {
            return None;
        }
        self.attempts_left -= 1;
        Some(match &mut self.backoff {
            Some(session) => Box::pin(session.next_backoff()),
            None => Box::pin(std::future::ready(())),
        })
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// An upstream that always fails and records when each attempt arrived.
fn failing(
    calls: Arc<Mutex<Vec<Instant>>>,
) -> impl Service<u32, Response = (), Error = &'static str, Future: Send> + Clone {
    service_fn(move |_req: u32| {
        calls.lock().unwrap().push(Instant::now());
        async { Err("down") }
    })
}

async fn send_all(policy: BudgetPolicy, calls: &Arc<Mutex<Vec<Instant>>>, requests: u32) -> usize {
    let svc = Retry::new(policy, failing(calls.clone()));
    let before = calls.lock().unwrap().len();
    for n in 0..requests {
        assert_eq!(svc.clone().oneshot(n).await, Err("down"));
    }
    calls.lock().unwrap().len() - before
}

#[tokio::test(start_paused = true)]
async fn tower_retry_stops_when_backstops_budget_is_spent() {
    // ratio 0.5, floor 2/s over 10 s: a reserve of 20 retries, and half a retry per request.
    let budget = RetryBudget::builder()
        .ratio(0.5)
        .min_per_second(2)
        .window(Duration::from_secs(10))
        .build()
        .unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let requests = 40;
    let attempts = send_all(BudgetPolicy::new(budget.clone(), None), &calls, requests).await;
    // retries = ratio × requests + min_per_second × window = 20 + 20.
    assert_eq!(attempts, 40 + 20 + 20);
    assert_eq!(budget.available(), 0);

    // Once the window has passed the deposits and withdrawals are gone: the floor is back.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let attempts = send_all(BudgetPolicy::new(budget.clone(), None), &calls, 1).await;
    assert_eq!(attempts, 1 + 20);
}

#[tokio::test(start_paused = true)]
async fn a_fractional_ratio_is_honoured_through_tower_s_trait() {
    // tower's TpsBudget turns 0.6 into a cost of one deposit per retry (100 %); ours is 60 %.
    let budget = RetryBudget::builder()
        .ratio(0.6)
        .min_per_second(0)
        .build()
        .unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let attempts = send_all(BudgetPolicy::new(budget, None), &calls, 100).await;
    assert_eq!(attempts, 100 + 60);
}

fn backoffs() -> Vec<Backoff> {
    [
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
        Jitter::None,
    ]
    .into_iter()
    .map(|jitter| Backoff::new(20 * MS, 300 * MS, jitter).unwrap())
    .collect()
}

/// The delays backstop's own layer sleeps for `requests` requests that always fail, each
/// retried up to `retries` times.
async fn layer_delays(backoff: Backoff, requests: usize, retries: u32) -> Vec<Vec<Duration>> {
    let layer = RetryLayer::builder()
        .backoff(backoff)
        .max_attempts(retries + 1)
        .no_budget()
        .seed(SEED)
        .build()
        .unwrap();
    let upstream = service_fn(|_req: Request<ReplayBody<Full<Bytes>>>| async {
        Ok::<_, std::io::Error>(
            Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .body(())
                .unwrap(),
        )
    });
    let svc = tower::Layer::layer(&layer, upstream);
    let mut all = Vec::new();
    for _ in 0..requests {
        let req = Request::get("http://127.0.0.1/")
            .body(Full::default())
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        let info = RetryInfo::of(&res);
        assert_eq!(info.attempts(), retries + 1);
        all.push(info.delays().collect());
    }
    all
}

#[tokio::test(start_paused = true)]
async fn sessions_sleep_the_delays_backstops_layer_computes() {
    let (requests, retries) = (3, 6);
    for backoff in backoffs() {
        let expected = layer_delays(backoff, requests, retries).await;
        let mut maker = BackoffMaker::with_seed(backoff, SEED);
        for want in &expected {
            let mut session = maker.make_backoff();
            let mut slept = Vec::new();
            for _ in 0..retries {
                let start = Instant::now();
                session.next_backoff().await;
                slept.push(start.elapsed());
            }
            assert_eq!(&slept, want, "{backoff:?}");
            assert!(slept.iter().all(|d| *d <= backoff.cap()), "{slept:?}");
            assert_eq!(session.retries(), retries);
        }
        // Different requests draw different delays (with jitter), as under the layer.
        if backoff.jitter() != Jitter::None {
            assert_ne!(expected[0], expected[1], "{backoff:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn tower_retry_spaces_attempts_as_backstops_layer_does() {
    let (requests, retries) = (3, 5);
    let backoff = Backoff::new(20 * MS, 300 * MS, Jitter::Decorrelated).unwrap();
    let expected = layer_delays(backoff, requests, retries).await;

    // A budget that allows every retry: the policy's attempt limit ends each request.
    let budget = RetryBudget::builder().min_per_second(1000).build().unwrap();
    let session = BackoffMaker::with_seed(backoff, SEED).make_backoff();
    let mut policy = BudgetPolicy::new(budget, Some(session));
    policy.attempts_left = retries;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let svc = Retry::new(policy, failing(calls.clone()));
    for (n, want) in expected.iter().enumerate() {
        calls.lock().unwrap().clear();
        assert_eq!(svc.clone().oneshot(n as u32).await, Err("down"));
        let times = calls.lock().unwrap().clone();
        let gaps: Vec<_> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(&gaps, want, "request {n}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_cloned_session_starts_over_on_a_stream_of_its_own() {
    let backoff = Backoff::new(20 * MS, 300 * MS, Jitter::Decorrelated).unwrap();
    let expected = layer_delays(backoff, 2, 4).await;
    let mut first = BackoffMaker::with_seed(backoff, SEED).make_backoff();
    let delays: Vec<_> = (0..4).map(|_| first.next_delay()).collect();
    assert_eq!(delays, expected[0]);
    // Cloned mid-session: retry 1 again, and the next request's stream rather than this one's.
    let mut second = first.clone();
    assert_eq!(second.retries(), 0);
    let delays: Vec<_> = (0..4).map(|_| second.next_delay()).collect();
    assert_eq!(delays, expected[1]);
}

#[tokio::test(start_paused = true)]
async fn sessions_that_never_back_off_leave_the_numbering_alone() {
    let backoff = Backoff::new(20 * MS, 300 * MS, Jitter::Full).unwrap();
    let expected = layer_delays(backoff, 1, 3).await;
    let mut maker = BackoffMaker::with_seed(backoff, SEED);
    // Requests that succeed at once make sessions and drop them unused.
    for _ in 0..5 {
        drop(maker.make_backoff());
    }
    let mut session = maker.make_backoff();
    let delays: Vec<_> = (0..3).map(|_| session.next_delay()).collect();
    assert_eq!(delays, expected[0]);
}
