//! The lookup cache: bounded, expiring, least-recently-used eviction, plus single-flight.
//!
//! Bank-Vaults' cache never expired and never shrank. This one is bounded both in entries
//! and in bytes (an attacker can make the webhook look up arbitrarily many distinct image
//! names), each entry carries its own expiry (none for digest-pinned references, a TTL for
//! tags, a short one for `:latest`, `imagePullPolicy: Always` and failures), and
//! [`SingleFlight`] makes concurrent misses for one key share a single registry fetch.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};

/// Limits of a [`BoundedCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheLimits {
    pub max_entries: usize,
    pub max_bytes: usize,
}

struct Slot<V> {
    value: V,
    expires: Option<Instant>,
    weight: usize,
    tick: u64,
}

struct Inner<K, V> {
    map: HashMap<K, Slot<V>>,
    /// Recency order: tick → key; the smallest tick is evicted first.
    order: BTreeMap<u64, K>,
    bytes: usize,
    tick: u64,
}

/// A map with per-entry expiry, evicting least recently used entries past its limits.
pub struct BoundedCache<K, V> {
    inner: Mutex<Inner<K, V>>,
    limits: CacheLimits,
}

impl<K: Hash + Eq + Clone, V: Clone> BoundedCache<K, V> {
    pub fn new(limits: CacheLimits) -> Self {
        Self {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: BTreeMap::new(),
                bytes: 0,
                tick: 0,
            }),
            limits,
        }
    }

    /// The live value for `key`, refreshing its recency; expired entries are dropped.
    pub fn get<Q>(&self, key: &Q, now: Instant) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let inner = &mut *guard;
        let slot = inner.map.get_mut(key)?;
        if slot.expires.is_some_and(|at| at <= now) {
            let tick = slot.tick;
            Self::evict(inner, tick);
            return None;
        }
        inner.tick += 1;
        let new_tick = inner.tick;
        let old_tick = std::mem::replace(&mut slot.tick, new_tick);
        let value = slot.value.clone();
        if let Some(owned) = inner.order.remove(&old_tick) {
            inner.order.insert(new_tick, owned);
        }
        Some(value)
    }

    /// Inserts or replaces `key`; `ttl: None` never expires. An entry heavier than the
    /// whole byte budget is not stored.
    pub fn insert(&self, key: K, value: V, weight: usize, ttl: Option<Duration>, now: Instant) {
        if weight > self.limits.max_bytes || self.limits.max_entries == 0 {
            return;
        }
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let inner = &mut *guard;
        if let Some(old) = inner.map.remove(&key) {
            inner.order.remove(&old.tick);
            inner.bytes -= old.weight;
        }
        // Expired entries go first, then the least recently used.
        let expired: Vec<u64> = inner
            .map
            .values()
            .filter(|s| s.expires.is_some_and(|at| at <= now))
            .map(|s| s.tick)
            .collect();
        if inner.map.len() >= self.limits.max_entries
            || inner.bytes + weight > self.limits.max_bytes
        {
            for tick in expired {
                Self::evict(inner, tick);
            }
        }
        while inner.map.len() >= self.limits.max_entries
            || inner.bytes + weight > self.limits.max_bytes
        {
            let Some((&oldest, _)) = inner.order.iter().next() else {
                break;
            };
            Self::evict(inner, oldest);
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.order.insert(tick, key.clone());
        inner.bytes += weight;
        inner.map.insert(
            key,
            Slot {
                value,
                expires: ttl.map(|ttl| now + ttl),
                weight,
                tick,
            },
        );
    }

    fn evict(inner: &mut Inner<K, V>, tick: u64) {
        if let Some(key) = inner.order.remove(&tick)
            && let Some(slot) = inner.map.remove(&key)
        {
            inner.bytes -= slot.weight;
        }
    }

    /// Number of stored entries (expired ones included until they are touched).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes accounted to stored entries.
    pub fn bytes(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }
}

/// Coalesces concurrent work for one key: the first caller starts it on the runtime, every
/// caller (including later ones, until it finishes) awaits the same result.
///
/// The work is spawned, so it finishes (and can fill the cache) even when every waiter
/// gave up on its own deadline.
pub struct SingleFlight<K, T> {
    flights: Arc<Mutex<HashMap<K, Shared<BoxFuture<'static, T>>>>>,
}

