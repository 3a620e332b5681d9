//! [`Gate`]: admission and recording without a wrapped service, sharing the layer's breakers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use backstop_breaker::{CircuitBreakerLayer, Gate, PerAuthority, RequestHead, State};
use backstop_classify::{Error, Failure, Kind, Outcome, Phase, Retryable};
use http::{Request, Response, StatusCode};
use tower::{Layer, ServiceExt, service_fn};

fn request(uri: &str) -> Request<()> {
    Request::get(uri).body(()).unwrap()
}

fn refused() -> Outcome {
    Outcome::Failure(Failure::new(Kind::Refused, Phase::Connect))
}

fn layer() -> CircuitBreakerLayer<PerAuthority> {
    CircuitBreakerLayer::builder()
        .consecutive_failures(2)
        .no_failure_rate()
        .open_for(Duration::from_secs(10))
        .max_open_for(Duration::from_secs(10))
        .half_open_probes(1)
        .build()
        .unwrap()
}

fn fail_twice(gate: &mut Gate, req: &Request<()>) {
    for _ in 0..2 {
        gate.admit(&RequestHead::of(req))
            .unwrap()
            .record(&refused());
    }
}

/// A layer whose breaker for `http://api.internal` two refused calls through a gate opened, the
/// gate, and a request to that host.
fn tripped() -> (CircuitBreakerLayer<PerAuthority>, Gate, Request<()>) {
    let layer = layer();
    let mut gate = layer.gate();
    let req = request("http://api.internal/");
    fail_twice(&mut gate, &req);
    (layer, gate, req)
}

#[tokio::test(start_paused = true)]
async fn a_gate_trips_its_host_only_and_a_rejection_is_a_local_safe_breaker_open() {
    let layer = layer();
    let mut gate = layer.gate();
    let sick = request("http://sick.internal/a");
    let well = request("http://well.internal/a");
    fail_twice(&mut gate, &sick);
    let rejected = gate.admit(&RequestHead::of(&sick)).unwrap_err();
    let err = Error::from(rejected);
    assert_eq!(
        (err.kind(), err.phase(), err.retryable()),
        (Kind::BreakerOpen, Phase::Local, Retryable::Safe)
    );
    // Another host's breaker is its own, and a success keeps it closed.
    gate.admit(&RequestHead::of(&well))
        .unwrap()
        .record(&Outcome::Success);
    let states: Vec<(String, State)> = layer
        .breakers()
        .snapshots()
        .into_iter()
        .map(|(key, snapshot)| (key.to_string(), snapshot.state))
        .collect();
    assert!(states.contains(&("http://sick.internal:80".into(), State::Open)));
    assert!(states.contains(&("http://well.internal:80".into(), State::Closed)));
}

#[tokio::test(start_paused = true)]
async fn a_gate_and_the_layers_services_share_the_breakers() {
    let (layer, _gate, _req) = tripped();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let svc = layer.layer(service_fn(move |_req: Request<()>| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Ok::<_, std::convert::Infallible>(Response::new(())) }
    }));
    let err = svc
        .oneshot(request("http://api.internal/"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Kind::BreakerOpen);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_probe_permit_dropped_unrecorded_goes_back_and_a_recorded_one_decides() {
    let (layer, mut gate, req) = tripped();
    tokio::time::advance(Duration::from_secs(11)).await;
    // Half-open with one probe: the first caller takes it, a second is refused meanwhile.
    let probe = gate.admit(&RequestHead::of(&req)).unwrap();
    assert!(gate.admit(&RequestHead::of(&req)).is_err());
    // Cancelled: the permit goes back, nothing is recorded.
    drop(probe);
    let state = || layer.breakers().snapshots()[0].1.state;
    assert_eq!(state(), State::HalfOpen);
    let probe = gate.admit(&RequestHead::of(&req)).unwrap();
    let mut ok = Response::new(());
    *ok.status_mut() = StatusCode::OK;
    probe.record_response(&ok);
    assert_eq!(state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_recorded_error_counts_as_its_failure() {
    let layer = layer();
    let mut gate = layer.gate();
    let req = request("http://api.internal/");
    for _ in 0..2 {
        let err = Error::new(Kind::Reset, Phase::AwaitHeaders);
        gate.admit(&RequestHead::of(&req))
            .unwrap()
            .record_error(&err);
    }
    assert!(gate.admit(&RequestHead::of(&req)).is_err());
}
