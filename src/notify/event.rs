//! What a notification says: an [`Event`] built once from a breaker [`Transition`] at the moment it happens,
//! with its [`Cause`] (measured, an operator's override, or observe mode) and the severity that allows, and the
//! [`Notice`] a sink is finally asked to send (one event, or the latest of several that flap damping folded into
//! one message).
//!
//! Plain data, no I/O. Who is speaking lives in [`super::context`], the shared wording in [`super::text`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::text::truncate;
use crate::breaker::{Mode, Override, Reason, State, Transition};
use crate::config::Severity;

/// Longest last-error text carried in an event; Redis errors are short, a pathological one must not bloat
/// every payload.
const MAX_ERROR_CHARS: usize = 500;

/// Why an event exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The breaker changed state.
    StateChanged,
    /// `redguard notify-test`: an operator checking the wiring.
    Test,
}

/// What moved the breaker: whether the change is news about Redis, and so how loud it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The breaker's own judgement of the calls, in enforce mode: a real outage or recovery.
    Measured,
    /// An operator's override (`POST /v1/breaker`): deliberate, not something Redis did.
    Manual(Override),
    /// The breaker's own judgement in observe mode: it would have changed state, but no call was rejected.
    Observed,
}

impl Cause {
    /// The machine-readable name receivers route on (the webhook's and PagerDuty's `cause`): `measured`,
    /// `manual` or `observed`, the variants' own names, so a receiver can send overrides elsewhere than outages.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Cause::Measured => "measured",
            Cause::Manual(_) => "manual",
            Cause::Observed => "observed",
        }
    }

    fn of(t: &Transition) -> Cause {
        match t.reason {
            Reason::Manual(o) => Cause::Manual(o),
            _ if t.mode == Mode::Observe => Cause::Observed,
            _ => Cause::Measured,
        }
    }
}

/// One state change, as every sink sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub kind: Kind,
    pub from: State,
    pub to: State,
    /// Why the breaker moved ("2 consecutive failures").
    pub reason: String,
    /// The most recent Redis failure, if any.
    pub last_error: Option<String>,
    /// Consecutive failures when the state changed.
    pub failure_count: u32,
    /// Wall-clock time of the change.
    pub at: SystemTime,
    /// How long the previous state lasted.
    pub previous_lasted: Duration,
    pub cause: Cause,
}

impl Event {
    /// The event for `t`. `now` / `now_instant` are read together by the caller to turn the transition's
    /// monotonic time into wall-clock time.
    pub(crate) fn from_transition(
        t: &Transition,
        last_error: Option<&str>,
        now: SystemTime,
        now_instant: Instant,
    ) -> Event {
        let ago = now_instant.saturating_duration_since(t.at);
        Event {
            kind: Kind::StateChanged,
            from: t.from,
            to: t.to,
            reason: t.reason.to_string(),
            last_error: last_error.map(|e| truncate(e, MAX_ERROR_CHARS)),
            failure_count: t.consecutive_failures,
            at: now.checked_sub(ago).unwrap_or(now),
            previous_lasted: t.previous_lasted,
            cause: Cause::of(t),
        }
    }

    /// The event `redguard notify-test` sends: shaped like a real opening, marked as a test everywhere.
    pub(crate) fn test(now: SystemTime) -> Event {
        Event {
            kind: Kind::Test,
            from: State::Closed,
            to: State::Open,
            reason: "test notification from redguard notify-test".to_owned(),
            last_error: None,
            failure_count: 0,
            at: now,
            previous_lasted: Duration::ZERO,
            cause: Cause::Measured,
        }
    }

    /// The severity to page with, given the sink's configured one: a measured change keeps it; an override is
    /// at most `info` (an operator did it and knows), an observe-mode change at most `warning` (Redis is failing
    /// by the thresholds, but every call still goes to it). Never louder than configured.
    pub(crate) fn severity(&self, configured: Severity) -> Severity {
        // Loudest first, as `Severity` declares them.
        let rank = |s: Severity| match s {
            Severity::Critical => 0,
            Severity::Error => 1,
            Severity::Warning => 2,
            Severity::Info => 3,
        };
        let cap = match self.cause {
            Cause::Measured => return configured,
            Cause::Manual(_) => Severity::Info,
            Cause::Observed => Severity::Warning,
        };
        if rank(configured) >= rank(cap) {
            configured
        } else {
            cap
        }
    }

    pub(crate) fn unix_seconds(&self) -> u64 {
        self.at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
    }
}

/// What one sink is asked to send: the latest event and how many state changes it stands for (more than one
/// when flap damping held changes back).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Notice {
    pub event: Arc<Event>,
    pub changes: u32,
}

