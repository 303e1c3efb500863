//! Fallback cache: the values reads are answered from while Redis is unavailable.
//!
//! Every successful read or write through the sidecar records what Redis now holds, and every operation
//! that makes that knowledge uncertain drops it, so the cache never serves a value older than the last
//! acknowledged write. It is bounded by entry count *and* by bytes (key plus value lengths, kept exact
//! through every update), evicting least-recently-used entries first. Each entry also has a lifetime:
//! `settings.ttl` from its last refresh, further capped by the expiry of the Redis key ([`KeyExpiry`]), so a
//! cached value neither goes too stale nor outlives the key it mirrors. The client learns that expiry with
//! every value it caches (PTTL in the same round trip, see `client/answer.rs`); a value whose key's expiry is
//! unknown is not kept at all.
//!
//! This file holds those rules; `cache/store.rs` holds the entries, laid out so that the memory spent
//! beyond `max_bytes` stays small, in the segments of `cache/arena.rs`.

mod arena;
mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::clock::SharedClock;
use store::{Expiry, HashFields, Store, Tick, Value, ValueRef, MAX_ENTRY_BYTES, NEVER};

/// Limits of the fallback cache. `max_entries == 0` or `max_bytes == 0` disables it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Maximum number of keys held.
    pub max_entries: usize,
    /// Maximum sum of key and value lengths held.
    pub max_bytes: u64,
    /// How long a value stays servable after it was last learned from Redis; `None` = no expiry.
    pub ttl: Option<Duration>,
}

impl CacheSettings {
    /// Neither limit is zero: values may be kept.
    fn enabled(&self) -> bool {
        self.max_entries > 0 && self.max_bytes > 0
    }

    fn admits(&self, size: u64) -> bool {
        self.enabled() && size <= self.max_bytes.min(MAX_ENTRY_BYTES)
    }
}

/// What is known of the expiry of the Redis key behind a value, as the cache is told it with the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyExpiry {
    /// The key has no expiry (PTTL answered -1, or a SET without one, which clears it).
    Never,
    /// The key expires at this instant of the cache's clock, or later (the instant is taken before the
    /// command was sent, so the entry never outlives the key by a round trip).
    At(Instant),
    /// Unknown (not asked, PTTL failed, or the key was gone by the time PTTL ran): the value is not kept, and
    /// any older value of the key is dropped, since it is no longer what Redis holds.
    Unknown,
}

impl KeyExpiry {
    /// `Some(deadline)` to keep a value learned at `now` (`None`: no deadline), `None` to keep nothing.
    fn deadline(self, now: Instant) -> Option<Option<Instant>> {
        match self {
            KeyExpiry::Never => Some(None),
            KeyExpiry::At(at) if at > now => Some(Some(at)),
            KeyExpiry::At(_) | KeyExpiry::Unknown => None,
        }
    }
}

/// Result of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    /// A fresh value of the requested kind.
    Hit(T),
    /// Nothing usable is cached for the request.
    Miss,
    /// An entry existed but had expired; it has been removed.
    Expired,
}

fn partial_hash<'a>(fields: &[(&[u8], &[u8])]) -> Value<'a> {
    let fields = fields.iter().map(|&(f, v)| (f.to_vec(), v.to_vec()));
    Value::Hash(HashFields {
        fields: fields.collect(),
        complete: false,
    })
}

struct Inner {
    store: Store,
    bytes: u64,
    limits: CacheSettings,
    /// Tick 0: the store keeps instants as nanoseconds since this one.
    epoch: Instant,
}

impl Inner {
    fn tick(&self, at: Option<Instant>) -> Tick {
        at.map_or(NEVER, |at| {
            let nanos = at.saturating_duration_since(self.epoch).as_nanos();
            nanos.min(u128::from(NEVER - 1)) as Tick
        })
    }

    /// A value learned at `now` stays servable until this tick (before any Redis-side expiry).
    fn fresh_until(&self, now: Instant) -> Tick {
        self.tick(self.limits.ttl.and_then(|ttl| now.checked_add(ttl)))
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(i) = self.store.find(key) {
            self.bytes -= self.store.remove(i);
        }
    }

    /// The entry of `key` if it has not expired; an expired one is removed, so that writes never revive
    /// stale data.
    fn find_live(&mut self, key: &[u8], now: Instant) -> Option<u32> {
        let i = self.store.find(key)?;
        if self.store.expiry(i).expired(self.tick(Some(now))) {
            self.bytes -= self.store.remove(i);
            return None;
        }
        Some(i)
    }

    /// Restores both limits after an insert or growth, least recently used first.
    fn evict(&mut self) {
        while self.store.len() > self.limits.max_entries || self.bytes > self.limits.max_bytes {
            let Some(bytes) = self.store.pop_lru() else {
                break;
            };
            self.bytes -= bytes;
        }
    }

    /// Stores a value learned at `now`; `deadline` is an expiry the Redis key is known to have. Returns whether
    /// the value is now held: not when the cache is disabled or the entry is larger than it may hold.
    fn store(&mut self, key: &[u8], value: Value<'_>, deadline: Option<Instant>, now: Instant) -> bool {
        let size = (key.len() + value.bytes()) as u64;
        if !self.limits.admits(size) {
            // The newer value cannot be kept, so the older one must not be served either.
            self.remove(key);
            return false;
        }
        let fresh_until = self.fresh_until(now);
        let deadline = self.tick(deadline);
        if let Some(i) = self.find_live(key, now) {
            self.bytes = self.bytes - self.store.bytes(i) + size;
            let known = self.store.expiry(i).deadline;
            self.store.replace(i, value);
            self.store.set_expiry(
                i,
                Expiry {
                    fresh_until,
                    deadline: known.min(deadline),
                },
            );
            self.store.promote(i);
        } else {
            self.store.insert(key, value, Expiry { fresh_until, deadline });
            self.bytes += size;
        }
        // The entry is the most recently used and fits on its own, so eviction never takes it.
        self.evict();
        true
    }

