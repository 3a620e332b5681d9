//! Reads what `metrics_util`'s debugging recorder holds: one metric by name and exact label set.
//! Install the recorder for one test with [`Recorded::install`], on a current-thread runtime
//! (the recorder is the thread's local default), so tests never share one.
#![allow(dead_code, unreachable_pub)]

use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

pub struct Recorded {
    snapshotter: Snapshotter,
}

impl Recorded {
    /// A debugging recorder (leaked: one per test), the current thread's default until the
    /// returned guard is dropped: `let (recorded, _recorder) = Recorded::install();`.
    pub fn install() -> (Recorded, Installed) {
        let recorder = Box::leak(Box::new(DebuggingRecorder::new()));
        let snapshotter = recorder.snapshotter();
        let guard = metrics::set_default_local_recorder(&*recorder);
        (Recorded { snapshotter }, Installed(guard))
    }

    /// What was recorded since the previous `take`: counters count from there (the debugging
    /// recorder resets them when read), gauges hold the value last set since then (0 if none).
    pub fn take(&self) -> Metrics {
        Metrics(
            self.snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| {
                    let mut labels: Vec<(String, String)> = key
                        .key()
                        .labels()
                        .map(|l| (l.key().to_string(), l.value().to_string()))
                        .collect();
                    labels.sort();
                    (key.kind(), key.key().name().to_string(), labels, value)
                })
                .collect(),
        )
    }
}

/// One metric: its kind, name, sorted labels and value.
type Entry = (MetricKind, String, Vec<(String, String)>, DebugValue);

/// One snapshot of the recorder.
#[derive(Debug)]
pub struct Metrics(Vec<Entry>);

impl Metrics {
    fn find(&self, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        let mut wanted: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        wanted.sort();
        self.0
            .iter()
            .find(|(k, n, l, _)| *k == kind && n == name && *l == wanted)
            .map(|(_, _, _, value)| value)
    }

    /// The counter `name` with exactly these labels, `None` if never registered.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        match self.find(MetricKind::Counter, name, labels) {
            Some(DebugValue::Counter(n)) => Some(*n),
            _ => None,
        }
    }

    /// The gauge `name` with exactly these labels, `None` if never registered.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.find(MetricKind::Gauge, name, labels) {
            Some(DebugValue::Gauge(v)) => Some(v.into_inner()),
            _ => None,
        }
    }
}

/// Keeps the recorder installed.
pub struct Installed(metrics::LocalRecorderGuard<'static>);
