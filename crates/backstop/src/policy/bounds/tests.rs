//! One test per setting: at values on both sides of every bound, `Policy::validate` and the
//! layers themselves (built by `Client::assemble` without validating first) must agree.
//! Each would fail if the table's number differed from the layer's, in either direction.

use std::time::Duration;

use crate::Policy;
use crate::client::layers_reject;

const NS: Duration = Duration::from_nanos(1);
const MS: Duration = Duration::from_millis(1);

/// Defaults, except that one call's retries may trip the breaker: that cross-field rule is
/// the policy's own, not a layer's bound, and would hide the bounds probed here.
fn base() -> Policy {
    let mut p = Policy::default();
    p.breaker.single_call_may_trip = true;
    p
}

/// Asserts that `validate` and the layers agree on `policy`, and that a rejection by
/// `validate` names `field`. Returns whether it was rejected.
#[track_caller]
fn agree(policy: &Policy, field: &str, probe: &dyn std::fmt::Debug) -> bool {
    let validated = policy.validate();
    let layers = layers_reject(policy);
    assert_eq!(
        validated.is_err(),
        layers.is_some(),
        "{field} = {probe:?}: validate says {validated:?}, the layers say {layers:?}"
    );
    if let Err(err) = &validated {
        assert_eq!(err.field(), field, "{field} = {probe:?}: {err}");
    }
    validated.is_err()
}

/// Probes `values` of one setting; `expect_rejected` lists which must fail, so a test cannot
/// pass by both sides accepting (or rejecting) everything.
#[track_caller]
fn probe<T: Copy + std::fmt::Debug>(
    field: &str,
    values: &[(T, bool)],
    set: impl Fn(&mut Policy, T),
) {
    for &(value, expect_rejected) in values {
        let mut p = base();
        set(&mut p, value);
        assert_eq!(
            agree(&p, field, &value),
            expect_rejected,
            "{field} = {value:?}"
        );
    }
}

#[test]
fn deadline() {
    // Propagation off and the attempt timeout set low, so that only the deadline's own
    // bound is probed.
    probe(
        "deadline",
        &[
            (Duration::ZERO, true),
            (NS, false),
            (MS, false),
            (Duration::from_secs(86_400 * 365), false),
            (Duration::MAX, false),
        ],
        |p, v| {
            p.deadline = v;
            p.attempt_timeout = Some(v.min(MS));
            p.propagation.grpc = false;
        },
    );
}

#[test]
fn attempt_timeout() {
    probe(
        "attempt_timeout",
        &[
            (Duration::ZERO, true),
            (NS, false),
            (Duration::from_secs(86_400), false),
            (Duration::from_secs(86_400) + NS, true),
        ],
        |p, v| {
            p.deadline = Duration::MAX;
            p.attempt_timeout = Some(v);
            p.propagation.grpc = false;
        },
    );
}

#[test]
fn a_propagated_attempt_timeout_leaves_the_callee_time() {
    let under = super::PROPAGATED_ATTEMPT_MIN - NS;
    let at = super::PROPAGATED_ATTEMPT_MIN;
    // Set explicitly, with gRPC propagation (the default) and with the HTTP header.
    for (grpc, http) in [(true, false), (false, true)] {
        probe("attempt_timeout", &[(under, true), (at, false)], |p, v| {
            p.attempt_timeout = Some(v);
            p.propagation.grpc = grpc;
            p.propagation.http = http;
        });
    }
    // Following a short deadline: the deadline is named, since that is what was set.
    probe("deadline", &[(under, true), (at, false)], |p, v| {
        p.deadline = v;
    });
    // Nothing propagated: no margin to leave.
    probe("attempt_timeout", &[(MS, false)], |p, v| {
        p.attempt_timeout = Some(v);
        p.propagation.grpc = false;
    });
}

#[test]
fn connect_timeout() {
    probe(
        "connect_timeout",
        &[
            (Duration::ZERO, true),
            (MS - NS, true),
            (MS, false),
            (Duration::from_secs(600), false),
            (Duration::from_secs(600) + NS, true),
            (Duration::from_secs(86_400), true),
        ],
        |p, v| p.connect_timeout = v,
    );
}

/// The case of issue 16: a one-day connect timeout passed validation, then the layer
/// rejected it.
#[test]
fn a_one_day_connect_timeout_names_the_field_and_the_rule() {
    let p = Policy {
        connect_timeout: Duration::from_secs(86_400),
        ..Policy::default()
    };
    let err = p.validate().unwrap_err();
    assert_eq!(err.field(), "connect_timeout");
    assert!(err.rule().contains("600s"), "{}", err.rule());
    assert!(err.rule().contains("ConnectTimeoutLayer"), "{}", err.rule());
    #[cfg(feature = "config")]
    {
        let err = Policy::from_toml("connect_timeout = \"1day\"").unwrap_err();
        assert_eq!(err.field(), "connect_timeout");
    }
}