    /// Stores `value` if its key's expiry is known and still ahead, else drops the key's entry. Returns whether
    /// the value is held.
    fn learn(&mut self, key: &[u8], value: Value<'_>, expiry: KeyExpiry, now: Instant) -> bool {
        match expiry.deadline(now) {
            Some(deadline) => self.store(key, value, deadline, now),
            None => {
                self.remove(key);
                false
            }
        }
    }

    fn set_hash_fields(&mut self, key: &[u8], fields: &[(&[u8], &[u8])], expiry: KeyExpiry, now: Instant) {
        let Some(deadline) = expiry.deadline(now) else {
            return self.remove(key);
        };
        let Some(i) = self.find_live(key, now) else {
            self.store(key, partial_hash(fields), deadline, now);
            return;
        };
        let old = self.store.bytes(i);
        let Some(hash) = self.store.hash_mut(i) else {
            // A string replaced by a hash: store() swaps the value and keeps any known key deadline.
            self.store(key, partial_hash(fields), deadline, now);
            return;
        };
        for &(f, v) in fields {
            match hash.fields.get_mut(f) {
                Some(slot) => {
                    slot.clear();
                    slot.extend_from_slice(v);
                }
                None => {
                    hash.fields.insert(f.to_vec(), v.to_vec());
                }
            }
        }
        let expiry = Expiry {
            fresh_until: self.fresh_until(now),
            deadline: self.store.expiry(i).deadline.min(self.tick(deadline)),
        };
        self.store.set_expiry(i, expiry);
        self.store.promote(i);
        let size = self.store.bytes(i);
        self.bytes = self.bytes - old + size;
        if size > self.limits.max_bytes {
            self.bytes -= self.store.remove(i);
        }
        self.evict();
    }

    fn remove_hash_fields(&mut self, key: &[u8], fields: &[&[u8]], now: Instant) {
        let Some(i) = self.find_live(key, now) else {
            return;
        };
        let old = self.store.bytes(i);
        let Some(hash) = self.store.hash_mut(i) else {
            // Redis would have refused HDEL on a string, so what we cached no longer matches it.
            self.bytes -= self.store.remove(i);
            return;
        };
        for f in fields {
            hash.fields.remove(*f);
        }
        // A hash without fields does not exist in Redis; a partial one without fields tells us nothing.
        let emptied = hash.fields.is_empty();
        self.bytes = self.bytes - old + self.store.bytes(i);
        if emptied {
            self.bytes -= self.store.remove(i);
        }
    }

    /// See [`FallbackCache::set_limits`].
    fn set_limits(&mut self, limits: CacheSettings, now: Instant) {
        self.limits = limits;
        if !limits.enabled() {
            self.store.clear();
            self.bytes = 0;
            return;
        }
        let fresh_until = self.fresh_until(now);
        if fresh_until != NEVER {
            self.store.cap_fresh_until(fresh_until);
        }
        self.evict();
    }

    fn cap_expiry(&mut self, key: &[u8], at: Instant, now: Instant) {
        if at <= now {
            return self.remove(key);
        }
        if let Some(i) = self.find_live(key, now) {
            let mut expiry = self.store.expiry(i);
            expiry.deadline = expiry.deadline.min(self.tick(Some(at)));
            self.store.set_expiry(i, expiry);
        }
    }
}

/// Bounded, TTL-aware LRU of Redis values, shared by all connections.
pub struct FallbackCache {
    inner: Mutex<Inner>,
    clock: SharedClock,
    /// Neither limit is zero: values may be kept. Read without the lock, to skip learning for a cache that
    /// keeps nothing; written under it by [`FallbackCache::set_limits`]. A stale read costs at most one PTTL
    /// asked for nothing, or one value not learned: the limits under the lock decide what is kept.
    enabled: AtomicBool,
}

impl FallbackCache {
    /// Creates an empty cache. Limits are enforced by the cache itself (the store is unbounded), which is
    /// also how a zero limit disables it.
    pub fn new(limits: CacheSettings, clock: SharedClock) -> Self {
        let inner = Mutex::new(Inner {
            store: Store::new(),
            bytes: 0,
            limits,
            epoch: clock.now(),
        });
        let enabled = AtomicBool::new(limits.enabled());
        FallbackCache { inner, clock, enabled }
    }

