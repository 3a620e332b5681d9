//! Which breaker a request belongs to: [`BreakerKey`], [`Single`], [`FnKey`]; the default,
//! [`PerAuthority`](crate::PerAuthority), has a file of its own (`authority.rs`).

use std::fmt;
use std::hash::{Hash, Hasher};

use http::{Extensions, HeaderMap, Method, Request, Uri};

/// A borrowed view of a request's head, whatever its body type.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    /// The head of `req`.
    pub fn of<B>(req: &'a Request<B>) -> RequestHead<'a> {
        RequestHead {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
        }
    }

    /// The method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The URI.
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The extensions.
    pub fn extensions(&self) -> &'a Extensions {
        self.extensions
    }
}

/// Maps requests to breakers.
///
/// Only [`key`](BreakerKey::key) is required. The other methods let a key strategy find an
/// existing breaker without building an owned key (which may allocate): the breaker calls
/// [`matches`](BreakerKey::matches) and [`hash_head`](BreakerKey::hash_head) on every call and
/// `key` only for a key it has not seen. `hash_head` must feed `state` exactly what
/// `self.key(head).hash(state)` would.
pub trait BreakerKey: Send + Sync + 'static {
    /// The key breakers are stored under.
    type Key: Eq + Hash + Clone + fmt::Debug + Send + Sync + 'static;

    /// The key of a request.
    fn key(&self, head: &RequestHead<'_>) -> Self::Key;

    /// Whether a request belongs to `key`.
    fn matches(&self, head: &RequestHead<'_>, key: &Self::Key) -> bool {
        self.key(head) == *key
    }

    /// A cheaper check than [`matches`](BreakerKey::matches), tried first on every call: it
    /// may answer `false` for a request that does belong to `key` (then `matches` decides), but
    /// never `true` for one that does not. The default is `matches` itself.
    #[inline]
    fn matches_quickly(&self, head: &RequestHead<'_>, key: &Self::Key) -> bool {
        self.matches(head, key)
    }

    /// Hashes the key of a request, exactly as `Self::Key`'s `Hash` would.
    fn hash_head<H: Hasher>(&self, head: &RequestHead<'_>, state: &mut H) {
        self.key(head).hash(state);
    }

    /// The one key every request maps to, when there is only one.
    fn only_key(&self) -> Option<Self::Key> {
        None
    }

    /// `key` as text, for the `key` label of the breaker's metrics
    /// ([`metrics`](crate::metrics), bounded by
    /// [`host_label`](backstop_classify::telemetry::host_label)). Called once per breaker, when
    /// it is created, and only with the crate's `metrics` feature. The default is the key's
    /// `Debug`; [`PerAuthority`](crate::PerAuthority)'s is `scheme://host:port`.
    fn label(&self, key: &Self::Key) -> String {
        format!("{key:?}")
    }
}

/// One breaker for every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl BreakerKey for Single {
    type Key = ();

    fn key(&self, _head: &RequestHead<'_>) {}

    fn matches(&self, _head: &RequestHead<'_>, _key: &()) -> bool {
        true
    }

    #[inline]
    fn matches_quickly(&self, _head: &RequestHead<'_>, _key: &()) -> bool {
        true
    }

    fn hash_head<H: Hasher>(&self, _head: &RequestHead<'_>, _state: &mut H) {
        // `()` hashes to nothing.
    }

    fn only_key(&self) -> Option<()> {
        Some(())
    }

    /// `"single"`.
    fn label(&self, _key: &()) -> String {
        String::from("single")
    }
}

/// Keys by the value a function computes from the request head.
#[derive(Clone)]
pub struct FnKey<F> {
    f: F,
}

impl<F> FnKey<F> {
    /// Keys by `f`.
    pub fn new(f: F) -> FnKey<F> {
        FnKey { f }
    }
}

impl<F> fmt::Debug for FnKey<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnKey").finish_non_exhaustive()
    }
}

impl<F, K> BreakerKey for FnKey<F>
where
    F: Fn(&RequestHead<'_>) -> K + Send + Sync + 'static,
    K: Eq + Hash + Clone + fmt::Debug + Send + Sync + 'static,
{
    type Key = K;

    fn key(&self, head: &RequestHead<'_>) -> K {
        (self.f)(head)
    }
}
