//! Who is speaking: the [`Context`] every notification of this sidecar shares (its instance name, the Redis it
//! fronts, the breaker settings, the runbook and dashboard links) and the PagerDuty `dedup_key` derived from it.
//!
//! Built once per configuration, not per event. The Redis target is always the masked
//! [`RedisConfig::display_url`], so a password can never reach a notification.
//!
//! [`RedisConfig::display_url`]: crate::config::RedisConfig::display_url

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::Config;

/// PagerDuty caps `dedup_key` at 255 characters.
const MAX_DEDUP_KEY: usize = 255;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::testing::ctx;

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
    fn the_hostname_is_never_empty() {
        assert!(!hostname().is_empty());
    }
}
