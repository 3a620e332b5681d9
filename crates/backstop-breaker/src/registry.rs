//! The bounded map of breakers, one per key; [`Breakers`](crate::Breakers) is its public handle.
//!
//! Lookups go through 16 shards, each a read-write lock, by a hash of the request's key computed
//! without building the key; callers of one service also keep the last breaker they used, so a
//! service talking to one host never takes a lock. Inserting a new key is serialised by one
//! mutex (new keys are rare) which also enforces the bound: at the limit, breakers idle for
//! `idle_after` are forgotten, then the least recently used one.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use backstop_classify::Classify;

use crate::breaker::{Breaker, Shared};
use crate::clock::{Clock, nanos};
use crate::key::{BreakerKey, RequestHead};
use crate::settings::{OnChange, Settings};
use crate::state::State;
use crate::telemetry::KeyMetrics;

const SHARDS: usize = 16;

/// The map's keys are already hashes: hash them no further.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Bucket<Key> = Vec<Arc<Breaker<Key>>>;
type Shard<Key> = RwLock<HashMap<u64, Bucket<Key>, BuildHasherDefault<Prehashed>>>;

pub(crate) struct Registry<K: BreakerKey> {
    pub(crate) key_fn: K,
    shared: Arc<Shared<K::Key>>,
    hasher: RandomState,
    shards: Box<[Shard<K::Key>]>,
    len: AtomicUsize,
    insert: Mutex<()>,
    created: AtomicU64,
    last_sweep: AtomicU64,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl<K: BreakerKey> Registry<K> {
    pub(crate) fn new(
        key_fn: K,
        settings: Settings,
        on_change: Option<OnChange<K::Key>>,
    ) -> Registry<K> {
        let slow_nanos = settings.slow_threshold().map(nanos);
        let success_below_400 = (100..400).all(|code| {
            http::StatusCode::from_u16(code).is_ok_and(|status| {
                settings
                    .policy
                    .classify_response(status, &http::HeaderMap::new())
                    .is_success()
            })
        });
        let success_verdict = (settings.judge)(&backstop_classify::Outcome::Success);
        Registry {
            key_fn,
            shared: Arc::new(Shared {
                success_below_400,
                success_verdict,
                settings,
                clock: Clock::new(),
                on_change,
                slow_nanos,
            }),
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::default()))
                .collect(),
            len: AtomicUsize::new(0),
            insert: Mutex::new(()),
            created: AtomicU64::new(0),
            last_sweep: AtomicU64::new(0),
        }
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    fn shard(&self, hash: u64) -> &Shard<K::Key> {
        &self.shards[(hash >> 59) as usize % SHARDS]
    }

    /// The breaker of a request, created if new.
    pub(crate) fn for_head(&self, head: &RequestHead<'_>) -> Arc<Breaker<K::Key>> {
        let mut hasher = self.hasher.build_hasher();
        self.key_fn.hash_head(head, &mut hasher);
        let hash = hasher.finish();
        let found = read(self.shard(hash)).get(&hash).and_then(|bucket| {
            bucket
                .iter()
                .find(|b| self.key_fn.matches(head, &b.key))
                .cloned()
        });
        match found {
            Some(breaker) => breaker,
            None => self.insert(self.key_fn.key(head), hash),
        }
    }

    /// The breaker of `key`, created if new.
    pub(crate) fn for_key(&self, key: &K::Key) -> Arc<Breaker<K::Key>> {
        match self.get(key) {
            Some(breaker) => breaker,
            None => self.insert(key.clone(), self.hasher.hash_one(key)),
        }
    }

    pub(crate) fn get(&self, key: &K::Key) -> Option<Arc<Breaker<K::Key>>> {
        let hash = self.hasher.hash_one(key);
        read(self.shard(hash))
            .get(&hash)
            .and_then(|bucket| bucket.iter().find(|b| b.key == *key).cloned())
    }

