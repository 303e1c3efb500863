//! What a notification says: an [`Event`] built once from a breaker [`Transition`] at the moment it happens,
//! the [`Context`] naming this sidecar and its Redis, and the [`Notice`] a sink is finally asked to send (one
//! event, or the latest of several that flap damping folded into one message).
//!
//! Everything here is plain data and pure text helpers; sinks render it without I/O. The Redis target is always
//! the masked [`RedisConfig::display_url`], so a password can never reach a notification.
//!
//! [`RedisConfig::display_url`]: crate::config::RedisConfig::display_url

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::breaker::{Mode, Override, Reason, State, Transition};
use crate::config::{Config, Severity};

/// Longest last-error text carried in an event; Redis errors are short, a pathological one must not bloat
/// every payload.
const MAX_ERROR_CHARS: usize = 500;
/// PagerDuty caps `dedup_key` at 255 characters.
const MAX_DEDUP_KEY: usize = 255;

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

/// Who is speaking: the same for every event of this sidecar.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Context {
    /// `notify.instance`.
    pub instance: String,
    /// The Redis target, password masked, for people to read.
    pub redis: String,
    /// [`crate::config::RedisConfig::paging_target`]: the same text as `redguard_redis_info{target}`.
    pub target: String,
    /// The breaker settings in force, for PagerDuty's `custom_details`.
    pub breaker: Value,
    /// `notify.runbook_url` and `notify.dashboard_url` (validated absolute http(s) URLs): links and buttons.
    pub runbook_url: Option<String>,
    pub dashboard_url: Option<String>,
}

impl Context {
    pub(crate) fn from_config(cfg: &Config) -> Context {
        let b = &cfg.breaker;
        Context {
            instance: cfg.notify.instance.clone().unwrap_or_else(hostname),
            redis: cfg.redis.display_target(),
            target: cfg.redis.paging_target(),
            breaker: json!({
                "failure_threshold": b.failure_threshold,
                "failure_rate_threshold": b.failure_rate_threshold,
                "recovery_timeout_seconds": b.recovery_timeout.as_secs_f64(),
                "recovery_timeout_max_seconds": b.recovery_timeout_max.as_secs_f64(),
                "success_threshold": b.success_threshold,
                "command_timeout_seconds": cfg.redis.command_timeout.as_secs_f64(),
            }),
            runbook_url: cfg.notify.runbook_url.clone(),
            dashboard_url: cfg.notify.dashboard_url.clone(),
        }
    }

    /// One alert per Redis target, whichever sidecar sends it: every pod in front of one Redis folds into the
    /// same incident (one outage, one page), and it is stable across restarts, so a resolve after a restart
    /// still finds it. Readable when short enough, else hashed. The target is the one Prometheus sees in
    /// `redguard_redis_info{target}` (host and port only: no password in it).
    pub(crate) fn dedup_key(&self) -> String {
        let readable = format!("redguard/{}", self.target);
        if readable.len() <= MAX_DEDUP_KEY {
            return readable;
        }
        format!("redguard/{}", hex::encode(&Sha256::digest(&self.target)[..16]))
    }

    /// The links every message offers, as (label, URL): the runbook first (what to do), then the dashboard.
    pub(crate) fn links(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [("Runbook", &self.runbook_url), ("Dashboard", &self.dashboard_url)]
            .into_iter()
            .filter_map(|(label, url)| Some((label, url.as_deref()?)))
    }
}

/// The machine's hostname, or "redguard" if it has none.
pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname(2) writes at most `buf.len()` bytes into a buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_owned(),
        _ => "redguard".to_owned(),
    }
}

/// The state as headlines show it.
pub(crate) fn state_title(s: State) -> &'static str {
    match s {
        State::Closed => "CLOSED",
        State::Open => "OPEN",
        State::HalfOpen => "HALF-OPEN",
    }
}

