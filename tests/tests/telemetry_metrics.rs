//! The metrics of issue 19 through `metrics-util`'s debugging recorder, installed for the test's
//! own thread (`set_default_local_recorder` on a current-thread runtime: the upstreams, the
//! client's connections and the server all run on it). Each test takes one snapshot at its end
//! (a snapshot drains the recorder). Names: `backstop::metrics`, the README's table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use backstop::metrics::{
    CLIENT_ACTIVE_REQUESTS, CLIENT_CONNECTION_PHASE_DURATION, CLIENT_REQUEST_DURATION,
    SERVER_ACTIVE_REQUESTS, SERVER_REQUEST_DURATION,
};
use backstop::{CallInfoExt, Client, Kind, ServerStack};
use backstop_chaos::{ChaosServer, Fault, Script};
use common::{bounded, serve_axum};
use http::StatusCode;
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// One series: kind, name, labels sorted by key, value.
#[derive(Debug, Clone, PartialEq)]
struct Series {
    kind: MetricKind,
    name: String,
    labels: Vec<(String, String)>,
    value: DebugValue2,
}

/// `DebugValue` with plain floats, comparable in asserts.
#[derive(Debug, Clone, PartialEq)]
enum DebugValue2 {
    Counter(u64),
    Gauge(f64),
    Histogram(Vec<f64>),
}

fn snapshot(snapshotter: &Snapshotter) -> Vec<Series> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (kind, key) = key.into_parts();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let value = match value {
                DebugValue::Counter(n) => DebugValue2::Counter(n),
                DebugValue::Gauge(g) => DebugValue2::Gauge(g.into_inner()),
                DebugValue::Histogram(h) => {
                    DebugValue2::Histogram(h.into_iter().map(|f| f.into_inner()).collect())
                }
            };
            Series {
                kind,
                name: key.name().to_owned(),
                labels,
                value,
            }
        })
        .collect()
}

fn named<'a>(all: &'a [Series], name: &str) -> Vec<&'a Series> {
    all.iter().filter(|s| s.name == name).collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    labels
}

/// The counter `name` with exactly `pairs` as labels.
fn counter(all: &[Series], name: &str, pairs: &[(&str, &str)]) -> Option<u64> {
    let want = labels(pairs);
    all.iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| match s.value {
            DebugValue2::Counter(n) => n,
            ref other => panic!("{name} is not a counter: {other:?}"),
        })
}

fn recorder() -> (Arc<DebuggingRecorder>, Snapshotter) {
    let recorder = Arc::new(DebuggingRecorder::new());
    let snapshotter = recorder.snapshotter();
    (recorder, snapshotter)
}

#[tokio::test(flavor = "current_thread")]
async fn a_call_retried_twice_counts_three_attempts_two_retries_and_one_duration() {
    let (recorder, snapshotter) = recorder();
    let _local = metrics::set_default_local_recorder(&*recorder);
    let chaos = ChaosServer::start().await.unwrap();
    chaos.script("/flaky", Script::fail_times(2, Fault::status(503)));
    let client = Client::new().unwrap();
    let res = bounded(client.get(&chaos.url("/flaky"))).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    drop(res);

    let all = snapshot(&snapshotter);
    let host = [("server.address", "127.0.0.1")];
    assert_eq!(
        counter(&all, "backstop.retry.attempts", &host),
        Some(3),
        "{all:#?}"
    );
    assert_eq!(
        counter(
            &all,
            "backstop.retry.retries",
            &[("server.address", "127.0.0.1"), ("reason", "http_status")]
        ),
        Some(2),
        "{all:#?}"
    );
    let durations = named(&all, CLIENT_REQUEST_DURATION);
    assert_eq!(durations.len(), 1, "one series: {durations:#?}");
    assert_eq!(durations[0].kind, MetricKind::Histogram);
    assert_eq!(
        durations[0].labels,
        labels(&[
            ("http.request.method", "GET"),
            ("server.address", "127.0.0.1"),
            ("http.response.status_code", "200"),
        ])
    );
    let DebugValue2::Histogram(samples) = &durations[0].value else {
        panic!("{durations:?}")
    };
    assert_eq!(samples.len(), 1, "one sample per call");
    assert!(samples[0] > 0.0 && samples[0] < 20.0, "{samples:?}");

    // In flight: up once, down once.
    let active = named(&all, CLIENT_ACTIVE_REQUESTS);
    assert_eq!(active.len(), 1, "{active:#?}");
    assert_eq!(active[0].labels, labels(&host));
    assert_eq!(active[0].value, DebugValue2::Gauge(0.0));

    // The new connection's phases: TCP only (an IP address, plain http), once.
    let phases = named(&all, CLIENT_CONNECTION_PHASE_DURATION);
    assert_eq!(phases.len(), 1, "{phases:#?}");
    assert_eq!(
        phases[0].labels,
        labels(&[("phase", "tcp"), ("server.address", "127.0.0.1")])
    );
    assert!(matches!(&phases[0].value, DebugValue2::Histogram(s) if s.len() == 1));
}