impl<K, T> SingleFlight<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    pub fn new() -> Self {
        Self {
            flights: Arc::default(),
        }
    }

    /// Awaits the in-flight work for `key`, or starts `work` if there is none. `on_panic`
    /// produces the result if the spawned work panics.
    pub async fn run<F>(&self, key: K, work: F, on_panic: fn() -> T) -> T
    where
        F: Future<Output = T> + Send + 'static,
    {
        let shared = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            match flights.get(&key) {
                Some(existing) => existing.clone(),
                None => {
                    let flights_ref = Arc::clone(&self.flights);
                    let done_key = key.clone();
                    let handle = tokio::spawn(async move {
                        let result = work.await;
                        flights_ref
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&done_key);
                        result
                    });
                    let shared = async move { handle.await.unwrap_or_else(|_| on_panic()) }
                        .boxed()
                        .shared();
                    flights.insert(key, shared.clone());
                    shared
                }
            }
        };
        shared.await
    }

    /// Number of keys with work in flight.
    pub fn in_flight(&self) -> usize {
        self.flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl<K, T> Default for SingleFlight<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn cache(max_entries: usize, max_bytes: usize) -> BoundedCache<String, u32> {
        BoundedCache::new(CacheLimits {
            max_entries,
            max_bytes,
        })
    }

    #[test]
    fn get_expired_entry_returns_none_and_frees_bytes() {
        let c = cache(10, 100);
        let t0 = Instant::now();
        c.insert("a".into(), 1, 10, Some(Duration::from_secs(5)), t0);
        c.insert("pinned".into(), 2, 10, None, t0);
        assert_eq!(c.get("a", t0 + Duration::from_secs(4)), Some(1));
        assert_eq!(c.get("a", t0 + Duration::from_secs(5)), None);
        assert_eq!(c.bytes(), 10);
        assert_eq!(
            c.get("pinned", t0 + Duration::from_secs(86_400 * 365)),
            Some(2)
        );
    }

    #[test]
    fn insert_over_entry_limit_evicts_least_recently_used() {
        let c = cache(2, 1000);
        let t0 = Instant::now();
        c.insert("a".into(), 1, 1, None, t0);
        c.insert("b".into(), 2, 1, None, t0);
        assert_eq!(c.get("a", t0), Some(1)); // a is now more recent than b
        c.insert("c".into(), 3, 1, None, t0);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("b", t0), None);
        assert_eq!(c.get("a", t0), Some(1));
        assert_eq!(c.get("c", t0), Some(3));
    }

    #[test]
    fn insert_over_byte_limit_evicts_until_it_fits() {
        let c = cache(100, 30);
        let t0 = Instant::now();
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            c.insert((*key).into(), i as u32, 10, None, t0);
        }
        c.insert("big".into(), 9, 25, None, t0);
        assert_eq!(c.bytes(), 25);
        assert_eq!(c.len(), 1);
        c.insert("huge".into(), 9, 31, None, t0);
        assert_eq!(
            c.get("huge", t0),
            None,
            "heavier than the budget is not stored"
        );
    }

    #[test]
    fn insert_prefers_evicting_expired_entries() {
        let c = cache(2, 1000);
        let t0 = Instant::now();
        c.insert("old".into(), 1, 1, None, t0);
        c.insert("stale".into(), 2, 1, Some(Duration::from_secs(1)), t0);
        c.insert("new".into(), 3, 1, None, t0 + Duration::from_secs(2));
        assert_eq!(c.get("old", t0 + Duration::from_secs(2)), Some(1));
        assert_eq!(c.get("new", t0 + Duration::from_secs(2)), Some(3));
    }

    #[test]
    fn insert_replacing_key_keeps_accounting_exact() {
        let c = cache(10, 100);
        let t0 = Instant::now();
        c.insert("a".into(), 1, 40, None, t0);
        c.insert("a".into(), 2, 30, None, t0);
        assert_eq!((c.len(), c.bytes()), (1, 30));
        assert_eq!(c.get("a", t0), Some(2));
    }

    #[tokio::test]
    async fn single_flight_concurrent_callers_share_one_run() {
        let flight: Arc<SingleFlight<&'static str, u32>> = Arc::new(SingleFlight::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let flight = Arc::clone(&flight);
            let runs = Arc::clone(&runs);
            tasks.push(tokio::spawn(async move {
                flight
                    .run(
                        "k",
                        async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            7
                        },
                        || 0,
                    )
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("join"), 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flight.in_flight(), 0);
    }

    #[tokio::test]
    async fn single_flight_work_finishes_after_waiter_gives_up() {
        let flight: SingleFlight<&'static str, u32> = SingleFlight::new();
        let done = Arc::new(AtomicUsize::new(0));
        let marker = Arc::clone(&done);
        let waited = tokio::time::timeout(
            Duration::from_millis(10),
            flight.run(
                "k",
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    marker.fetch_add(1, Ordering::SeqCst);
                    1
                },
                || 0,
            ),
        )
        .await;
        assert!(waited.is_err(), "waiter should time out");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(done.load(Ordering::SeqCst), 1);
        assert_eq!(flight.in_flight(), 0);
    }
}