    /// Whether values may be kept at all (no limit is zero); when not, callers need not learn anything for it.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Takes new limits (a configuration reload) and applies them at once to what is held.
    ///
    /// - Smaller `max_entries` or `max_bytes`: least-recently-used entries are evicted now until the cache fits,
    ///   exactly as an insert over the limits would evict them (the cache keeps no eviction counter).
    /// - A zero limit disables the cache, as at creation: it is emptied and keeps nothing until a later call
    ///   gives both limits back ([`FallbackCache::is_enabled`] follows).
    /// - Larger limits only raise the bounds: nothing is allocated ahead.
    /// - `ttl`: values learned from now on get the new one. A held entry's expiry is never extended, but it is
    ///   brought forward to now + the new ttl when that is earlier, so a shorter `ttl` (or a `ttl` where there
    ///   was none) bounds the staleness of what is already held at once; `None` leaves entries as they are.
    ///   The Redis key's own expiry ([`KeyExpiry`]) still caps every entry.
    ///
    /// Memory: entries live in the arena's segments (`cache/arena.rs`), which are not sized by `max_bytes`; a
    /// segment is given back once the entries in it are evicted (one is kept as a spare), and compaction
    /// bounds what evictions scattered across segments leave dead, as it does under ordinary eviction. The slot
    /// vector and hash index (about 28 bytes an entry) keep the room of the entries once held; a zero limit
    /// gives everything back.
    pub fn set_limits(&self, limits: CacheSettings) {
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.set_limits(limits, now);
        self.enabled.store(limits.enabled(), Ordering::Relaxed);
    }

    /// A panic elsewhere while holding the lock cannot leave the map half-updated, so poison is ignored.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes an expired entry (reporting `Expired`); otherwise `read` picks the answer and a hit promotes.
    fn lookup<T>(&self, key: &[u8], read: impl FnOnce(ValueRef<'_>) -> Option<T>) -> Lookup<T> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let Some(i) = inner.store.find(key) else {
            return Lookup::Miss;
        };
        if inner.store.expiry(i).expired(inner.tick(Some(now))) {
            inner.bytes -= inner.store.remove(i);
            return Lookup::Expired;
        }
        let found = read(inner.store.value(i));
        if found.is_some() {
            inner.store.promote(i);
        }
        found.map_or(Lookup::Miss, Lookup::Hit)
    }

    /// GET fallback: a fresh string entry -> Hit(bytes clone). A hash entry -> Miss. Expired entries are
    /// removed and reported as Expired.
    pub fn get_str(&self, key: &[u8]) -> Lookup<Vec<u8>> {
        self.lookup(key, |value| match value {
            ValueRef::Str(v) => Some(v.to_vec()),
            ValueRef::Hash(_) => None,
        })
    }

    /// HGET fallback: field present in a fresh hash entry (complete or partial) -> Hit(value). Otherwise
    /// Miss/Expired.
    pub fn get_hash_field(&self, key: &[u8], field: &[u8]) -> Lookup<Vec<u8>> {
        self.lookup(key, |value| match value {
            ValueRef::Hash(h) => h.fields.get(field).cloned(),
            ValueRef::Str(_) => None,
        })
    }

    /// HGETALL fallback: only a fresh *complete* hash -> Hit(fields as Vec<(field, value)> sorted by
    /// field). Partial -> Miss.
    pub fn get_hash(&self, key: &[u8]) -> Lookup<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut found = self.lookup(key, |value| match value {
            ValueRef::Hash(h) if h.complete => {
                Some(h.fields.iter().map(|(f, v)| (f.clone(), v.clone())).collect::<Vec<_>>())
            }
            _ => None,
        });
        if let Lookup::Hit(pairs) = &mut found {
            // Sorted outside the lock; field names are unique, so an unstable sort is deterministic.
            pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        found
    }