#[test]
fn idle_timeout() {
    probe(
        "idle_timeout",
        &[
            (Duration::ZERO, true),
            (MS - NS, true),
            (MS, false),
            (Duration::from_secs(86_400), false),
            (Duration::from_secs(86_400) + NS, true),
        ],
        |p, v| p.idle_timeout = v,
    );
}

#[test]
fn max_attempts() {
    probe(
        "retry.max_attempts",
        &[(0, true), (1, false), (10, false), (11, true)],
        |p, v| p.retry.max_attempts = v,
    );
}

#[test]
fn max_delay_and_base_delay() {
    let hour = Duration::from_secs(3600);
    probe(
        "retry.max_delay",
        &[(hour, false), (hour + NS, true)],
        |p, v| p.retry.max_delay = v,
    );
    probe(
        "retry.base_delay",
        &[
            (Duration::ZERO, false),
            (Duration::from_secs(5), false),
            (Duration::from_secs(5) + NS, true),
        ],
        |p, v| p.retry.base_delay = v,
    );
    // A zero cap with a zero base: no backoff at all, which the layer allows.
    probe("retry.max_delay", &[(Duration::ZERO, false)], |p, v| {
        p.retry.base_delay = v;
        p.retry.max_delay = v;
    });
}

#[test]
fn retry_after_max() {
    let hour = Duration::from_secs(3600);
    probe(
        "retry.retry_after_max",
        &[(Duration::ZERO, false), (hour, false), (hour + NS, true)],
        |p, v| p.retry.retry_after_max = v,
    );
}

#[test]
fn replay_limit() {
    let mib16 = 16 * 1024 * 1024;
    probe(
        "retry.replay_limit",
        &[(0, false), (mib16, false), (mib16 + 1, true)],
        |p, v| p.retry.replay_limit = v,
    );
}

#[test]
fn budget() {
    probe(
        "retry.budget.ratio",
        &[
            (-0.1, true),
            (0.0, false),
            (1.5, false),
            (10.0, false),
            (10.01, true),
            (f64::NAN, true),
            (f64::INFINITY, true),
        ],
        |p, v| p.retry.budget.ratio = v,
    );
    probe(
        "retry.budget.min_per_second",
        &[(0, false), (100_000, false), (100_001, true)],
        |p, v| p.retry.budget.min_per_second = v,
    );
    probe(
        "retry.budget.window",
        &[
            (Duration::from_millis(100) - NS, true),
            (Duration::from_millis(100), false),
            (Duration::from_secs(3600), false),
            (Duration::from_secs(3600) + NS, true),
        ],
        |p, v| p.retry.budget.window = v,
    );
}

#[test]
fn breaker_counts() {
    probe(
        "breaker.consecutive_failures",
        &[(0, true), (1, false), (u32::MAX, false)],
        |p, v| p.breaker.consecutive_failures = v,
    );
    probe(
        "breaker.window_calls",
        &[
            (0, true),
            (20, false),
            (1_000_000, false),
            (1_000_001, true),
        ],
        |p, v| p.breaker.window_calls = v,
    );
    // The default window holds 100 calls.
    probe(
        "breaker.minimum_calls",
        &[(0, true), (1, false), (100, false), (101, true)],
        |p, v| p.breaker.minimum_calls = v,
    );
    probe(
        "breaker.half_open_probes",
        &[(0, true), (1, false), (1000, false), (1001, true)],
        |p, v| p.breaker.half_open_probes = v,
    );
}

#[test]
fn failure_rate() {
    probe(
        "breaker.failure_rate",
        &[
            (0.0, true),
            (f64::from_bits(1), false),
            (1.0, false),
            (1.0 + f64::EPSILON, true),
            (f64::NAN, true),
        ],
        |p, v| p.breaker.failure_rate = v,
    );
}

#[test]
fn open_for_and_max_open_for() {
    let thirty_years = super::THIRTY_YEARS;
    probe(
        "breaker.open_for",
        &[
            (Duration::ZERO, true),
            (NS, false),
            (Duration::from_secs(300), false),
            (Duration::from_secs(300) + NS, true),
        ],
        |p, v| p.breaker.open_for = v,
    );
    probe(
        "breaker.max_open_for",
        &[(thirty_years, false), (thirty_years + NS, true)],
        |p, v| p.breaker.max_open_for = v,
    );
}

/// A disabled section is still checked (see the module docs), though its layer is not built.
#[test]
fn disabled_sections_are_still_checked() {
    let mut p = base();
    p.breaker.enabled = false;
    p.breaker.half_open_probes = 0;
    assert_eq!(layers_reject(&p), None);
    assert_eq!(
        p.validate().map_err(|e| e.field().to_owned()),
        Err("breaker.half_open_probes".to_owned())
    );
}
