//! The in-process sliding-window limiter: what `ratelimit.on_unavailable: local` decides with while Redis cannot.
//!
//! Same semantics as the Redis script: a call of `cost` is allowed when the costs of the calls allowed within
//! the last `window` plus `cost` stay within `limit`; a call allowed at `t` stops counting at `t + window`
//! exactly; denied calls count for nothing. `reset` is how long until a call of the same cost would be allowed
//! (zero when it would be now). Its state is this sidecar's alone, so while it decides, each sidecar of a fleet
//! admits up to `limit` on its own.
//!
//! Memory is bounded twice: at most `max_keys` keys and [`MAX_ENTRIES`] remembered calls in all (one per allowed
//! call whatever its cost, at most `limit` per key, as in Redis), the least recently used key forgotten first.
//! Work is bounded as in Redis too: a check is O(log n) in the calls its key holds, never proportional to `cost`. A forgotten key starts again from an empty window, so an eviction can only
//! ever admit more, never deny wrongly. Time comes from an injected [`Clock`](crate::clock::Clock).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::clock::SharedClock;

/// Most allowed calls remembered across all keys (about 32 MiB).
pub(crate) const MAX_ENTRIES: usize = 1_000_000;

/// One check's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Most cost allowed within one window.
    pub limit: u64,
    pub window: Duration,
    /// What this call counts for; at most `limit`.
    pub cost: u64,
}

/// One check's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub allowed: bool,
    /// Cost still allowed within the current window, after this call.
    pub remaining: u64,
    /// Until a call of the same cost would be allowed.
    pub reset: Duration,
}

/// The calls allowed for one key that may still count, oldest first, each with the running total of the costs
/// allowed up to and including it (as the Redis script keeps them): the cost in the window is a subtraction, and
/// the call whose departure makes room is found by binary search, so no check does work proportional to `cost`
/// or to the calls before it.
#[derive(Default)]
struct Log {
    calls: VecDeque<(Instant, u64)>,
    /// The running total before the oldest call still held.
    base: u64,
}

impl Log {
    /// Cost of the calls held.
    fn used(&self) -> u64 {
        self.calls.back().map_or(0, |&(_, total)| total - self.base)
    }

    /// Forgets calls that left the window; returns how many. O(log n): a binary search, then a prefix cut.
    fn expire(&mut self, window: Duration, now: Instant) -> usize {
        let gone = self.calls.partition_point(|&(at, _)| at + window <= now);
        if gone > 0 {
            self.base = self.calls[gone - 1].1;
            self.calls.drain(..gone);
        }
        if self.calls.is_empty() {
            // Totals start again from zero, so they never grow past what one window holds.
            self.base = 0;
        }
        gone
    }

    /// Records an allowed call.
    fn push(&mut self, now: Instant, cost: u64) {
        let total = self.calls.back().map_or(self.base, |&(_, total)| total) + cost;
        self.calls.push_back((now, total));
    }

    /// Until enough of the oldest calls have left for a call of `limit.cost` to fit.
    fn reset(&self, limit: &Limit, now: Instant) -> Duration {
        let need = (self.used() + limit.cost).saturating_sub(limit.limit);
        if need == 0 {
            return Duration::ZERO;
        }
        // The first call whose departure (with all older ones) frees `need`.
        let i = self.calls.partition_point(|&(_, total)| total - self.base < need);
        self.calls.get(i).map_or(Duration::ZERO, |&(at, _)| {
            (at + limit.window).saturating_duration_since(now)
        })
    }
}

struct Inner {
    logs: LruCache<Vec<u8>, Log>,
    entries: usize,
    /// `ratelimit.local_max_keys` (at least 1); a reload changes it.
    max_keys: usize,
}

impl Inner {
    /// Forgets the least recently used keys until both bounds hold (the most recent key always stays).
    fn evict(&mut self, max_entries: usize) {
        while self.logs.len() > 1 && (self.logs.len() > self.max_keys || self.entries > max_entries) {
            if let Some((_, log)) = self.logs.pop_lru() {
                self.entries -= log.calls.len();
            }
        }
    }
}

/// Per-key sliding windows in this process.
pub(crate) struct LocalLimiter {
    inner: Mutex<Inner>,
    max_entries: usize,
    clock: SharedClock,
}

impl LocalLimiter {
    pub(crate) fn new(max_keys: usize, clock: SharedClock) -> Self {
        Self::with_max_entries(max_keys, MAX_ENTRIES, clock)
    }

