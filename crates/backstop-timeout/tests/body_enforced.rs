//! The body idle timer under an enclosing layer's promise ([`Enforced`]): skipped while the
//! promised instant comes no later than the idle deadline, never at the cost of the idle bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use backstop_classify::ambient::Enforced;
use backstop_classify::{Kind, Phase, Timer};
use backstop_timeout::IdleBody;
use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::time::{Instant, advance};

const PERIOD: Duration = Duration::from_secs(1);

/// A body that never yields a frame.
struct Stalled;

impl Body for Stalled {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Pending
    }
}

type Polled = Poll<Option<Result<Frame<Bytes>, backstop_classify::Error>>>;

/// Polls `body` once, under a promise of enforcement by `enforced` if given.
async fn poll_once(body: &mut Pin<Box<IdleBody<Stalled>>>, enforced: Option<Instant>) -> Polled {
    std::future::poll_fn(|cx| {
        let _promise = enforced.map(Enforced::new);
        Poll::Ready(body.as_mut().poll_frame(cx))
    })
    .await
}

fn is_idle_timeout(polled: &Polled) -> bool {
    matches!(polled, Poll::Ready(Some(Err(err)))
        if err.kind() == Kind::TimedOut(Timer::Idle) && err.phase() == Phase::ReadBody)
}

#[tokio::test(start_paused = true)]
async fn an_earlier_promise_spares_the_timer_but_not_the_bound() {
    let mut body = Box::pin(IdleBody::new(Stalled, PERIOD));
    let promised = Instant::now() + PERIOD / 2;
    assert!(poll_once(&mut body, Some(promised)).await.is_pending());
    // Past the idle deadline, still under the (earlier) promise: the layer outside is the one to
    // fail the body, so no idle timer was registered and none fires.
    advance(PERIOD * 2).await;
    assert!(poll_once(&mut body, Some(promised)).await.is_pending());
    // Polled without the promise (e.g. unwrapped from the outer body), the idle bound holds and
    // still counts from the start of the wait.
    assert!(is_idle_timeout(&poll_once(&mut body, None).await));
}

#[tokio::test(start_paused = true)]
async fn a_later_promise_leaves_the_idle_timeout_in_charge() {
    let mut body = Box::pin(IdleBody::new(Stalled, PERIOD));
    let promised = Instant::now() + PERIOD * 5;
    assert!(poll_once(&mut body, Some(promised)).await.is_pending());
    advance(PERIOD).await;
    assert!(is_idle_timeout(&poll_once(&mut body, Some(promised)).await));
}
