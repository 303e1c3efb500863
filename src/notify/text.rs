//! The wording every sink shares: state names as headlines show them, the one-line headline, durations as
//! people read them, and cutting a text to a receiver's limit (ellipsis included).
//!
//! Pure functions of an event and its context; each sink adds its own layout around them.

use std::time::Duration;

use super::context::Context;
use super::event::{Cause, Kind, Notice};
use crate::breaker::{Override, State};

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

    #[test]
    fn durations_and_truncation_read_well() {
        assert_eq!(human_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(human_duration(Duration::from_millis(192_400)), "3m 12s");
        assert_eq!(truncate("héllo", 3), "hé…");
        assert_eq!(truncate("héllo", 3).chars().count(), 3, "the ellipsis counts");
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 1), "…");
        assert_eq!(truncate("abcd", 0), "");
    }
}
