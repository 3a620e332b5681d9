//! The verdict on a body's trailers (gRPC): filled in by `ClassifiedBody` as the body ends, from
//! the trailers, from their absence, or from the body's error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use backstop_classify::{
    ClassifyLayer, GrpcCode, GrpcPolicy, Kind, Outcome, Phase, TrailerOutcome,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tower::{Layer, ServiceExt, service_fn};

/// A body that yields the frames it was given, one per poll.
struct Frames(VecDeque<Result<Frame<Bytes>, io::Error>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Poll::Ready(self.get_mut().0.pop_front())
    }
}

fn trailers(status: &'static str) -> Frame<Bytes> {
    let mut map = HeaderMap::new();
    map.insert("grpc-status", HeaderValue::from_static(status));
    Frame::trailers(map)
}

/// Answers one streaming gRPC call (status 200, no `grpc-status` in the head) with `frames`,
/// reads the whole body, and returns the head's outcome and the trailers' verdict.
async fn stream(
    frames: Vec<Result<Frame<Bytes>, io::Error>>,
) -> (Option<Outcome>, Option<Outcome>, bool) {
    let mut frames = Some(VecDeque::from(frames));
    let svc =
        ClassifyLayer::with_policy(GrpcPolicy::new()).layer(service_fn(move |_req: Request<()>| {
            let body = Frames(frames.take().unwrap_or_default());
            async move { Ok::<_, io::Error>(Response::new(body)) }
        }));
    let res = svc.oneshot(Request::new(())).await.unwrap();
    let head = res.extensions().get::<Outcome>().copied();
    let slot = res.extensions().get::<TrailerOutcome>().cloned().unwrap();
    assert_eq!(slot.get(), None, "no verdict before the body ends");
    let failed = res.into_body().collect().await.is_err();
    (head, slot.get(), failed)
}

fn data() -> Result<Frame<Bytes>, io::Error> {
    Ok(Frame::data(Bytes::from_static(b"reply")))
}

#[tokio::test]
async fn the_trailers_status_is_the_verdict() {
    let (head, verdict, failed) = stream(vec![data(), Ok(trailers("14"))]).await;
    assert_eq!(head, Some(Outcome::Success));
    assert!(!failed);
    let failure = verdict.unwrap().failure().copied().unwrap();
    assert_eq!(failure.kind(), Kind::Grpc(GrpcCode::Unavailable));
    assert_eq!(failure.phase(), Phase::ReadBody);

    let (_, verdict, _) = stream(vec![data(), Ok(trailers("0"))]).await;
    assert_eq!(verdict, Some(Outcome::Success));
}

#[tokio::test]
async fn a_stream_ending_without_trailers_is_a_failure() {
    let (_, verdict, failed) = stream(vec![data()]).await;
    assert!(!failed);
    let failure = verdict.unwrap().failure().copied().unwrap();
    assert_eq!(failure.kind(), Kind::Grpc(GrpcCode::Unknown));
}

#[tokio::test]
async fn a_body_error_is_the_verdict_and_the_error_is_classified() {
    let reset = Err(io::Error::from(io::ErrorKind::ConnectionReset));
    let (_, verdict, failed) = stream(vec![data(), reset]).await;
    assert!(failed);
    let failure = verdict.unwrap().failure().copied().unwrap();
    assert_eq!(failure.phase(), Phase::ReadBody);
}

#[tokio::test]
async fn an_http_response_has_its_outcome_and_no_trailer_slot() {
    let svc = ClassifyLayer::new().layer(service_fn(|_req: Request<()>| async {
        Ok::<_, io::Error>(Response::new(Frames(VecDeque::from([data()]))))
    }));
    let res = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(res.extensions().get::<Outcome>(), Some(&Outcome::Success));
    assert!(res.extensions().get::<TrailerOutcome>().is_none());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, Bytes::from_static(b"reply"));
}