    /// The cache's clock: what a caller reads before asking Redis, to give a [`KeyExpiry::At`] that is
    /// never later than the key's.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Stores several string values at once (an MSET that could not reach Redis), under one lock. Returns
    /// whether every one of them is held afterwards: a value too large is not, and a later one of the same
    /// call may have evicted an earlier one.
    pub fn put_strs<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, pairs: &[(K, V)]) -> bool {
        let now = self.clock.now();
        let mut inner = self.lock();
        let mut all = true;
        for (k, v) in pairs {
            all &= inner.store(k.as_ref(), Value::Str(v.as_ref()), None, now);
        }
        all && pairs.iter().all(|(k, _)| inner.store.find(k.as_ref()).is_some())
    }

    /// Stores a string value (after a successful GET, SET, INCR, or a SET that could not reach Redis).
    /// The value is fresh, so its `settings.ttl` restarts now; `expiry` (the Redis key's) and any expiry
    /// already known for the key still cap its life, so the entry never outlives the Redis key. With the
    /// key's expiry unknown or already past, nothing is kept and the old entry is dropped.
    ///
    /// Returns whether the value is now held (not when the cache is disabled, the value too large for it or the
    /// key's expiry unknown), so that an answer saying `"cached": true` is true.
    pub fn put_str(&self, key: &[u8], value: &[u8], expiry: KeyExpiry) -> bool {
        let now = self.clock.now();
        self.lock().learn(key, Value::Str(value), expiry, now)
    }

    /// Stores a complete hash (after a successful HGETALL), restarting its `settings.ttl` and capped by
    /// `expiry` like `put_str`. An empty hash means the key does not exist: the entry is removed.
    pub fn put_hash(&self, key: &[u8], fields: &[(Vec<u8>, Vec<u8>)], expiry: KeyExpiry) {
        if fields.is_empty() {
            return self.remove(key);
        }
        let value = Value::Hash(HashFields {
            fields: fields.iter().cloned().collect::<HashMap<_, _>>(),
            complete: true,
        });
        let now = self.clock.now();
        self.lock().learn(key, value, expiry, now);
    }

    /// After a successful HGET (Some(value)) or HSET (for each field written): sets the fields in the
    /// existing Hash entry (keeping `complete` as it was); with no live entry, creates a partial Hash; a Str
    /// is replaced by a partial Hash. Restarts the entry's `settings.ttl` and caps its life by `expiry` like
    /// `put_str` (an unknown one drops the entry); a hash grown beyond `max_bytes` is dropped.
    pub fn set_hash_fields(&self, key: &[u8], fields: &[(&[u8], &[u8])], expiry: KeyExpiry) {
        if !fields.is_empty() {
            let now = self.clock.now();
            self.lock().set_hash_fields(key, fields, expiry, now);
        }
    }

    /// After HDEL, or HGET answering nil: removes those fields from a Hash entry (a complete hash stays
    /// complete). A hash left without fields, or a Str entry, is dropped.
    pub fn remove_hash_fields(&self, key: &[u8], fields: &[&[u8]]) {
        let now = self.clock.now();
        self.lock().remove_hash_fields(key, fields, now);
    }

    /// After DEL, or GET answering nil, or anything that makes the cached value unknown: drops the entry.
    pub fn remove(&self, key: &[u8]) {
        self.lock().remove(key);
    }

    /// After a successful EXPIRE: the entry must not outlive the key in Redis, so its expiry is capped at
    /// `at` (never extended, also not by later refreshes). An `at` already past removes it.
    pub fn cap_expiry(&self, key: &[u8], at: Instant) {
        let now = self.clock.now();
        self.lock().cap_expiry(key, at, now);
    }

    /// Drops every entry.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.store.clear();
        inner.bytes = 0;
    }

    /// Number of entries held, including expired ones not yet looked up.
    pub fn len(&self) -> usize {
        self.lock().store.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes currently accounted: sum over entries of key length + value bytes (for a hash: sum of field + value lengths).
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Arc;

    const SEC: Duration = Duration::from_secs(1);
    const NS: Duration = Duration::from_nanos(1);
    const N: KeyExpiry = KeyExpiry::Never;

    impl FallbackCache {
        fn expires_in(&self, d: Duration) -> KeyExpiry {
            KeyExpiry::At(self.now() + d)
        }
    }

    fn cache(max_entries: usize, max_bytes: u64, ttl: Option<Duration>) -> (FallbackCache, Arc<ManualClock>) {
        let clock = ManualClock::new();
        let settings = CacheSettings {
            max_entries,
            max_bytes,
            ttl,
        };
        (FallbackCache::new(settings, clock.clone()), clock)
    }

    fn hit(v: &str) -> Lookup<Vec<u8>> {
        Lookup::Hit(v.as_bytes().to_vec())
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        p.iter()
            .map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn evicts_least_recently_used_by_count_and_hits_promote() {
        let (c, _) = cache(2, 1000, None);
        c.put_str(b"a", b"1", N);
        c.put_str(b"b", b"2", N);
        assert_eq!(c.get_str(b"a"), hit("1")); // a is now most recent
        c.put_str(b"c", b"3", N);
        assert_eq!(c.get_str(b"b"), Lookup::Miss);
        assert_eq!(c.get_str(b"a"), hit("1"));
        assert_eq!(c.get_str(b"c"), hit("3"));
        c.put_str(b"d", b"4", N); // c was hit after a: a goes
        assert_eq!(c.get_str(b"a"), Lookup::Miss);
        assert_eq!(c.get_str(b"c"), hit("3"));
        assert_eq!((c.len(), c.bytes()), (2, 4));
    }

    #[test]
    fn evicts_by_bytes_with_exact_accounting() {
        let (c, _) = cache(100, 20, None);
        c.put_str(b"a", b"123456789", N);
        assert_eq!(c.bytes(), 10);
        c.put_str(b"b", b"12345678", N);
        assert_eq!(c.bytes(), 19);
        c.put_str(b"c", b"xyz", N); // 23 > 20: a goes
        assert_eq!((c.len(), c.bytes()), (2, 13));
        assert_eq!(c.get_str(b"a"), Lookup::Miss);
        c.put_str(b"b", b"12", N); // shrinks in place, becomes most recent
        assert_eq!((c.len(), c.bytes()), (2, 7));
        c.set_hash_fields(b"h", &[(b"f", b"vvvvvvvvvv")], N); // 12 -> 19
        assert_eq!((c.len(), c.bytes()), (3, 19));
        c.set_hash_fields(b"h", &[(b"g", b"1")], N); // 21 > 20: LRU c goes
        assert_eq!(c.get_str(b"c"), Lookup::Miss);
        assert_eq!((c.len(), c.bytes()), (2, 17));
        c.remove(b"b");
        assert_eq!((c.len(), c.bytes()), (1, 14));
    }

    #[test]
    fn oversized_entry_is_rejected_and_drops_the_old_value() {
        let (c, _) = cache(10, 10, None);
        c.put_str(b"k", b"old", N);
        c.put_str(b"x", b"1", N);
        c.put_str(b"k", b"0123456789", N); // 11 bytes alone
        assert_eq!(c.get_str(b"k"), Lookup::Miss);
        assert_eq!((c.len(), c.bytes()), (1, 2));
        c.put_hash(b"h", &pairs(&[("f", "1")]), N);
        c.put_hash(b"h", &pairs(&[("f", "0123456789")]), N);
        assert_eq!(c.get_hash_field(b"h", b"f"), Lookup::Miss);
        c.set_hash_fields(b"h", &[(b"f", b"1")], N);
        assert_eq!(c.bytes(), 5);
        c.set_hash_fields(b"h", &[(b"g", b"123456")], N); // h grows to 10, 12 in all: LRU x goes
        assert_eq!((c.len(), c.bytes()), (1, 10));
        c.set_hash_fields(b"h", &[(b"i", b"1")], N); // 12 on its own: dropped
        assert_eq!(c.get_hash_field(b"h", b"f"), Lookup::Miss);
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }

    #[test]
    fn entries_expire_after_ttl() {
        let (c, clock) = cache(10, 100, Some(10 * SEC));
        c.put_str(b"a", b"1", N);
        clock.advance(5 * SEC);
        c.put_str(b"bb", b"22", N);
        clock.advance(5 * SEC - NS);
        assert_eq!(c.get_str(b"a"), hit("1"));
        assert_eq!((c.len(), c.bytes()), (2, 6));
        clock.advance(NS);
        assert_eq!(c.get_str(b"a"), Lookup::Expired);
        assert_eq!((c.len(), c.bytes()), (1, 4));
        assert_eq!(c.get_str(b"a"), Lookup::Miss);
        assert_eq!(c.get_str(b"bb"), hit("22"));
    }

    #[test]
    fn refresh_restarts_ttl_but_not_on_expired_entries() {
        let (c, clock) = cache(10, 100, Some(10 * SEC));
        c.put_hash(b"h", &pairs(&[("a", "1")]), N);
        clock.advance(8 * SEC);
        c.set_hash_fields(b"h", &[(b"b", b"2")], N);
        clock.advance(8 * SEC);
        assert_eq!(c.get_hash(b"h"), Lookup::Hit(pairs(&[("a", "1"), ("b", "2")])));
        clock.advance(2 * SEC);
        c.set_hash_fields(b"h", &[(b"c", b"3")], N); // expired: old fields are not revived
        assert_eq!(c.get_hash_field(b"h", b"a"), Lookup::Miss);
        assert_eq!(c.get_hash(b"h"), Lookup::Miss);
        assert_eq!(c.bytes(), 3);
    }

    #[test]
    fn no_ttl_never_expires() {
        let (c, clock) = cache(10, 100, None);
        c.put_str(b"a", b"1", N);
        clock.advance(Duration::from_secs(10 * 365 * 24 * 3600));
        assert_eq!(c.get_str(b"a"), hit("1"));
    }

    #[test]
    fn put_str_expires_in_caps_the_ttl() {
        let (c, clock) = cache(10, 100, Some(10 * SEC));
        c.put_str(b"short", b"1", c.expires_in(2 * SEC));
        c.put_str(b"long", b"1", c.expires_in(60 * SEC));
        clock.advance(2 * SEC - NS);
        assert_eq!(c.get_str(b"short"), hit("1"));
        clock.advance(NS);
        assert_eq!(c.get_str(b"short"), Lookup::Expired);
        clock.advance(8 * SEC - NS);
        assert_eq!(c.get_str(b"long"), hit("1"));
        clock.advance(NS);
        assert_eq!(c.get_str(b"long"), Lookup::Expired);
        let (c, clock) = cache(10, 100, None);
        c.put_str(b"k", b"1", c.expires_in(SEC));
        clock.advance(SEC);
        assert_eq!(c.get_str(b"k"), Lookup::Expired);
    }

    #[test]
    fn cap_expiry_shortens_never_extends_and_zero_removes() {
        let (c, clock) = cache(10, 100, Some(10 * SEC));
        c.put_str(b"a", b"1", N);
        c.put_str(b"b", b"1", N);
        c.put_str(b"z", b"1", N);
        c.cap_expiry(b"a", c.now() + 3 * SEC);
        c.cap_expiry(b"a", c.now() + 5 * SEC); // does not extend
        c.cap_expiry(b"b", c.now() + 60 * SEC); // does not extend past the ttl
        c.cap_expiry(b"z", c.now() + Duration::ZERO);
        assert_eq!((c.get_str(b"z"), c.len()), (Lookup::Miss, 2));
        clock.advance(2 * SEC);
        c.put_str(b"a", b"2", N); // fresh value, but the Redis key still expires at 3s
        clock.advance(SEC - NS);
        assert_eq!(c.get_str(b"a"), hit("2"));
        clock.advance(NS);
        assert_eq!(c.get_str(b"a"), Lookup::Expired);
        clock.advance(7 * SEC - NS);
        assert_eq!(c.get_str(b"b"), hit("1"));
        clock.advance(NS);
        assert_eq!(c.get_str(b"b"), Lookup::Expired);
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }

    #[test]
    fn the_key_expiry_caps_every_kind_of_fill_and_is_never_extended() {
        let (c, clock) = cache(10, 100, Some(10 * SEC));
        c.put_str(b"s", b"1", c.expires_in(2 * SEC));
        c.put_hash(b"h", &pairs(&[("f", "1")]), c.expires_in(2 * SEC));
        c.set_hash_fields(b"p", &[(b"f", b"1")], c.expires_in(2 * SEC));
        c.set_hash_fields(b"q", &[(b"f", b"1")], N);
        c.set_hash_fields(b"q", &[(b"g", b"2")], c.expires_in(2 * SEC)); // an existing hash learns it too
        clock.advance(SEC);
        // Later fills with no or a later expiry keep the earlier one (the order of concurrent answers is unknown).
        c.put_str(b"s", b"2", c.expires_in(5 * SEC));
        c.put_hash(b"h", &pairs(&[("f", "2")]), N);
        c.set_hash_fields(b"p", &[(b"f", b"2")], N);
        clock.advance(SEC - NS);
        assert_eq!(c.get_str(b"s"), hit("2"));
        assert_eq!(c.get_hash(b"h"), Lookup::Hit(pairs(&[("f", "2")])));
        assert_eq!(c.get_hash_field(b"p", b"f"), hit("2"));
        assert_eq!(c.get_hash_field(b"q", b"g"), hit("2"));
        clock.advance(NS);
        assert_eq!(c.get_str(b"s"), Lookup::Expired);
        assert_eq!(c.get_hash(b"h"), Lookup::Expired);
        assert_eq!(c.get_hash_field(b"p", b"f"), Lookup::Expired);
        assert_eq!(c.get_hash_field(b"q", b"f"), Lookup::Expired);
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }

    #[test]
    fn an_unknown_or_past_key_expiry_keeps_nothing_and_drops_the_old_value() {
        let (c, clock) = cache(10, 100, None);
        let past = KeyExpiry::At(c.now());
        clock.advance(SEC);
        for expiry in [KeyExpiry::Unknown, past, KeyExpiry::At(c.now())] {
            c.put_str(b"s", b"1", N);
            c.put_hash(b"h", &pairs(&[("f", "1")]), N);
            c.set_hash_fields(b"p", &[(b"f", b"1")], N);
            assert_eq!(c.len(), 3);
            c.put_str(b"s", b"2", expiry);
            c.put_hash(b"h", &pairs(&[("f", "2")]), expiry);
            c.set_hash_fields(b"p", &[(b"f", b"2")], expiry);
            assert_eq!(c.get_str(b"s"), Lookup::Miss, "{expiry:?}");
            assert_eq!(c.get_hash(b"h"), Lookup::Miss, "{expiry:?}");
            assert_eq!(c.get_hash_field(b"p", b"f"), Lookup::Miss, "{expiry:?}");
            assert_eq!((c.len(), c.bytes()), (0, 0), "{expiry:?}");
            c.put_str(b"n", b"1", expiry); // nothing to drop, nothing kept
            assert_eq!(c.len(), 0);
        }
        c.put_str(b"s", b"1", c.expires_in(NS));
        assert_eq!(c.get_str(b"s"), hit("1"));
    }

    #[test]
    fn partial_hash_never_answers_hgetall() {
        let (c, _) = cache(10, 100, None);
        c.set_hash_fields(b"h", &[(b"f", b"1"), (b"g", b"2")], N);
        assert_eq!(c.get_hash_field(b"h", b"f"), hit("1"));
        assert_eq!(c.get_hash_field(b"h", b"x"), Lookup::Miss);
        assert_eq!(c.get_hash(b"h"), Lookup::Miss);
        assert_eq!(c.get_str(b"h"), Lookup::Miss);
        c.remove_hash_fields(b"h", &[b"f"]);
        assert_eq!(c.get_hash_field(b"h", b"f"), Lookup::Miss);
        assert_eq!((c.len(), c.bytes()), (1, 3));
        c.remove_hash_fields(b"h", &[b"g"]); // nothing known any more
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }

    #[test]
    fn complete_hash_answers_hgetall_sorted_and_stays_complete() {
        let (c, _) = cache(10, 100, None);
        c.put_hash(b"h", &pairs(&[("b", "2"), ("a", "1")]), N);
        assert_eq!(c.get_hash(b"h"), Lookup::Hit(pairs(&[("a", "1"), ("b", "2")])));
        c.set_hash_fields(b"h", &[(b"c", b"3"), (b"a", b"11")], N);
        assert_eq!(
            c.get_hash(b"h"),
            Lookup::Hit(pairs(&[("a", "11"), ("b", "2"), ("c", "3")]))
        );
        assert_eq!(c.bytes(), 1 + 3 + 2 + 2);
        c.remove_hash_fields(b"h", &[b"a", b"zz"]);
        assert_eq!(c.get_hash(b"h"), Lookup::Hit(pairs(&[("b", "2"), ("c", "3")])));
        assert_eq!(c.bytes(), 5);
        c.put_hash(b"h", &[], N);
        assert_eq!(c.get_hash_field(b"h", b"b"), Lookup::Miss);
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }

    #[test]
    fn str_and_hash_replace_each_other_with_exact_bytes() {
        let (c, _) = cache(10, 100, None);
        c.put_str(b"k", b"12345", N);
        assert_eq!(c.bytes(), 6);
        c.set_hash_fields(b"k", &[(b"f", b"1")], N);
        assert_eq!(c.get_str(b"k"), Lookup::Miss);
        assert_eq!((c.get_hash(b"k"), c.bytes()), (Lookup::Miss, 3));
        c.put_hash(b"k", &pairs(&[("ff", "22"), ("g", "3")]), N);
        assert_eq!(c.bytes(), 7);
        c.put_str(b"k", b"v", N);
        assert_eq!(
            (c.get_str(b"k"), c.get_hash_field(b"k", b"ff")),
            (hit("v"), Lookup::Miss)
        );
        assert_eq!((c.len(), c.bytes()), (1, 2));
        c.remove_hash_fields(b"k", &[b"ff"]); // a string cannot be HDEL'd: cached state is wrong
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }

    #[test]
    fn zero_limits_store_nothing() {
        for (entries, bytes) in [(0, 100), (10, 0)] {
            let (c, _) = cache(entries, bytes, None);
            c.put_str(b"", b"", N);
            c.put_str(b"k", b"v", N);
            c.put_hash(b"h", &pairs(&[("f", "1")]), N);
            c.set_hash_fields(b"p", &[(b"f", b"1")], N);
            assert_eq!(c.get_str(b""), Lookup::Miss);
            assert_eq!(c.get_str(b"k"), Lookup::Miss);
            assert_eq!(c.get_hash(b"h"), Lookup::Miss);
            assert_eq!(c.get_hash_field(b"p", b"f"), Lookup::Miss);
            assert_eq!((c.len(), c.bytes(), c.is_empty()), (0, 0, true));
            assert!(!c.is_enabled(), "nothing needs learning for a cache that keeps nothing");
        }
        assert!(cache(1, 1, None).0.is_enabled());
    }

    #[test]
    fn a_put_says_whether_the_value_is_held() {
        for (entries, bytes) in [(0, 100), (10, 0)] {
            let (c, _) = cache(entries, bytes, None);
            assert!(!c.put_str(b"k", b"v", N), "disabled: {entries} {bytes}");
            assert!(!c.put_strs(&[(b"k", b"v")]), "disabled: {entries} {bytes}");
        }
        let (c, _) = cache(10, 10, None);
        assert!(c.put_str(b"k", b"123456789", N), "10 bytes fit exactly");
        assert!(!c.put_str(b"k", b"1234567890", N), "11 bytes do not");
        assert!(
            !c.put_str(b"u", b"1", KeyExpiry::Unknown),
            "the key's expiry is unknown"
        );
        assert_eq!(c.get_str(b"k"), Lookup::Miss, "and the older value is gone");
        assert!(c.put_strs(&[(b"a", b"1"), (b"b", b"2")]));
        // Each fits alone, but the second evicts the first: not every value of the call is held.
        assert!(!c.put_strs(&[(b"a", b"12345678"), (b"b", b"12345678")]));
        assert_eq!(c.get_str(b"b"), hit("12345678"));
        let one_too_large: [(&[u8], &[u8]); 2] = [(b"a", b"1"), (b"b", b"1234567890")];
        assert!(!c.put_strs(&one_too_large), "one too large");
    }

    #[test]
    fn clear_resets_len_and_bytes() {
        let (c, _) = cache(10, 100, None);
        c.put_str(b"a", b"1", N);
        c.put_hash(b"h", &pairs(&[("f", "1")]), N);
        assert_eq!((c.len(), c.bytes(), c.is_empty()), (2, 5, false));
        c.clear();
        assert_eq!((c.len(), c.bytes(), c.is_empty()), (0, 0, true));
        assert_eq!(c.get_str(b"a"), Lookup::Miss);
    }

    // set_limits: a reload's new limits, applied to what is held.

    fn limits(max_entries: usize, max_bytes: u64, ttl: Option<Duration>) -> CacheSettings {
        CacheSettings {
            max_entries,
            max_bytes,
            ttl,
        }
    }

    #[test]
    fn fewer_entries_evict_the_least_recently_used_at_once() {
        let (c, _) = cache(5, 1000, None);
        for k in ["a", "b", "c", "d", "e"] {
            c.put_str(k.as_bytes(), b"1", N);
        }
        assert_eq!(c.get_str(b"a"), hit("1")); // recency, oldest first: b c d e a
        c.set_limits(limits(2, 1000, None));
        assert_eq!((c.len(), c.bytes()), (2, 4));
        assert_eq!(c.get_str(b"e"), hit("1"));
        assert_eq!(c.get_str(b"a"), hit("1"));
        for k in ["b", "c", "d"] {
            assert_eq!(c.get_str(k.as_bytes()), Lookup::Miss, "{k}");
        }
        c.put_str(b"f", b"1", N); // the new bound holds for inserts: e, the LRU now, goes
        assert_eq!(c.get_str(b"e"), Lookup::Miss);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn fewer_bytes_evict_the_least_recently_used_until_the_rest_fits() {
        let (c, _) = cache(100, 100, None);
        c.put_str(b"a", b"1234", N); // 5
        c.put_str(b"b", b"12345678", N); // 9
        c.put_str(b"c", b"12", N); // 3
        c.put_str(b"d", b"123", N); // 4
        assert_eq!(c.get_str(b"b"), hit("12345678")); // recency, oldest first: a c d b
        assert_eq!(c.bytes(), 21);
        c.set_limits(limits(100, 13, None));
        // a (16 left) then c (13 left) go; d and b fit exactly.
        assert_eq!((c.len(), c.bytes()), (2, 13));
        assert_eq!(c.get_str(b"a"), Lookup::Miss);
        assert_eq!(c.get_str(b"c"), Lookup::Miss);
        assert_eq!(c.get_str(b"d"), hit("123"));
        assert_eq!(c.get_str(b"b"), hit("12345678"));
        assert!(
            !c.put_str(b"big", b"12345678901", N),
            "14 bytes: over the new max on its own"
        );
        assert_eq!((c.len(), c.bytes()), (2, 13));
    }

    #[test]
    fn a_zero_limit_empties_the_cache_and_stores_nothing_until_lifted() {
        for (entries, bytes) in [(0, 100), (10, 0)] {
            let (c, _) = cache(10, 100, None);
            c.put_str(b"a", b"1", N);
            c.put_hash(b"h", &pairs(&[("f", "1")]), N);
            c.set_limits(limits(entries, bytes, None));
            assert_eq!((c.len(), c.bytes()), (0, 0), "{entries} {bytes}");
            assert!(!c.is_enabled());
            assert!(!c.put_str(b"a", b"1", N));
            c.set_hash_fields(b"p", &[(b"f", b"1")], N);
            assert_eq!((c.get_str(b"a"), c.len()), (Lookup::Miss, 0));
            c.set_limits(limits(10, 100, None));
            assert!(c.is_enabled());
            assert!(c.put_str(b"a", b"1", N));
            assert_eq!(c.get_str(b"a"), hit("1"));
        }
    }

    #[test]
    fn larger_limits_let_more_in() {
        let (c, _) = cache(2, 100, None);
        for k in ["a", "b", "c"] {
            c.put_str(k.as_bytes(), b"1", N);
        }
        assert_eq!((c.len(), c.get_str(b"a")), (2, Lookup::Miss));
        c.set_limits(limits(4, 100, None));
        assert_eq!(c.len(), 2, "growing evicts nothing and brings nothing back");
        c.put_str(b"d", b"1", N);
        c.put_str(b"e", b"1", N);
        assert_eq!(c.len(), 4);
        for k in ["b", "c", "d", "e"] {
            assert_eq!(c.get_str(k.as_bytes()), hit("1"), "{k}");
        }

        let (c, _) = cache(100, 4, None);
        for k in ["a", "b", "c"] {
            c.put_str(k.as_bytes(), b"1", N);
        }
        assert_eq!((c.len(), c.bytes()), (2, 4));
        c.set_limits(limits(100, 6, None));
        assert!(c.put_str(b"d", b"1", N));
        assert_eq!((c.len(), c.bytes()), (3, 6));
        assert!(
            c.put_str(b"e", b"12", N),
            "3 bytes: fit the new max_bytes, evicting LRU entries"
        );
        assert_eq!((c.len(), c.bytes()), (2, 5), "b and c made room");
    }

    #[test]
    fn a_shorter_ttl_expires_held_entries_earlier() {
        let (c, clock) = cache(10, 100, Some(60 * SEC));
        c.put_str(b"a", b"1", N);
        clock.advance(10 * SEC);
        c.set_limits(limits(10, 100, Some(5 * SEC)));
        clock.advance(5 * SEC - NS);
        assert_eq!(c.get_str(b"a"), hit("1"));
        c.put_str(b"b", b"1", N); // learned now: the new ttl from now
        clock.advance(NS);
        assert_eq!(
            c.get_str(b"a"),
            Lookup::Expired,
            "capped at the reload + 5s, not 60s after it was learned"
        );
        clock.advance(5 * SEC - 2 * NS);
        assert_eq!(c.get_str(b"b"), hit("1"));
        clock.advance(NS);
        assert_eq!(c.get_str(b"b"), Lookup::Expired);

        // A ttl where there was none caps entries that had no expiry of the cache's own.
        let (c, clock) = cache(10, 100, None);
        c.put_str(b"a", b"1", N);
        clock.advance(3600 * SEC);
        c.set_limits(limits(10, 100, Some(SEC)));
        clock.advance(SEC - NS);
        assert_eq!(c.get_str(b"a"), hit("1"));
        clock.advance(NS);
        assert_eq!(c.get_str(b"a"), Lookup::Expired);
    }

    #[test]
    fn a_longer_ttl_does_not_extend_held_entries_but_applies_to_new_ones() {
        let (c, clock) = cache(10, 100, Some(10 * SEC));
        c.put_str(b"a", b"1", N);
        clock.advance(5 * SEC);
        c.set_limits(limits(10, 100, Some(60 * SEC)));
        c.put_str(b"b", b"1", N);
        clock.advance(5 * SEC - NS);
        assert_eq!(c.get_str(b"a"), hit("1"));
        clock.advance(NS);
        assert_eq!(c.get_str(b"a"), Lookup::Expired, "still 10s after it was learned");
        clock.advance(55 * SEC - NS);
        assert_eq!(c.get_str(b"b"), hit("1"));
        clock.advance(NS);
        assert_eq!(c.get_str(b"b"), Lookup::Expired);

        // No ttl any more: held entries keep theirs, new ones have none.
        let (c, clock) = cache(10, 100, Some(10 * SEC));
        c.put_str(b"a", b"1", N);
        c.set_limits(limits(10, 100, None));
        c.put_str(b"b", b"1", N);
        clock.advance(10 * SEC);
        assert_eq!(c.get_str(b"a"), Lookup::Expired);
        clock.advance(3600 * SEC);
        assert_eq!(c.get_str(b"b"), hit("1"));
    }

    #[test]
    fn the_key_expiry_still_caps_entries_through_a_new_ttl() {
        let (c, clock) = cache(10, 100, Some(10 * SEC));
        c.put_str(b"k", b"1", c.expires_in(20 * SEC));
        c.put_str(b"s", b"1", c.expires_in(2 * SEC));
        c.set_limits(limits(10, 100, None));
        clock.advance(5 * SEC);
        assert_eq!(c.get_str(b"s"), Lookup::Expired, "a shorter key expiry stays");
        c.put_str(b"k", b"2", N); // a refresh, with no ttl of the cache's own: the key's expiry is kept
        c.set_limits(limits(10, 100, Some(60 * SEC)));
        c.put_str(b"n", b"1", c.expires_in(SEC)); // new under the new ttl: the key expiry caps it
        clock.advance(SEC);
        assert_eq!(c.get_str(b"n"), Lookup::Expired);
        clock.advance(14 * SEC - NS);
        assert_eq!(c.get_str(b"k"), hit("2"));
        clock.advance(NS);
        assert_eq!(
            c.get_str(b"k"),
            Lookup::Expired,
            "20s, the key's expiry, whatever the ttls"
        );
    }
}