    fn with_max_entries(max_keys: usize, max_entries: usize, clock: SharedClock) -> Self {
        LocalLimiter {
            inner: Mutex::new(Inner {
                logs: LruCache::unbounded(),
                entries: 0,
                max_keys: max_keys.max(1),
            }),
            max_entries,
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Counters stay consistent between statements; keep going on poison.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn check(&self, key: &[u8], limit: &Limit) -> Verdict {
        let now = self.clock.now();
        let mut guard = self.lock();
        let Inner { logs, entries, .. } = &mut *guard;
        let log = logs.get_or_insert_mut(key.to_vec(), Log::default);
        *entries -= log.expire(limit.window, now);
        let allowed = log.used() + limit.cost <= limit.limit;
        if allowed {
            log.push(now, limit.cost);
            *entries += 1;
        }
        let verdict = Verdict {
            allowed,
            remaining: limit.limit.saturating_sub(log.used()),
            reset: log.reset(limit, now),
        };
        // The key just used is the most recent, so it is the last to go.
        guard.evict(self.max_entries);
        verdict
    }

    /// Applies a reloaded `ratelimit.local_max_keys`: a smaller bound forgets the least recently used keys now.
    pub(crate) fn set_max_keys(&self, max_keys: usize) {
        let mut inner = self.lock();
        inner.max_keys = max_keys.max(1);
        inner.evict(self.max_entries);
    }

    /// Keys tracked now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().logs.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;

    const MS: Duration = Duration::from_millis(1);

    fn limiter(max_keys: usize) -> (Arc<ManualClock>, LocalLimiter) {
        let clock = ManualClock::new();
        (clock.clone(), LocalLimiter::new(max_keys, clock))
    }

    fn limit(limit: u64, window_ms: u64, cost: u64) -> Limit {
        Limit {
            limit,
            window: Duration::from_millis(window_ms),
            cost,
        }
    }

    /// (allowed, remaining, reset in ms) of one call.
    fn call(l: &LocalLimiter, key: &str, lim: Limit) -> (bool, u64, u128) {
        let v = l.check(key.as_bytes(), &lim);
        (v.allowed, v.remaining, v.reset.as_millis())
    }

    #[test]
    fn a_window_slides_call_by_call() {
        // time (ms)   0    0    0   100  299  300  350  600
        // call        A    B    C    D    E    F    G    H
        // cost        2    1    1    1    1    1    3    3
        // allowed     y    y    n    n    n    y    n    y     (limit 3 per 300ms)
        let (clock, l) = limiter(10);
        assert_eq!(
            call(&l, "k", limit(3, 300, 2)),
            (true, 1, 300),
            "A; another 2 fits once A leaves"
        );
        assert_eq!(call(&l, "k", limit(3, 300, 1)), (true, 0, 300), "B");
        assert_eq!(
            call(&l, "k", limit(3, 300, 1)),
            (false, 0, 300),
            "C: denied, counts for nothing"
        );
        clock.advance(100 * MS);
        assert_eq!(call(&l, "k", limit(3, 300, 1)), (false, 0, 200), "D");
        clock.advance(199 * MS);
        assert_eq!(
            call(&l, "k", limit(3, 300, 1)),
            (false, 0, 1),
            "E: 1ms before A and B leave"
        );
        clock.advance(MS);
        assert_eq!(
            call(&l, "k", limit(3, 300, 1)),
            (true, 2, 0),
            "F: A and B left at exactly 300ms"
        );
        clock.advance(50 * MS);
        assert_eq!(
            call(&l, "k", limit(3, 300, 3)),
            (false, 2, 250),
            "G: 3 more fit when F leaves"
        );
        clock.advance(250 * MS);
        assert_eq!(call(&l, "k", limit(3, 300, 3)), (true, 0, 300), "H");
    }

    #[test]
    fn a_smaller_max_keys_forgets_the_least_recently_used_keys_at_once() {
        let (_, l) = limiter(4);
        for key in ["a", "b", "c", "d"] {
            assert!(call(&l, key, limit(1, 1000, 1)).0);
        }
        // "a" used again: "b" is now the least recently used.
        assert!(!call(&l, "a", limit(1, 1000, 1)).0);
        l.set_max_keys(2);
        assert_eq!(l.len(), 2);
        // "a" and "d" are remembered (denied again); "b" and "c" were forgotten (allowed afresh).
        assert!(!call(&l, "a", limit(1, 1000, 1)).0);
        assert!(!call(&l, "d", limit(1, 1000, 1)).0);
        assert!(call(&l, "b", limit(1, 1000, 1)).0);
        assert_eq!(l.len(), 2);
        // A larger bound keeps more again; 0 still keeps the key in use.
        l.set_max_keys(3);
        assert!(call(&l, "c", limit(1, 1000, 1)).0);
        assert_eq!(l.len(), 3);
        l.set_max_keys(0);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn reset_names_the_call_whose_departure_makes_room() {
        let (clock, l) = limiter(10);
        for _ in 0..3 {
            assert!(call(&l, "k", limit(3, 1000, 1)).0);
            clock.advance(100 * MS);
        }
        // Calls at 0, 100, 200; now 300. One unit frees at 1000, two at 1100.
        assert_eq!(call(&l, "k", limit(3, 1000, 1)), (false, 0, 700));
        assert_eq!(call(&l, "k", limit(3, 1000, 2)), (false, 0, 800));
        assert_eq!(call(&l, "k", limit(3, 1000, 3)), (false, 0, 900));
    }

    #[test]
    fn keys_are_independent() {
        let (_clock, l) = limiter(10);
        assert!(call(&l, "a", limit(1, 1000, 1)).0);
        assert!(!call(&l, "a", limit(1, 1000, 1)).0);
        assert!(call(&l, "b", limit(1, 1000, 1)).0);
    }

    #[test]
    fn tracked_keys_are_capped_least_recently_used_first() {
        let (_clock, l) = limiter(2);
        call(&l, "a", limit(1, 1000, 1));
        call(&l, "b", limit(1, 1000, 1));
        call(&l, "a", limit(1, 1000, 1)); // a is now the most recent
        call(&l, "c", limit(1, 1000, 1)); // evicts b
        assert_eq!(l.len(), 2);
        assert!(!call(&l, "a", limit(1, 1000, 1)).0, "a was kept");
        assert!(call(&l, "b", limit(1, 1000, 1)).0, "b was forgotten: a fresh window");
    }

    #[test]
    fn remembered_calls_are_capped_across_keys() {
        let clock = ManualClock::new();
        let l = LocalLimiter::with_max_entries(100, 10, clock);
        for _ in 0..6 {
            call(&l, "a", limit(100, 60_000, 1));
        }
        for _ in 0..6 {
            call(&l, "b", limit(100, 60_000, 1));
        }
        // 12 calls remembered would exceed 10: a, the least recently used, is forgotten.
        assert_eq!(l.lock().entries, 6);
        assert_eq!(call(&l, "a", limit(100, 60_000, 1)), (true, 99, 0), "a starts over");
        let logged: usize = l.lock().logs.iter().map(|(_, log)| log.calls.len()).sum();
        assert_eq!(logged, l.lock().entries, "the counter matches the logs");
    }

    #[test]
    fn the_entry_cap_is_reached_not_exceeded_and_never_forgets_the_key_in_use() {
        let clock = ManualClock::new();
        let l = LocalLimiter::with_max_entries(100, 10, clock);
        for key in ["a", "b"] {
            for _ in 0..5 {
                call(&l, key, limit(100, 60_000, 1));
            }
        }
        // Exactly at the cap: nothing is forgotten.
        assert_eq!((l.len(), l.lock().entries), (2, 10));
        // One key over the cap by itself: the key being used stays.
        let one = LocalLimiter::with_max_entries(100, 3, ManualClock::new());
        for _ in 0..5 {
            call(&one, "k", limit(100, 60_000, 1));
        }
        assert_eq!(one.len(), 1);
        assert_eq!(
            call(&one, "k", limit(100, 60_000, 1)),
            (true, 94, 0),
            "its window is kept"
        );
    }

    #[test]
    fn one_call_is_one_entry_whatever_its_cost() {
        let (clock, l) = limiter(10);
        assert_eq!(
            call(&l, "k", limit(100_000, 86_400_000, 100_000)),
            (true, 0, 86_400_000)
        );
        assert_eq!(l.lock().entries, 1, "one remembered call, not 100000");
        assert_eq!(call(&l, "k", limit(100_000, 86_400_000, 1)), (false, 0, 86_400_000));
        // Many small calls: the one whose departure makes room is found among them.
        let (clock2, m) = limiter(10);
        for _ in 0..1000 {
            assert!(call(&m, "k", limit(1000, 10_000, 1)).0);
            clock2.advance(MS);
        }
        // Calls at 0..=999ms, now 1000ms: 300 must leave for a call of 300; the 300th (at 299ms) leaves at 10299ms.
        assert_eq!(call(&m, "k", limit(1000, 10_000, 300)), (false, 0, 9_299));
        clock2.advance(9_000 * MS);
        // At 10000ms the first call has left; totals continue from it.
        assert_eq!(call(&m, "k", limit(1000, 10_000, 1)), (true, 0, 1));
        assert_eq!(m.lock().entries, 1000);
        clock.advance(86_400_000 * MS);
        assert_eq!(
            call(&l, "k", limit(100_000, 86_400_000, 1)),
            (true, 99_999, 0),
            "the window emptied"
        );
    }

    #[test]
    fn the_counter_follows_expiry_and_eviction() {
        let (clock, l) = limiter(3);
        for key in ["a", "b", "c", "d"] {
            call(&l, key, limit(5, 100, 1));
            call(&l, key, limit(5, 100, 1));
        }
        assert_eq!(l.lock().entries, 6, "d evicted a");
        clock.advance(100 * MS);
        call(&l, "b", limit(5, 100, 1));
        assert_eq!(l.lock().entries, 5, "b's two expired, one added");
    }
}