impl Notice {
    pub(crate) fn single(event: Arc<Event>) -> Notice {
        Notice { event, changes: 1 }
    }

    /// Several changes folded into one message.
    pub(crate) fn is_summary(&self) -> bool {
        self.changes > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::Reason;
    use crate::notify::testing::ctx;
    use crate::notify::text::headline;

    #[test]
    fn a_transition_becomes_an_event_in_wall_clock_time() {
        let now_instant = Instant::now();
        let t = Transition {
            from: State::Closed,
            to: State::Open,
            reason: Reason::ConsecutiveFailures(2),
            at: now_instant - Duration::from_secs(3),
            previous_lasted: Duration::from_secs(75),
            consecutive_failures: 2,
            mode: Mode::Enforce,
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let long_error = "x".repeat(2000);
        let e = Event::from_transition(&t, Some(&long_error), now, now_instant);
        assert_eq!(e.at, UNIX_EPOCH + Duration::from_secs(1_699_999_997));
        assert_eq!(e.reason, "2 consecutive failures");
        assert_eq!(e.failure_count, 2);
        assert_eq!(
            e.last_error.as_ref().unwrap().chars().count(),
            MAX_ERROR_CHARS,
            "the ellipsis counts"
        );
        let n = Notice::single(Arc::new(e));
        assert_eq!(
            headline(&n, &ctx()),
            "Redis circuit OPEN on prod/api-0 (Redis redis://:***@cache:6379): 2 consecutive failures"
        );
        let summary = Notice { changes: 4, ..n };
        assert_eq!(
            headline(&summary, &ctx()),
            "Redis circuit flapping on prod/api-0 (Redis redis://:***@cache:6379): 4 state changes, now OPEN"
        );
    }

    #[test]
    fn an_override_or_an_observed_change_says_so_and_pages_no_louder_than_info_or_warning() {
        let now_instant = Instant::now();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let t = |reason, mode| Transition {
            from: State::Closed,
            to: State::Open,
            reason,
            at: now_instant,
            previous_lasted: Duration::from_secs(5),
            consecutive_failures: 0,
            mode,
        };
        let forced = Event::from_transition(
            &t(Reason::Manual(Override::ForceOpen), Mode::Enforce),
            None,
            now,
            now_instant,
        );
        assert_eq!(forced.cause, Cause::Manual(Override::ForceOpen));
        assert_eq!(forced.cause.as_str(), "manual");
        assert_eq!(forced.severity(Severity::Critical), Severity::Info);
        assert_eq!(
            headline(&Notice::single(Arc::new(forced.clone())), &ctx()),
            "Redis circuit FORCED OPEN on prod/api-0 (Redis redis://:***@cache:6379): manual override force_open"
        );
        // An override in observe mode is still an override.
        let forced_observing = Event::from_transition(
            &t(Reason::Manual(Override::ForceOpen), Mode::Observe),
            None,
            now,
            now_instant,
        );
        assert_eq!(forced_observing.cause, Cause::Manual(Override::ForceOpen));

        let observed = Event::from_transition(
            &t(Reason::ConsecutiveFailures(5), Mode::Observe),
            None,
            now,
            now_instant,
        );
        assert_eq!(observed.cause, Cause::Observed);
        assert_eq!(observed.cause.as_str(), "observed");
        assert_eq!(observed.severity(Severity::Critical), Severity::Warning);
        assert_eq!(observed.severity(Severity::Error), Severity::Warning);
        assert_eq!(
            observed.severity(Severity::Info),
            Severity::Info,
            "never louder than configured"
        );
        assert_eq!(
            headline(&Notice::single(Arc::new(observed)), &ctx()),
            "Redis circuit would be OPEN on prod/api-0 (Redis redis://:***@cache:6379; observe mode, no call \
             rejected): 5 consecutive failures"
        );

        let measured = Event::from_transition(
            &t(Reason::ConsecutiveFailures(5), Mode::Enforce),
            None,
            now,
            now_instant,
        );
        assert_eq!(measured.cause, Cause::Measured);
        assert_eq!(measured.cause.as_str(), "measured");
        assert_eq!(measured.severity(Severity::Critical), Severity::Critical);
        assert_eq!(measured.severity(Severity::Error), Severity::Error);
        let reset = Event::from_transition(
            &t(Reason::Manual(Override::Reset), Mode::Enforce),
            None,
            now,
            now_instant,
        );
        assert_eq!(reset.severity(Severity::Critical), Severity::Info);
        assert_eq!(reset.cause.as_str(), "manual", "a reset is an operator's doing too");
    }
}
