//! Request bodies handed from one attempt to the next: no lock held while the caller's body is
//! polled, bodies declared larger than the limit never buffered, older attempts unable to steal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use backstop_classify::{Error, Kind, Phase};
use backstop_retry::{ReplayBody, RetryInfo, RetryLayer, StopReason};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tower::{Layer, ServiceExt, service_fn};

/// `n` chunks of `size` bytes, each its own allocation (so `Bytes::is_unique` tells whether
/// anyone else still holds it), with a recognisable pattern.
fn chunks(n: usize, size: usize) -> Vec<Bytes> {
    (0..n)
        .map(|c| {
            (0..size)
                .map(|i| ((c * size + i) * 7 % 251) as u8)
                .collect::<Vec<_>>()
                .into()
        })
        .collect()
}

fn concat(chunks: &[Bytes]) -> Bytes {
    chunks.concat().into()
}

fn status(code: u16) -> Response<()> {
    let mut res = Response::new(());
    *res.status_mut() = StatusCode::from_u16(code).unwrap();
    res
}

/// A body of known chunks that declares its exact size, as `Full` or a Content-Length body does.
/// If `gate` is set, its `n`-th poll (1-based) announces itself and then blocks its thread until
/// released: a caller's body busy inside its poll.
struct Exact {
    chunks: VecDeque<Bytes>,
    polls: usize,
    gate: Option<(usize, mpsc::Sender<()>, mpsc::Receiver<()>)>,
    panic_at: Option<usize>,
}

impl Exact {
    fn new(chunks: &[Bytes]) -> Exact {
        Exact {
            chunks: chunks.iter().cloned().collect(),
            polls: 0,
            gate: None,
            panic_at: None,
        }
    }
}

impl Body for Exact {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.polls += 1;
        let polls = self.polls;
        assert_ne!(self.panic_at, Some(polls), "the caller's body panics");
        if let Some((at, entered, release)) = &self.gate
            && *at == polls
        {
            entered.send(()).unwrap();
            release.recv().unwrap();
        }
        Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
    }
}

/// What one body gave when read to its end or first error.
#[derive(Debug, PartialEq)]
enum Read {
    Data(Bytes),
    Failed(Kind),
}

/// Reads `body` to its end or first error on this thread, without a runtime: every frame of an
/// `Exact` body is ready at once.
fn drain(mut body: ReplayBody<Exact>) -> Vec<Read> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(None) => return out,
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    out.push(Read::Data(data));
                }
            }
            Poll::Ready(Some(Err(err))) => {
                out.push(Read::Failed(err.kind()));
                return out;
            }
            Poll::Pending => panic!("a first attempt never waits on an `Exact` body"),
        }
    }
}

/// Runs `test` on a runtime of its own thread, failing if it does not finish in `limit`: a lock
/// held across the caller's poll shows up as a deadlock, which must fail the test, not hang it.
fn within<T: Send + 'static>(
    limit: Duration,
    test: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = done.send(rt.block_on(test));
    });
    finished
        .recv_timeout(limit)
        .expect("deadlocked: something waited for a lock held while the caller's body was polled")
}