#[tokio::test(flavor = "current_thread")]
async fn an_open_breaker_moves_its_gauge_and_counts_the_transition() {
    let (recorder, snapshotter) = recorder();
    let _local = metrics::set_default_local_recorder(&*recorder);
    let chaos = ChaosServer::start().await.unwrap();
    chaos.set_fault_for("/", Fault::status(503));
    let client = Client::builder()
        .max_attempts(1)
        .consecutive_failures(2)
        .build()
        .unwrap();
    for _ in 0..2 {
        let res = bounded(client.get(&chaos.url("/down"))).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let err = bounded(client.get(&chaos.url("/down"))).await.unwrap_err();
    assert_eq!(err.kind(), Kind::BreakerOpen);

    let all = snapshot(&snapshotter);
    let states = named(&all, "backstop.breaker.state");
    assert_eq!(states.len(), 1, "one breaker: {all:#?}");
    assert_eq!(states[0].kind, MetricKind::Gauge);
    assert_eq!(states[0].value, DebugValue2::Gauge(2.0), "2 = open");
    let key = states[0]
        .labels
        .iter()
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v.clone())
        .expect("the breaker's key");
    assert_eq!(
        counter(
            &all,
            "backstop.breaker.transitions",
            &[("key", &key), ("from", "closed"), ("to", "open")]
        ),
        Some(1),
        "{all:#?}"
    );
    assert_eq!(
        counter(&all, "backstop.breaker.rejections", &[("key", &key)]),
        Some(1)
    );
    // Every call stopped with its one allowed attempt spent (the rejected one too: the attempt
    // limit is checked first, as its call info says).
    let stopped = err.call_info().and_then(|info| info.retry_stopped);
    assert_eq!(
        stopped,
        Some(backstop::retry::StopReason::AttemptsExhausted)
    );
    assert_eq!(
        counter(
            &all,
            "backstop.retry.stopped",
            &[
                ("server.address", "127.0.0.1"),
                ("stop", "attempts_exhausted")
            ],
        ),
        Some(3),
        "{all:#?}"
    );
    // The rejected call: a duration sample with its kind and no status.
    let rejected = labels(&[
        ("http.request.method", "GET"),
        ("server.address", "127.0.0.1"),
        ("error.type", "breaker_open"),
    ]);
    assert!(
        named(&all, CLIENT_REQUEST_DURATION)
            .iter()
            .any(|s| s.labels == rejected
                && matches!(&s.value, DebugValue2::Histogram(v) if v.len() == 1)),
        "{all:#?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_server_stack_counts_shedding_and_records_request_durations_by_route() {
    let (recorder, snapshotter) = recorder();
    let _local = metrics::set_default_local_recorder(&*recorder);
    let (release, released) = tokio::sync::watch::channel(false);
    let (entered_tx, mut entered) = tokio::sync::mpsc::channel::<()>(1);
    let app = Router::new()
        .route(
            "/work/{id}",
            get(move || {
                let mut released = released.clone();
                let entered_tx = entered_tx.clone();
                async move {
                    let _ = entered_tx.send(()).await;
                    let _ = released.wait_for(|r| *r).await;
                    "done"
                }
            }),
        )
        .layer(ServerStack::builder().max_in_flight(1).build().unwrap());
    let addr = serve_axum(app).await;
    let client = Client::builder().max_attempts(1).build().unwrap();
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.get(&format!("http://{addr}/work/1")).await }
    });
    // The first request holds the only slot: the second is shed at once.
    bounded(entered.recv()).await.unwrap();
    let shed = bounded(client.get(&format!("http://{addr}/work/2")))
        .await
        .unwrap();
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    release.send(true).unwrap();
    let done = bounded(first).await.unwrap().unwrap();
    assert_eq!(done.status(), StatusCode::OK);

    let all = snapshot(&snapshotter);
    assert_eq!(
        counter(&all, "backstop.server.shed", &[]),
        Some(1),
        "{all:#?}"
    );
    let durations = named(&all, SERVER_REQUEST_DURATION);
    let by_labels = |pairs: &[(&str, &str)]| {
        let want = labels(pairs);
        durations
            .iter()
            .find(|s| s.labels == want)
            .map(|s| match &s.value {
                DebugValue2::Histogram(v) => v.len(),
                other => panic!("{other:?}"),
            })
    };
    assert_eq!(
        by_labels(&[
            ("http.request.method", "GET"),
            ("http.route", "/work/{id}"),
            ("http.response.status_code", "200"),
        ]),
        Some(1),
        "{durations:#?}"
    );
    assert_eq!(
        by_labels(&[
            ("http.request.method", "GET"),
            ("http.route", "/work/{id}"),
            ("http.response.status_code", "503"),
            ("error.type", "http_status"),
        ]),
        Some(1),
        "{durations:#?}"
    );
    assert_eq!(durations.len(), 2, "{durations:#?}");
    let active = named(&all, SERVER_ACTIVE_REQUESTS);
    assert_eq!(active.len(), 1, "{active:#?}");
    assert_eq!(active[0].labels, labels(&[("http.request.method", "GET")]));
    assert_eq!(active[0].value, DebugValue2::Gauge(0.0));
}