    fn insert(&self, key: K::Key, hash: u64) -> Arc<Breaker<K::Key>> {
        let _serial = self.insert.lock().unwrap_or_else(PoisonError::into_inner);
        // Someone may have inserted it while we waited.
        if let Some(existing) = read(self.shard(hash))
            .get(&hash)
            .and_then(|bucket| bucket.iter().find(|b| b.key == key).cloned())
        {
            return existing;
        }
        let now = self.shared.clock.now();
        let idle = nanos(self.settings().idle_after);
        let max = self.settings().max_keys;
        let since_sweep = now.saturating_sub(self.last_sweep.load(Ordering::Relaxed));
        if self.len.load(Ordering::Relaxed) >= max || since_sweep >= idle / 4 {
            self.sweep(now, idle);
        }
        let seed = self
            .settings()
            .seed
            .unwrap_or(0)
            .wrapping_add(self.created.fetch_add(1, Ordering::Relaxed));
        let metrics = KeyMetrics::new(&self.key_fn, &key);
        let breaker = Arc::new_cyclic(|this| {
            Breaker::new(key, hash, self.shared.clone(), seed, this.clone(), metrics)
        });
        if self.len.load(Ordering::Relaxed) >= max && !self.evict_least_recent() {
            // Every breaker is pinned by hand: protect this call with a breaker we do not keep,
            // rather than grow past the bound.
            return breaker;
        }
        write(self.shard(hash))
            .entry(hash)
            .or_default()
            .push(breaker.clone());
        self.len.fetch_add(1, Ordering::Relaxed);
        breaker
    }

    /// Forgets breakers unused for `idle` nanoseconds. Usage is sampled: a breaker used since
    /// the previous sweep is marked seen now.
    fn sweep(&self, now: u64, idle: u64) {
        self.last_sweep.store(now, Ordering::Relaxed);
        for shard in &*self.shards {
            let mut map = write(shard);
            map.retain(|_, bucket| {
                bucket.retain(|breaker| {
                    if breaker.touched.swap(false, Ordering::Relaxed) {
                        breaker.last_seen.store(now, Ordering::Relaxed);
                        return true;
                    }
                    let idle_for = now.saturating_sub(breaker.last_seen.load(Ordering::Relaxed));
                    if idle_for < idle || breaker.is_pinned() {
                        return true;
                    }
                    breaker.evicted.store(true, Ordering::Relaxed);
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    false
                });
                !bucket.is_empty()
            });
        }
    }

    /// Forgets the breaker seen longest ago (closed ones first); `false` if all are pinned.
    fn evict_least_recent(&self) -> bool {
        let mut victim: Option<(bool, u64, u64)> = None;
        for shard in &*self.shards {
            for bucket in read(shard).values() {
                for breaker in bucket.iter().filter(|b| !b.is_pinned()) {
                    let rank = (
                        breaker.state() != State::Closed,
                        breaker.last_seen.load(Ordering::Relaxed),
                        breaker.hash,
                    );
                    if victim.is_none_or(|v| (rank.0, rank.1) < (v.0, v.1)) {
                        victim = Some(rank);
                    }
                }
            }
        }
        let Some((_, seen, hash)) = victim else {
            return false;
        };
        let mut map = write(self.shard(hash));
        let Some(bucket) = map.get_mut(&hash) else {
            return false;
        };
        let Some(index) = bucket
            .iter()
            .position(|b| !b.is_pinned() && b.last_seen.load(Ordering::Relaxed) == seen)
        else {
            return false;
        };
        let gone = bucket.swap_remove(index);
        gone.evicted.store(true, Ordering::Relaxed);
        if bucket.is_empty() {
            map.remove(&hash);
        }
        self.len.fetch_sub(1, Ordering::Relaxed);
        true
    }

    /// How many breakers are kept.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Forgets every breaker idle for `idle_after` now.
    pub(crate) fn evict_idle(&self) {
        let _serial = self.insert.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.shared.clock.now();
        self.sweep(now, nanos(self.settings().idle_after));
    }

    pub(crate) fn all(&self) -> Vec<Arc<Breaker<K::Key>>> {
        let mut out = Vec::with_capacity(self.len.load(Ordering::Relaxed));
        for shard in &*self.shards {
            for bucket in read(shard).values() {
                out.extend(bucket.iter().cloned());
            }
        }
        out
    }
}

impl<K: BreakerKey> Registry<K> {
    /// The breaker for the key every request maps to, for a single-breaker layer.
    pub(crate) fn only(&self) -> Option<Arc<Breaker<K::Key>>> {
        self.key_fn.only_key().map(|key| self.for_key(&key))
    }
}