/// One line for chat fallbacks and alert summaries.
pub(crate) fn headline(n: &Notice, ctx: &Context) -> String {
    let e = &n.event;
    let (instance, redis) = (&ctx.instance, &ctx.redis);
    match e.kind {
        Kind::Test => format!("Test notification from redguard on {instance} (Redis {redis})"),
        Kind::StateChanged if n.is_summary() => format!(
            "Redis circuit flapping on {instance} (Redis {redis}): {} state changes, now {}",
            n.changes,
            state_title(e.to)
        ),
        Kind::StateChanged => match e.cause {
            Cause::Manual(Override::ForceOpen | Override::ForceClosed) => format!(
                "Redis circuit FORCED {} on {instance} (Redis {redis}): {}",
                state_title(e.to),
                e.reason
            ),
            Cause::Observed => format!(
                "Redis circuit would be {} on {instance} (Redis {redis}; observe mode, no call rejected): {}",
                state_title(e.to),
                e.reason
            ),
            Cause::Measured | Cause::Manual(Override::Reset) => format!(
                "Redis circuit {} on {instance} (Redis {redis}): {}",
                state_title(e.to),
                e.reason
            ),
        },
    }
}

/// A duration as people read it: "850ms", "42s", "3m 12s".
pub(crate) fn human_duration(d: Duration) -> String {
    let rounded = if d < Duration::from_secs(1) {
        Duration::from_millis(d.as_millis() as u64)
    } else {
        Duration::from_secs(d.as_secs())
    };
    humantime::format_duration(rounded).to_string()
}

/// At most `max` characters, with an ellipsis when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    // The ellipsis counts: PagerDuty's summary and Slack's header refuse or cut anything past their limit.
    match (s.char_indices().nth(max), max.checked_sub(1)) {
        (Some(_), Some(keep)) => {
            let cut = s.char_indices().nth(keep).map_or(0, |(i, _)| i);
            format!("{}…", &s[..cut])
        }
        (Some(_), None) => String::new(),
        (None, _) => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::Reason;
    use crate::notify::testing::ctx;

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
        assert_eq!(measured.severity(Severity::Critical), Severity::Critical);
        assert_eq!(measured.severity(Severity::Error), Severity::Error);
        let reset = Event::from_transition(
            &t(Reason::Manual(Override::Reset), Mode::Enforce),
            None,
            now,
            now_instant,
        );
        assert_eq!(reset.severity(Severity::Critical), Severity::Info);
    }

    #[test]
    fn dedup_key_names_the_redis_target_not_the_pod_and_is_bounded() {
        let c = ctx();
        assert_eq!(c.dedup_key(), "redguard/cache:6379");
        let other_pod = Context {
            instance: "prod/api-1".into(),
            ..ctx()
        };
        assert_eq!(
            other_pod.dedup_key(),
            c.dedup_key(),
            "every pod behind one Redis: one incident"
        );
        let other_redis = Context {
            target: "cache-2:6379".into(),
            ..ctx()
        };
        assert_ne!(other_redis.dedup_key(), c.dedup_key());
        let long = Context {
            target: format!("{}:6379", "h".repeat(300)),
            ..ctx()
        };
        let key = long.dedup_key();
        assert_eq!(key.len(), "redguard/".len() + 32);
        assert_eq!(key, long.dedup_key());
        assert_ne!(
            key,
            Context {
                target: format!("{}:6379", "g".repeat(300)),
                ..ctx()
            }
            .dedup_key()
        );
    }

    /// The sidecar's own pages and Prometheus's `redguard_redis_info{target}` must name a Redis the same way.
    #[test]
    fn the_dedup_key_is_built_from_the_metrics_target_without_credentials() {
        let mut cfg = Config::default();
        cfg.redis.url = "redis://u:pw-SECRET@cache:6380/0".into();
        let c = Context::from_config(&cfg);
        assert_eq!(c.dedup_key(), format!("redguard/{}", cfg.redis.paging_target()));
        assert_eq!(c.dedup_key(), "redguard/cache:6380");
    }

    #[test]
    fn durations_and_truncation_read_well() {
        assert_eq!(human_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(human_duration(Duration::from_millis(192_400)), "3m 12s");
        assert_eq!(truncate("héllo", 3), "hé…");
        assert_eq!(truncate("héllo", 3).chars().count(), 3, "the ellipsis counts");
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 1), "…");
        assert_eq!(truncate("abcd", 0), "");
        assert!(!hostname().is_empty());
    }
}