#[tokio::test(flavor = "current_thread")]
async fn expired_deadlines_count_by_side() {
    let (recorder, snapshotter) = recorder();
    let _local = metrics::set_default_local_recorder(&*recorder);
    // The client's: an upstream that never answers, a 200 ms deadline.
    let chaos = ChaosServer::start().await.unwrap();
    chaos.set_fault_for("/stall", Fault::StallHeaders { duration: None });
    let client = Client::builder()
        .deadline(std::time::Duration::from_millis(200))
        .attempt_timeout(std::time::Duration::from_millis(200))
        .build()
        .unwrap();
    let err = bounded(client.get(&chaos.url("/stall"))).await.unwrap_err();
    assert_eq!(
        err.kind(),
        Kind::TimedOut(backstop::Timer::Deadline),
        "{err}"
    );
    // The server's: a handler slower than the stack's 100 ms deadline, answered 504.
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                "late"
            }),
        )
        .layer(
            ServerStack::builder()
                .default_deadline(std::time::Duration::from_millis(100))
                .build()
                .unwrap(),
        );
    let addr = serve_axum(app).await;
    let plain = Client::builder().max_attempts(1).build().unwrap();
    let res = bounded(plain.get(&format!("http://{addr}/slow")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);

    let all = snapshot(&snapshotter);
    let expired = |side: &str| counter(&all, "backstop.deadline.expired", &[("side", side)]);
    assert_eq!(expired("client"), Some(1), "{all:#?}");
    assert_eq!(expired("server"), Some(1), "{all:#?}");
    // The failed call's duration sample names the deadline, with no status.
    let timed_out = labels(&[
        ("http.request.method", "GET"),
        ("server.address", "127.0.0.1"),
        ("error.type", "timed_out_deadline"),
    ]);
    assert!(
        named(&all, CLIENT_REQUEST_DURATION)
            .iter()
            .any(|s| s.labels == timed_out),
        "{all:#?}"
    );
}
