//! Request bodies replayed across attempts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use backstop_classify::{Error, Kind, Phase};
use backstop_retry::{RetryInfo, RetryLayer, StopReason};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use support::{Chunked, Reply, Upstream};
use tower::{Layer, ServiceExt, service_fn};

async fn send(
    upstream: &Upstream,
    req: Request<Chunked>,
) -> Result<http::Response<http_body_util::Full<Bytes>>, Error> {
    let up = upstream.clone();
    let layer = RetryLayer::builder().seed(1).no_budget().build().unwrap();
    let svc = layer.layer(service_fn(move |req| up.clone().handle(req)));
    svc.oneshot(req).await
}

fn put(body: Chunked) -> Request<Chunked> {
    Request::put("http://127.0.0.1/upload").body(body).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_10_kib_streaming_body_is_replayed_byte_identical() {
    let (body, all) = Chunked::pattern(10 * 1024, 1000);
    let upstream = Upstream::new([
        Reply::status(503),
        Reply::Fail(Kind::Reset, Phase::AwaitHeaders),
    ]);
    let res = send(&upstream, put(body)).await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 3);
    for attempt in &seen {
        assert_eq!(attempt.body, all);
        assert!(attempt.body_error.is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_limit_is_sent_once_and_not_retried() {
    let (body, all) = Chunked::pattern(1024 * 1024, 16 * 1024);
    let upstream = Upstream::new([Reply::status(503)]);
    let res = send(&upstream, put(body)).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        RetryInfo::of(&res).stopped(),
        Some(StopReason::BodyNotReplayable)
    );
    assert_eq!(upstream.calls(), 1);
    assert_eq!(upstream.seen()[0].body, all);

    let (body, _) = Chunked::pattern(1024 * 1024, 16 * 1024);
    let upstream = Upstream::new([Reply::Fail(Kind::Reset, Phase::AwaitHeaders)]);
    let err = send(&upstream, put(body)).await.unwrap_err();
    // The error is the real failure; why it was not retried travels beside it.
    assert_eq!(err.kind(), Kind::Reset);
    assert_eq!(
        RetryInfo::of_error(&err).and_then(|info| info.stopped()),
        Some(StopReason::BodyNotReplayable)
    );
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_non_idempotent_body_is_kept_within_the_limit_and_replayed_when_never_processed() {
    // Refused before the write: nothing was read, so the POST is sent (whole) again.
    let (body, all) = Chunked::pattern(4096, 512);
    let up = Upstream::new([]);
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = RetryLayer::builder()
        .seed(1)
        .no_budget()
        .build()
        .unwrap()
        .layer(service_fn(
            move |req: Request<backstop_retry::ReplayBody<Chunked>>| {
                let up = up.clone();
                let all = all.clone();
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n == 0 {
                        // Dropped unread, like a connector that failed before the write.
                        drop(req);
                        return Err(Error::new(Kind::Refused, Phase::Connect));
                    }
                    let res = up.clone().handle(req).await?;
                    assert_eq!(up.seen()[0].body, all);
                    Ok(res)
                }
            },
        ));
    let req = Request::post("http://127.0.0.1/charge").body(body).unwrap();
    assert_eq!(svc.oneshot(req).await.unwrap().status(), 200);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);

    // A "never processed" failure after the body was read (the connection closed before the
    // request was taken, an HTTP/2 REFUSED_STREAM): the POST is sent again from the bytes kept.
    let (body, all) = Chunked::pattern(4096, 512);
    let upstream = Upstream::new([Reply::Fail(Kind::Closed, Phase::Send)]);
    let req = Request::post("http://127.0.0.1/charge").body(body).unwrap();
    let res = send(&upstream, req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(upstream.calls(), 2);
    assert_eq!(
        upstream.seen().last().map(|seen| seen.body.clone()),
        Some(all)
    );

    // Above the limit it is not kept, and the same failure ends the call.
    let (body, _) = Chunked::pattern(1024 * 1024, 16 * 1024);
    let upstream = Upstream::new([Reply::Fail(Kind::Closed, Phase::Send)]);
    let req = Request::post("http://127.0.0.1/charge").body(body).unwrap();
    let err = send(&upstream, req).await.unwrap_err();
    assert_eq!(err.kind(), Kind::Closed);
    assert_eq!(
        RetryInfo::of_error(&err).and_then(|info| info.stopped()),
        Some(StopReason::BodyNotReplayable)
    );
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_response_before_the_body_finished_neither_panics_nor_corrupts_the_replay() {
    // The upstream answers 503 after reading two of ten chunks and keeps the body (as an HTTP/2
    // transport still sending it would); the retry must send all ten chunks intact.
    let (body, all) = Chunked::pattern(10 * 1000, 1000);
    let upstream = Upstream::new([Reply::EarlyStatus(2, 503)]);
    let res = send(&upstream, put(body)).await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, all.slice(..2000));
    assert_eq!(seen[1].body, all);
    // The first attempt's body, read again after the retry started, reports an error instead of
    // stealing or duplicating bytes.
    let mut old = upstream.abandoned.lock().unwrap().pop().unwrap();
    let frame = old.frame().await.unwrap();
    let err = frame.unwrap_err();
    assert_eq!(err.kind(), Kind::Cancelled);
}

#[tokio::test(start_paused = true)]
async fn trailers_are_replayed() {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    let (body, _) = Chunked::pattern(300, 100);
    let body = body.with_trailers(trailers.clone());
    let up = Upstream::new([]);
    let seen_trailers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen_trailers.clone();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = RetryLayer::builder()
        .seed(1)
        .no_budget()
        .build()
        .unwrap()
        .layer(service_fn(
            move |req: Request<backstop_retry::ReplayBody<Chunked>>| {
                let record = record.clone();
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = &up;
                async move {
                    let collected = req.into_body().collect().await.unwrap();
                    record
                        .lock()
                        .unwrap()
                        .push((collected.trailers().cloned(), collected.to_bytes().len()));
                    let status = if n == 0 { 503 } else { 200 };
                    let mut res = http::Response::new(());
                    *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    Ok::<_, Error>(res)
                }
            },
        ));
    let res = svc.oneshot(put(body)).await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = seen_trailers.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![(Some(trailers.clone()), 300), (Some(trailers), 300)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_request_body_is_not_replayed() {
    #[derive(Default)]
    struct Broken(bool);
    impl http_body::Body for Broken {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            if self.0 {
                return std::task::Poll::Ready(Some(Err(std::io::ErrorKind::BrokenPipe.into())));
            }
            self.0 = true;
            std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(b"abc")))))
        }
    }
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = RetryLayer::builder()
        .seed(1)
        .no_budget()
        .build()
        .unwrap()
        .layer(service_fn(
            move |req: Request<backstop_retry::ReplayBody<Broken>>| {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    let err = req.into_body().collect().await.unwrap_err();
                    Err::<http::Response<()>, _>(
                        Error::new(Kind::Reset, Phase::Send).with_source(err),
                    )
                }
            },
        ));
    let err = svc
        .oneshot(
            Request::put("http://127.0.0.1/")
                .body(Broken::default())
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::Reset, "the real failure");
    assert_eq!(
        RetryInfo::of_error(&err).and_then(|info| info.stopped()),
        Some(StopReason::BodyNotReplayable)
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    let _ = Method::GET;
}