#[test]
fn the_callers_body_is_polled_without_a_lock_held() {
    // The first attempt's body is read on another thread; its second poll of the caller's body
    // blocks there. Meanwhile the upstream answers 503 (as HTTP/2 can, mid-body), the retry
    // decides, makes the next body, and the next attempt asks that body for its hints — all
    // while the caller's body is inside its poll. Only then is that poll released.
    let parts = chunks(4, 100);
    let all = concat(&parts);
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let mut body = Exact::new(&parts);
    body.gate = Some((2, entered_tx, release_rx));

    let entered = Arc::new(Mutex::new(entered_rx));
    let release = Arc::new(Mutex::new(Some(release_tx)));
    let first = Arc::new(Mutex::new(None));
    let second = Arc::new(Mutex::new(None));
    let calls = Arc::new(AtomicUsize::new(0));
    let (first2, second2, calls2) = (first.clone(), second.clone(), calls.clone());
    let svc = RetryLayer::builder()
        .seed(1)
        .no_budget()
        .build()
        .unwrap()
        .layer(service_fn(move |req: Request<ReplayBody<Exact>>| {
            let n = calls2.fetch_add(1, Ordering::SeqCst);
            let (entered, release) = (entered.clone(), release.clone());
            let (first, second) = (first2.clone(), second2.clone());
            async move {
                if n == 0 {
                    let body = req.into_body();
                    *first.lock().unwrap() = Some(std::thread::spawn(move || drain(body)));
                    // Blocks until the caller's body is inside its (blocked) second poll.
                    entered.lock().unwrap().recv().unwrap();
                    return Ok::<_, Error>(status(503));
                }
                let mut body = req.into_body();
                // These must answer now, with the caller's body still inside its poll.
                let hints = (body.is_end_stream(), body.size_hint().upper());
                release.lock().unwrap().take().unwrap().send(()).unwrap();
                let mut seen = Vec::new();
                while let Some(frame) = body.frame().await {
                    seen.extend_from_slice(&frame?.into_data().unwrap());
                }
                *second.lock().unwrap() = Some((hints, Bytes::from(seen)));
                Ok(status(200))
            }
        }));
    let req = Request::put("http://127.0.0.1/upload").body(body).unwrap();
    let res = within(Duration::from_secs(30), svc.oneshot(req)).unwrap();

    assert_eq!(res.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let ((end, upper), replayed) = second.lock().unwrap().take().unwrap();
    assert!(
        !end,
        "the retry's body claimed to be at its end before sending anything"
    );
    assert!(upper.is_none_or(|upper| upper >= all.len() as u64));
    // The chunk the first attempt was reading when the retry began is replayed, not lost.
    assert_eq!(replayed, all);
    // The first attempt got both chunks it read, then a cancellation instead of further bytes.
    let handle = first.lock().unwrap().take().unwrap();
    assert_eq!(
        handle.join().unwrap(),
        vec![
            Read::Data(parts[0].clone()),
            Read::Data(parts[1].clone()),
            Read::Failed(Kind::Cancelled),
        ]
    );
}

/// A PUT through a layer keeping at most `limit` bytes, answered by `upstream`.
async fn put_through<F, Fut>(limit: usize, body: Exact, upstream: F) -> Result<Response<()>, Error>
where
    F: Fn(usize, ReplayBody<Exact>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<()>, Error>> + Send,
{
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = RetryLayer::builder()
        .seed(1)
        .no_budget()
        .replay_limit(limit)
        .build()
        .unwrap()
        .layer(service_fn(move |req: Request<ReplayBody<Exact>>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            upstream.clone()(n, req.into_body())
        }));
    let req = Request::put("http://127.0.0.1/upload").body(body).unwrap();
    svc.oneshot(req).await
}

#[tokio::test(start_paused = true)]
async fn a_body_declared_larger_than_the_limit_is_never_buffered_nor_replayed() {
    // 5 000 bytes declared against a 1 000-byte limit. The first attempt reads one 500-byte
    // chunk (well within the limit) and fails: without the declared size this would have been
    // kept and retried; with it, nothing is kept and the retry is refused at once.
    // The test keeps one reference to each chunk (shared by the upstream's clones), the body
    // has the other.
    let kept = Arc::new(chunks(10, 500));
    let body = Exact::new(&kept);
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let err = put_through(1000, body, move |_, mut body| {
        let kept = kept.clone();
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            assert_eq!(body.size_hint().exact(), Some(5000));
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert_eq!(first, kept[0]);
            drop(first);
            // Only this test still holds the chunk: the replay did not keep a reference to it.
            assert!(kept[0].is_unique(), "the first chunk was buffered");
            Err::<Response<()>, _>(Error::new(Kind::Reset, Phase::AwaitHeaders))
        }
    })
    .await
    .unwrap_err();
    assert_eq!(err.kind(), Kind::Reset, "the real failure");
    assert_eq!(
        RetryInfo::of_error(&err).and_then(|info| info.stopped()),
        Some(StopReason::BodyNotReplayable)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Answered 503 after the whole body was sent: the response is returned, marked as such.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let res = put_through(1000, Exact::new(&chunks(10, 500)), move |_, body| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            body.collect().await?;
            Ok(status(503))
        }
    })
    .await
    .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        RetryInfo::of(&res).stopped(),
        Some(StopReason::BodyNotReplayable)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_body_declared_larger_than_the_limit_is_still_resent_if_never_read() {
    // Refused before the write: no byte was read, so the whole body can be sent by the retry.
    let parts = chunks(10, 500);
    let all = concat(&parts);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let res = put_through(1000, Exact::new(&parts), move |n, body| {
        let record = record.clone();
        async move {
            if n == 0 {
                drop(body);
                return Err(Error::new(Kind::Refused, Phase::Connect));
            }
            let bytes = body.collect().await?.to_bytes();
            record.lock().unwrap().push(bytes);
            Ok(status(200))
        }
    })
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(*seen.lock().unwrap(), vec![all]);
}

