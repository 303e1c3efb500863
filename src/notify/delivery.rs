//! Getting one notice to one sink: bounded attempts with exponential backoff and jitter, `429`/`Retry-After`
//! honoured, permanent refusals (other 4xx) given up at once; and flap damping, which decides when a sink is
//! told at all.
//!
//! Everything waits on tokio's clock ([`tokio::time::Instant`], `sleep`), so the schedule is tested under
//! paused time with a scripted [`Transport`]; the pure parts ([`backoff`], [`parse_retry_after`], [`Damper`])
//! take their inputs explicitly.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::warn;

use super::event::{Event, Notice};
use super::sink::{Outgoing, Sink};
use super::text::truncate;
use super::transport::{Answer, Transport};
use crate::config::NotifyConfig;
use crate::jitter::Jitter;

/// The first retry waits about this long; each further one doubles it.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// No backoff step waits longer.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A `Retry-After` beyond this is not waited for: the notice is given up instead of blocking the sink.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// How much of a sink's answer goes into a log line or an error.
const MAX_ANSWER_CHARS: usize = 200;

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// Bounds each attempt, connection to last byte read.
    pub timeout: Duration,
    /// Attempts per notice, the first included.
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Policy {
    pub(crate) fn from_config(n: &NotifyConfig) -> Policy {
        Policy {
            timeout: n.timeout,
            max_attempts: n.max_attempts.max(1),
            base: BACKOFF_BASE,
            cap: BACKOFF_CAP,
        }
    }
}

/// The wait before retry number `retry` (1 = after the first failed attempt): the exponential step, half of it
/// fixed and half scaled by `unit` in `[0, 1)` ("equal jitter"), so retries never bunch up at zero yet a
/// fleet that failed together spreads out.
pub(crate) fn backoff(p: &Policy, retry: u32, unit: f64) -> Duration {
    let step = p.base.saturating_mul(1 << retry.saturating_sub(1).min(20)).min(p.cap);
    step / 2 + (step / 2).mul_f64(unit.clamp(0.0, 1.0))
}

/// `Retry-After` as delta-seconds or an HTTP-date (relative to `now`); None if neither.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// Why a notice was not delivered. Texts carry the sink's answer (truncated, secrets scrubbed), never its URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// A 4xx other than 408/429, or a redirect: retrying cannot help.
    #[error("refused with HTTP {status}: {answer}")]
    Refused { status: u16, answer: String },
    /// Every attempt failed with something worth retrying.
    #[error("gave up after {attempts} attempt(s); last: {last}")]
    Exhausted { attempts: u32, last: String },
    /// The sink asked for a pause longer than [`MAX_RETRY_AFTER`].
    #[error("HTTP {status} asked to retry after {}s, longer than the {}s redguard waits", .after.as_secs(), MAX_RETRY_AFTER.as_secs())]
    RetryTooLate { status: u16, after: Duration },
}

/// A delivered notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub attempts: u32,
}

/// What to do after one attempt.
enum Verdict {
    Done,
    Retry { after: Option<Duration>, why: String },
    Stop(DeliveryError),
}

fn judge(answer: &Answer, sink: &Sink) -> Verdict {
    let status = answer.status;
    let text = || sink.redact(&truncate(answer.body.trim(), MAX_ANSWER_CHARS));
    match status {
        200..=299 => Verdict::Done,
        408 | 429 | 500..=599 => {
            // Retry-After is defined for 429 and 503; honour it on any retryable answer that sends it.
            let after = answer
                .retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            match after {
                Some(after) if after > MAX_RETRY_AFTER => Verdict::Stop(DeliveryError::RetryTooLate { status, after }),
                _ => Verdict::Retry {
                    after,
                    why: format!("HTTP {status}: {}", text()),
                },
            }
        }
        _ => Verdict::Stop(DeliveryError::Refused { status, answer: text() }),
    }
}

/// Sends `out` to `sink` (the same body and id on every attempt) until it is accepted, refused, or the attempts run out. `observe` gets each attempt's
/// duration (the histogram).
pub(crate) async fn deliver(
    transport: &dyn Transport,
    sink: &Sink,
    out: &Outgoing,
    policy: &Policy,
    jitter: &mut Jitter,
    observe: &(dyn Fn(Duration) + Sync),
) -> Result<Delivered, DeliveryError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let now_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let request = sink.request(out, now_unix);
        let started = Instant::now();
        let result = tokio::time::timeout(policy.timeout, transport.send(request)).await;
        observe(started.elapsed());
        let (after, why) = match result {
            Ok(Ok(answer)) => match judge(&answer, sink) {
                Verdict::Done => return Ok(Delivered { attempts: attempt }),
                Verdict::Stop(e) => return Err(e),
                Verdict::Retry { after, why } => (after, why),
            },
            Ok(Err(e)) => (None, sink.redact(&e.to_string())),
            Err(_) => (
                None,
                format!("no answer within {}", humantime::format_duration(policy.timeout)),
            ),
        };
        if attempt >= policy.max_attempts {
            return Err(DeliveryError::Exhausted {
                attempts: attempt,
                last: why,
            });
        }
        let wait = after.unwrap_or_else(|| backoff(policy, attempt, jitter.unit()));
        warn!(
            sink = %sink.name,
            kind = sink.kind.as_str(),
            attempt,
            retry_in_ms = wait.as_millis() as u64,
            error = %why,
            "notification attempt failed; retrying"
        );
        tokio::time::sleep(wait).await;
    }
}

/// Flap damping for one sink: the first change after a quiet `min_interval` goes out at once; changes within
/// the interval are held, and when it ends one notice goes out with the latest state and how many changes it
/// stands for. A zero interval turns damping off.
#[derive(Debug)]
pub(crate) struct Damper {
    min_interval: Duration,
    last_sent: Option<Instant>,
    held: Option<Notice>,
}

impl Damper {
    pub(crate) fn new(min_interval: Duration) -> Damper {
        Damper {
            min_interval,
            last_sent: None,
            held: None,
        }
    }

    /// A new change at `now`: the notice to send right away, or None if it is held.
    pub(crate) fn offer(&mut self, event: Arc<Event>, now: Instant) -> Option<Notice> {
        if self.min_interval.is_zero() {
            return Some(Notice::single(event));
        }
        let quiet = self
            .last_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= self.min_interval);
        if quiet && self.held.is_none() {
            self.last_sent = Some(now);
            return Some(Notice::single(event));
        }
        let changes = self.held.take().map_or(0, |h| h.changes) + 1;
        self.held = Some(Notice { event, changes });
        // Overdue (the worker was busy past the deadline): the summary goes now, this change included.
        if quiet {
            return self.flush(now);
        }
        None
    }

    /// When the held summary is due, if one is held.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.held.as_ref()?;
        Some(self.last_sent? + self.min_interval)
    }

    /// The held summary, if it is due at `now`.
    pub(crate) fn flush(&mut self, now: Instant) -> Option<Notice> {
        if self.due()? > now {
            return None;
        }
        self.last_sent = Some(now);
        self.held.take()
    }

    /// The held summary regardless of time (shutdown: better early than never).
    pub(crate) fn drain(&mut self) -> Option<Notice> {
        self.held.take()
    }
}

#[cfg(test)]
#[path = "delivery_tests.rs"]
mod tests;
