//! Three hops on loopback, real sockets and real time: client → server A → server B, where A
//! calls B from inside its handler with no deadline code of its own. B sees less time than A did,
//! and when the client's deadline runs out B's handler is cancelled too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backstop_classify::{Kind, Timer};
use backstop_deadline::Deadline;
use backstop_deadline::{DeadlineLayer, Propagation, ServerDeadlineLayer};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Serves `svc` on 127.0.0.1 (HTTP/1.1 and HTTP/2) until the test ends.
async fn serve<S>(svc: S) -> SocketAddr
where
    S: Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = svc.clone();
            tokio::spawn(async move {
                let hyper_svc = hyper::service::service_fn(move |req| svc.clone().oneshot(req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), hyper_svc)
                    .await;
            });
        }
    });
    addr
}

/// Sends an event when dropped: how a test sees a handler future being cancelled.
struct OnDrop(mpsc::UnboundedSender<(&'static str, Instant)>, &'static str);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.send((self.1, Instant::now()));
    }
}

#[tokio::test]
async fn three_hops_share_one_budget_and_the_last_hop_is_cancelled_at_the_deadline() {
    tokio::time::timeout(Duration::from_secs(10), three_hops())
        .await
        .expect("bounded");
}

async fn three_hops() {
    let (events, mut dropped) = mpsc::unbounded_channel();
    let seen: Arc<Mutex<Vec<(&'static str, Duration)>>> = Arc::default();

    // B: records the time it has left, then works for far longer than anyone waits.
    let (b_seen, b_events) = (seen.clone(), events.clone());
    let b = ServerDeadlineLayer::new().layer(tower::service_fn(move |req: Request<Incoming>| {
        let left = Deadline::of(&req).map(|d| d.remaining());
        b_seen.lock().unwrap().push(("b", left.unwrap()));
        let guard = OnDrop(b_events.clone(), "b");
        async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"b done"))))
        }
    }));
    let b_addr = serve(b).await;

    // A: an ordinary handler calling B through a backstop client built once at start-up; no
    // deadline code in the handler.
    // Told to B (ours, on loopback), as it would not be to a third party.
    let a_client = DeadlineLayer::builder()
        .propagation(Propagation::new().only_to(["127.0.0.1"]).unwrap())
        .build()
        .unwrap()
        .layer(http_client());
    let (a_seen, a_events) = (seen.clone(), events.clone());
    let a = ServerDeadlineLayer::new().layer(tower::service_fn(move |req: Request<Incoming>| {
        let left = Deadline::of(&req).map(|d| d.remaining());
        a_seen.lock().unwrap().push(("a", left.unwrap()));
        let guard = OnDrop(a_events.clone(), "a");
        let client = a_client.clone();
        async move {
            let _guard = guard;
            let uri: http::Uri = format!("http://{b_addr}/work").parse().unwrap();
            // Passes B's answer on, and a failure to reach B as 502.
            let mut res = Response::new(Full::new(Bytes::new()));
            match client
                .oneshot(Request::get(uri).body(Empty::new()).unwrap())
                .await
            {
                Ok(b_res) => *res.status_mut() = b_res.status(),
                Err(_) => *res.status_mut() = StatusCode::BAD_GATEWAY,
            }
            Ok::<_, Infallible>(res)
        }
    }));
    let a_addr = serve(a).await;

    // The client: one second for everything, told to A (by host and port).
    let client = DeadlineLayer::builder()
        .timeout(Duration::from_secs(1))
        .propagation(Propagation::new().only_to([a_addr.to_string()]).unwrap())
        .build()
        .unwrap()
        .layer(http_client());
    let start = Instant::now();
    let uri: http::Uri = format!("http://{a_addr}/").parse().unwrap();
    let outcome = client
        .oneshot(Request::get(uri).body(Empty::new()).unwrap())
        .await;
    let ended = start.elapsed();
    // Whoever is first: B and A give up a margin ahead of the client and the 504 travels back,
    // or the client's own timer fires.
    match outcome {
        Ok(res) => assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT),
        Err(err) => assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline)),
    }
    assert!(
        ended >= Duration::from_millis(900) && ended <= Duration::from_millis(1200),
        "the call ended at {ended:?}, not at the 1 s deadline"
    );

    // Both handlers are dropped, B by the budget it inherited through A.
    let mut cancelled = Vec::new();
    while cancelled.len() < 2 {
        let (who, at) = tokio::time::timeout(Duration::from_secs(3), dropped.recv())
            .await
            .expect("both handlers are cancelled within 3 s")
            .unwrap();
        cancelled.push((who, at - start));
    }
    let b_cancelled = cancelled.iter().find(|(who, _)| *who == "b").unwrap().1;
    assert!(
        b_cancelled < Duration::from_millis(1200),
        "B cancelled at {b_cancelled:?}"
    );

    let seen = seen.lock().unwrap().clone();
    let left = |who| seen.iter().find(|(w, _)| *w == who).unwrap().1;
    let (a_left, b_left) = (left("a"), left("b"));
    eprintln!(
        "call ended at {ended:?}; A saw {a_left:?}, B saw {b_left:?}; cancelled: {cancelled:?}"
    );
    assert!(a_left < Duration::from_secs(1), "A saw {a_left:?}");
    assert!(b_left < a_left, "B saw {b_left:?}, A saw {a_left:?}");
    // Each hop takes off at least the 10 ms safety margin.
    assert!(a_left <= Duration::from_millis(990) && b_left <= a_left - Duration::from_millis(10));
}