#[tokio::test(start_paused = true)]
async fn an_exact_body_within_the_limit_is_replayed_with_its_exact_size() {
    let parts = chunks(4, 200);
    let all = concat(&parts);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let res = put_through(1000, Exact::new(&parts), move |n, mut body| {
        let record = record.clone();
        async move {
            // Each attempt declares the exact size (a transport sends it as Content-Length),
            // and says it is at its end as soon as the last chunk is out (HTTP/2 sets
            // END_STREAM on that frame instead of sending an empty one).
            assert_eq!(body.size_hint().exact(), Some(800), "attempt {n}");
            let mut bytes = Vec::new();
            while !body.is_end_stream() {
                let frame = body.frame().await.unwrap()?;
                bytes.extend_from_slice(&frame.into_data().unwrap());
            }
            assert_eq!(body.size_hint().exact(), Some(0), "attempt {n}");
            record.lock().unwrap().push(Bytes::from(bytes));
            Ok(status(if n == 0 { 503 } else { 200 }))
        }
    })
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(*seen.lock().unwrap(), vec![all.clone(), all]);
}

#[tokio::test(start_paused = true)]
async fn an_older_attempt_still_streaming_cannot_take_bytes_from_the_replay() {
    // HTTP/2: the first attempt was answered after two of eight chunks, and its body is still
    // alive (its stream not yet reset). The retry's reads interleave with the old body's.
    let parts = chunks(8, 100);
    let all = concat(&parts);
    let old = Arc::new(Mutex::new(None::<ReplayBody<Exact>>));
    let result = Arc::new(Mutex::new(None));
    let (keep, record) = (old.clone(), result.clone());
    let res = put_through(1000, Exact::new(&parts), move |n, mut body| {
        let (old, record) = (keep.clone(), record.clone());
        async move {
            if n == 0 {
                body.frame().await.unwrap()?;
                body.frame().await.unwrap()?;
                *old.lock().unwrap() = Some(body);
                return Ok(status(503));
            }
            let mut old_body = old.lock().unwrap().take().unwrap();
            let mut bytes = Vec::new();
            let mut old_reads = Vec::new();
            // Two chunks replayed, then the rest read from the caller's body, with the old
            // body polled between every read.
            while let Some(frame) = body.frame().await {
                bytes.extend_from_slice(&frame?.into_data().unwrap());
                assert!(!old_body.is_end_stream());
                old_reads.push(old_body.frame().await.map(|r| r.map_err(|e| e.kind())));
            }
            *record.lock().unwrap() = Some((Bytes::from(bytes), old_reads));
            Ok(status(200))
        }
    })
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let (bytes, old_reads) = result.lock().unwrap().take().unwrap();
    assert_eq!(bytes, all);
    assert_eq!(old_reads.len(), 8);
    for read in old_reads {
        assert!(
            matches!(read, Some(Err(Kind::Cancelled))),
            "the superseded body read {read:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_callers_body_that_panics_makes_the_request_unreplayable_without_stranding_it() {
    // The caller's body panics in its second poll (the first attempt's transport catches it).
    // The retry must not wait for a state that panic carried away: it reports a verdict.
    let parts = chunks(4, 100);
    let mut body = Exact::new(&parts);
    body.panic_at = Some(2);
    let err = within(
        Duration::from_secs(30),
        put_through(1000, body, |_, mut body| async move {
            body.frame().await.unwrap()?;
            let mut cx = Context::from_waker(Waker::noop());
            let poll = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                Pin::new(&mut body).poll_frame(&mut cx).is_ready()
            }));
            assert!(poll.is_err());
            Err::<Response<()>, _>(Error::new(Kind::Reset, Phase::AwaitHeaders))
        }),
    )
    .unwrap_err();
    assert_eq!(err.kind(), Kind::Reset, "the real failure");
    assert_eq!(
        RetryInfo::of_error(&err).and_then(|info| info.stopped()),
        Some(StopReason::BodyNotReplayable)
    );
}
