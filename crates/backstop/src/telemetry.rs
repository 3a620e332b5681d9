//! What the client's call span and the server stack's request span put in their fields and
//! metric labels, beyond backstop-classify's shared helpers (`Kind::label`, `redact_url`,
//! `host_label`): the method and status as `&'static str` labels (no allocation per call), and
//! the port a URL reaches.

use http::{Method, StatusCode};

/// `method` as an `http.request.method` value: the standard methods by name, any other as
/// `_OTHER` (OpenTelemetry's rule, which also bounds the label's cardinality).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

/// Three ASCII digits for every status code `StatusCode` can hold (100 ..= 999), back to back.
static STATUS_DIGITS: [u8; 2700] = {
    let mut digits = [0u8; 2700];
    let mut i = 0;
    while i < 900 {
        let code = i + 100;
        digits[i * 3] = b'0' + (code / 100) as u8;
        digits[i * 3 + 1] = b'0' + (code / 10 % 10) as u8;
        digits[i * 3 + 2] = b'0' + (code % 10) as u8;
        i += 1;
    }
    digits
};

/// `status` as an `http.response.status_code` label (`"200"`), borrowed from a static table:
/// `StatusCode::as_str` is tied to the status' own lifetime, and a metric label must be
/// `'static` or allocated.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn status_label(status: StatusCode) -> &'static str {
    let at = usize::from(status.as_u16().saturating_sub(100)) * 3;
    STATUS_DIGITS
        .get(at..at + 3)
        .and_then(|digits| std::str::from_utf8(digits).ok())
        .unwrap_or("_OTHER")
}

/// Bounded labels for server routes (`http.route`): the same `Arc` for the same route, and
/// `_other` past [`MAX_ROUTE_LABELS`] distinct ones. Routes are axum's route patterns, a fixed
/// set per application, so the bound only guards against a misuse.
#[cfg(all(feature = "metrics", feature = "server"))]
pub(crate) fn route_label(route: &str) -> std::sync::Arc<str> {
    static ROUTES: backstop_classify::telemetry::BoundedLabels =
        backstop_classify::telemetry::BoundedLabels::new(MAX_ROUTE_LABELS);
    ROUTES.label(route)
}

/// How many distinct `http.route` labels [`route_label`] names.
#[cfg(all(feature = "metrics", feature = "server"))]
pub(crate) const MAX_ROUTE_LABELS: usize = 1024;

/// Metric keys built once and reused, so that recording allocates nothing once a series exists
/// (with no recorder installed too: building a key with labels allocates, and the `metrics`
/// macros build one at every call).
#[cfg(feature = "metrics")]
pub(crate) mod keys {
    use std::collections::HashMap;
    use std::hash::Hash;
    use std::sync::{OnceLock, PoisonError, RwLock};

    use metrics::{Key, Level, Metadata};

    /// The metadata of every metric the facade records.
    pub(crate) static METADATA: Metadata<'static> =
        Metadata::new("backstop", Level::INFO, Some(module_path!()));

    /// How many keys one cache keeps; past it, keys are built at each use (and still recorded).
    /// Every label is bounded (hosts, routes, methods, statuses, kinds), so this only caps memory.
    pub(crate) const MAX_KEYS: usize = 4096;

    /// FNV-1a: the caches' keys are a few short label values the application itself produces
    /// (no attacker picks them), where SipHash would cost more than the rest of the lookup.
    #[derive(Clone, Copy)]
    pub(crate) struct Fnv(u64);

    impl Default for Fnv {
        fn default() -> Self {
            Fnv(0xcbf2_9ce4_8422_2325)
        }
    }

    impl std::hash::Hasher for Fnv {
        fn write(&mut self, bytes: &[u8]) {
            for byte in bytes {
                self.0 ^= u64::from(*byte);
                self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
            }
        }

        fn finish(&self) -> u64 {
            self.0
        }
    }

    /// A map hashed with [`Fnv`].
    pub(crate) type FnvMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

    /// The keys of one metric, by their label values.
    pub(crate) struct KeyCache<K>(OnceLock<RwLock<FnvMap<K, Key>>>);

    impl<K: Hash + Eq> KeyCache<K> {
        pub(crate) const fn new() -> Self {
            KeyCache(OnceLock::new())
        }

        /// Calls `f` with the key of `labels`, made by `make` the first time.
        pub(crate) fn with<R>(
            &self,
            labels: K,
            make: impl FnOnce(&K) -> Key,
            f: impl FnOnce(&Key) -> R,
        ) -> R {
            let map = self.0.get_or_init(Default::default);
            // A poisoned lock only means another thread panicked while inserting.
            if let Some(key) = map
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&labels)
            {
                return f(key);
            }
            let key = make(&labels);
            let mut write = map.write().unwrap_or_else(PoisonError::into_inner);
            if write.len() < MAX_KEYS {
                return f(write.entry(labels).or_insert(key));
            }
            drop(write);
            f(&key)
        }
    }

    /// Records `value` into the histogram `key`.
    pub(crate) fn histogram(key: &Key, value: f64) {
        metrics::with_recorder(|recorder| recorder.register_histogram(key, &METADATA))
            .record(value);
    }

    /// Moves the gauge `key` by `delta`.
    pub(crate) fn gauge(key: &Key, delta: f64) {
        let gauge = metrics::with_recorder(|recorder| recorder.register_gauge(key, &METADATA));
        if delta >= 0.0 {
            gauge.increment(delta);
        } else {
            gauge.decrement(-delta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_the_three_digits() {
        for code in [100u16, 200, 204, 404, 503, 599, 999] {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
            assert_eq!(status_label(status), code.to_string());
        }
    }

    #[test]
    fn methods_outside_the_standard_set_are_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let custom = Method::from_bytes(b"PURGE").unwrap_or(Method::GET);
        assert_eq!(method_label(&custom), "_OTHER");
    }
}
