//! A body type that replays itself: the layer's `ReplayStrategy` chosen with `with_replay`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use backstop_retry::{NotReplayable, ReplayStrategy, RetryInfo, RetryLayer, StopReason};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt, service_fn};

/// Bytes in memory replayed as a clone of themselves, refused over the limit.
struct Cloned;

impl ReplayStrategy<Full<Bytes>> for Cloned {
    type Body = Full<Bytes>;
    type Kept = Option<Full<Bytes>>;

    fn keep(body: Full<Bytes>, limit: usize) -> (Full<Bytes>, Option<Full<Bytes>>) {
        let fits = body.size_hint().exact().is_some_and(|n| n <= limit as u64);
        let kept = fits.then(|| body.clone());
        (body, kept)
    }

    fn once(body: Full<Bytes>) -> Full<Bytes> {
        body
    }

    fn replay(kept: &Option<Full<Bytes>>) -> Result<Full<Bytes>, NotReplayable> {
        kept.clone().ok_or(NotReplayable::new("over the limit"))
    }

    fn can_replay(kept: &Option<Full<Bytes>>) -> Result<(), NotReplayable> {
        kept.as_ref()
            .map(|_| ())
            .ok_or(NotReplayable::new("over the limit"))
    }
}

/// Sends `body` through a retry layer using [`Cloned`] to an upstream answering `statuses` in
/// turn (then 200); returns the final status, the call's record and every body the upstream got.
async fn send(
    layer: RetryLayer,
    statuses: &[u16],
    body: &'static [u8],
) -> (StatusCode, RetryInfo, Vec<Bytes>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(statuses.to_vec()));
    let upstream = {
        let seen = seen.clone();
        // The inner service gets the caller's body type, not a wrapper.
        service_fn(move |req: Request<Full<Bytes>>| {
            let (seen, script) = (seen.clone(), script.clone());
            async move {
                let bytes = req.into_body().collect().await?.to_bytes();
                seen.lock().unwrap().push(bytes);
                let mut script = script.lock().unwrap();
                let status = if script.is_empty() {
                    200
                } else {
                    script.remove(0)
                };
                Ok::<_, std::convert::Infallible>(
                    Response::builder().status(status).body(()).unwrap(),
                )
            }
        })
    };
    let svc = layer.with_replay::<Cloned>().layer(upstream);
    let req = Request::put("http://127.0.0.1/upload")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    (res.status(), RetryInfo::of(&res), seen)
}

fn layer(replay_limit: usize, max_attempts: u32) -> RetryLayer {
    RetryLayer::builder()
        .seed(1)
        .no_budget()
        .max_attempts(max_attempts)
        .replay_limit(replay_limit)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn each_retry_sends_the_body_the_strategy_replays() {
    let (status, info, seen) = send(layer(1024, 3), &[503, 503], b"order 42").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info.attempts(), 3);
    assert_eq!(seen, vec![Bytes::from_static(b"order 42"); 3]);
}

#[tokio::test(start_paused = true)]
async fn a_body_the_strategy_refuses_to_replay_stops_the_retries() {
    let (status, info, seen) = send(layer(4, 3), &[503, 503], b"order 42").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(info.stopped(), Some(StopReason::BodyNotReplayable));
    assert_eq!(seen, vec![Bytes::from_static(b"order 42")]);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_is_never_retried_sends_its_body_once_as_it_is() {
    let (status, info, seen) = send(layer(1024, 1), &[503], b"order 42").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(info.stopped(), Some(StopReason::AttemptsExhausted));
    assert_eq!(seen, vec![Bytes::from_static(b"order 42")]);
}