#[tokio::test]
async fn a_server_answers_504_on_loopback_when_its_handler_outlives_the_callers_budget() {
    let b = ServerDeadlineLayer::new().layer(tower::service_fn(|_req: Request<Incoming>| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    }));
    let addr = serve(b).await;
    let req = Request::get(format!("http://{addr}/").parse::<http::Uri>().unwrap())
        .header("request-timeout-ms", "200")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let start = Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(5), http_client().request(req))
        .await
        .expect("bounded")
        .unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

mod chaos {
    //! Against the fault-injecting upstream: real sockets, real time.

    use super::*;
    use backstop_chaos::ChaosServer;
    use backstop_classify::Phase;
    use backstop_deadline::Covers;
    use http_body_util::BodyExt;

    async fn body_outcome(covers: Covers) -> (usize, Option<backstop_classify::Error>, Duration) {
        let chaos = ChaosServer::builder().tls(false).start().await.unwrap();
        let client = DeadlineLayer::builder()
            .timeout(Duration::from_millis(700))
            .covers(covers)
            .build()
            .unwrap()
            .layer(http_client());
        // Ten bytes, one every 150 ms: the body takes 1.5 s.
        let uri: http::Uri = chaos
            .url("/fault/drip?chunk=1&ms=150&total=10")
            .parse()
            .unwrap();
        let start = Instant::now();
        let res = client
            .oneshot(Request::get(uri).body(Empty::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let mut body = res.into_body();
        let mut bytes = 0;
        let err = loop {
            match body.frame().await {
                Some(Ok(frame)) => bytes += frame.data_ref().map_or(0, |d| d.len()),
                Some(Err(err)) => break Some(err),
                None => break None,
            }
        };
        let took = start.elapsed();
        chaos.shutdown().await;
        (bytes, err, took)
    }

    #[tokio::test]
    async fn a_dripping_body_fails_mid_stream_when_the_deadline_covers_it() {
        let (bytes, err, took) =
            tokio::time::timeout(Duration::from_secs(10), body_outcome(Covers::Body))
                .await
                .expect("bounded");
        let err = err.expect("the body fails at the deadline");
        assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline));
        assert_eq!(err.phase(), Phase::ReadBody);
        assert!(
            (1..10).contains(&bytes),
            "{bytes} bytes arrived before the deadline"
        );
        assert!(
            took >= Duration::from_millis(690) && took < Duration::from_millis(1200),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_dripping_body_is_untouched_when_the_deadline_covers_only_the_head() {
        let (bytes, err, took) =
            tokio::time::timeout(Duration::from_secs(10), body_outcome(Covers::Head))
                .await
                .expect("bounded");
        assert!(err.is_none(), "{err:?}");
        assert_eq!(bytes, 10);
        assert!(took >= Duration::from_millis(1300), "{took:?}");
    }

    #[tokio::test]
    async fn a_stalled_head_fails_at_the_deadline_before_the_attempt_timeout() {
        let chaos = ChaosServer::builder().tls(false).start().await.unwrap();
        let client = tower::ServiceBuilder::new()
            .layer(
                DeadlineLayer::builder()
                    .timeout(Duration::from_millis(400))
                    .build()
                    .unwrap(),
            )
            .layer(backstop_deadline::AttemptTimeoutLayer::new(
                Duration::from_secs(2),
            ))
            .service(http_client());
        let uri: http::Uri = chaos.url("/fault/stall-headers?ms=5000").parse().unwrap();
        let start = Instant::now();
        let err = tokio::time::timeout(
            Duration::from_secs(10),
            client.oneshot(Request::get(uri).body(Empty::new()).unwrap()),
        )
        .await
        .expect("bounded")
        .unwrap_err();
        let took = start.elapsed();
        assert_eq!(err.kind(), Kind::TimedOut(Timer::Deadline));
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_millis(900),
            "{took:?}"
        );
        assert_eq!(chaos.count("GET", "/fault/stall-headers"), 1);
        chaos.shutdown().await;
    }
}
