//! Idempotency: which requests may be sent twice ([`is_idempotent_method`], overrides, an
//! `Idempotency-Key`), and the key the layer attaches when asked to.

use std::sync::atomic::Ordering;

use http::request::Parts;
use http::{HeaderName, HeaderValue, Method};

use crate::info::RetryOverride;
use crate::layer::Config;
use crate::random::mix;

/// The header that marks a non-idempotent request as safe to repeat, by default.
pub(crate) static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Whether `method` is idempotent by RFC 9110 §9.2.2 (GET, HEAD, OPTIONS, TRACE, PUT, DELETE):
/// the rule this layer uses to decide what may be sent twice, for code that must agree with it
/// (e.g. a gateway reserving memory for the bodies this layer will keep).
pub fn is_idempotent_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether `parts` may be sent twice: an idempotent method, an override, or an idempotency key.
pub(crate) fn is_idempotent(parts: &Parts, idempotency_key: &HeaderName) -> bool {
    is_idempotent_method(&parts.method)
        || parts.extensions.get::<RetryOverride>() == Some(&RetryOverride::Idempotent)
        || parts.headers.contains_key(idempotency_key)
}

/// Gives a non-idempotent request without a key a fresh one (a random UUID), so it may be
/// retried.
#[cold]
pub(crate) fn attach_idempotency_key<P>(config: &Config<P>, parts: &mut Parts) {
    if is_idempotent(parts, &config.idempotency_key) {
        return;
    }
    let n = config.sequence.fetch_add(1, Ordering::Relaxed);
    if let Some(key) = uuid_v4(mix(config.key_seed ^ n), mix(!config.key_seed ^ n)) {
        parts.headers.insert(config.idempotency_key.clone(), key);
    }
}

/// A random (version 4) UUID in its usual text form.
fn uuid_v4(high: u64, low: u64) -> Option<HeaderValue> {
    let high = (high & !0xf000) | 0x4000;
    let low = (low & !(0xc << 60)) | (0x8 << 60);
    let text = format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    );
    HeaderValue::from_str(&text).ok()
}
