//! Time, injected, and how redguard writes a wall-clock time.
//!
//! The breaker and the fallback cache never read the system clock themselves: they ask a [`Clock`].
//! Production code passes [`SystemClock`]; unit tests pass a `ManualClock` and move it forward by
//! hand, so every timeout, backoff and TTL is tested deterministically and without sleeping. Wall-clock
//! times that leave the process (health JSON, notifications) are written by [`iso8601`].

#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
#[cfg(test)]
use std::time::Duration;
use std::time::{Instant, SystemTime};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// ISO 8601 / RFC 3339, UTC: the health endpoints' and the notifications' time stamps.
pub fn iso8601(t: SystemTime) -> String {
    OffsetDateTime::from(t).format(&Rfc3339).unwrap_or_default()
}

/// A source of monotonic time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

/// Shared handle to a clock, as stored by the breaker and the cache.
pub type SharedClock = Arc<dyn Clock>;

/// The real monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to. Starts at the real `Instant::now()` of its creation.
#[cfg(test)]
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    offset_nanos: AtomicU64,
}

#[cfg(test)]
impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(ManualClock {
            base: Instant::now(),
            offset_nanos: AtomicU64::new(0),
        })
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.offset_nanos.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now() - t0, Duration::from_millis(1500));
    }
}
