//! The Redis target as one short, password-free text: what a fleet of sidecars has in common when they front
//! the same Redis. Both the PagerDuty `dedup_key` (`redguard/<target>`) and the `redguard_redis_info{target}`
//! metric are built from [`RedisConfig::paging_target`], so a page sent by a sidecar and an alert grouped by
//! Prometheus always name the same Redis the same way.

use super::{RedisConfig, RedisMode};

/// Port of a `redis://` URL without one.
const DEFAULT_PORT: &str = "6379";

impl RedisConfig {
    /// `host:port` in standalone mode, the master name in sentinel mode (the sentinels can change, the
    /// master they name is the target), and in cluster mode the seed nodes' `host:port`, sorted, without
    /// duplicates, comma-joined (so two sidecars listing the same seeds in another order agree).
    /// Never a user name or password: only the URL's host and port are kept.
    pub fn paging_target(&self) -> String {
        match self.mode {
            RedisMode::Standalone => host_port(&self.url),
            RedisMode::Sentinel => self.master_name.clone().unwrap_or_default(),
            RedisMode::Cluster => {
                let mut seeds: Vec<String> = self.nodes.iter().map(|u| host_port(u)).collect();
                seeds.sort();
                seeds.dedup();
                seeds.join(",")
            }
        }
    }
}

/// The `host:port` of a Redis URL: scheme, user info, path and query dropped, the default port added.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host = authority.rfind('@').map_or(authority, |at| &authority[at + 1..]);
    // A port follows the last ':' unless that ':' is inside an IPv6 literal's brackets.
    let has_port = host.rfind(':').is_some_and(|i| !host[i..].contains(']'));
    if has_port || host.is_empty() {
        host.to_owned()
    } else {
        format!("{host}:{DEFAULT_PORT}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standalone(url: &str) -> RedisConfig {
        RedisConfig {
            url: url.to_owned(),
            ..RedisConfig::default()
        }
    }

    #[test]
    fn standalone_is_host_and_port_without_credentials() {
        assert_eq!(standalone("redis://cache:6380").paging_target(), "cache:6380");
        assert_eq!(
            standalone("rediss://u:pw-SECRET@cache:6380/2?x=1").paging_target(),
            "cache:6380"
        );
        assert_eq!(standalone("redis://pw-SECRET@cache").paging_target(), "cache:6379");
        assert_eq!(standalone("redis://[::1]").paging_target(), "[::1]:6379");
        assert_eq!(standalone("redis://[::1]:7000").paging_target(), "[::1]:7000");
        assert!(!standalone("redis://u:pw-SECRET@h:1").paging_target().contains("SECRET"));
    }

    #[test]
    fn sentinel_is_the_master_name() {
        let c = RedisConfig {
            mode: RedisMode::Sentinel,
            master_name: Some("orders".into()),
            sentinels: vec!["redis://:pw-SECRET@s1:26379".into()],
            ..RedisConfig::default()
        };
        assert_eq!(c.paging_target(), "orders");
    }

    #[test]
    fn cluster_is_the_sorted_seeds_whatever_their_order() {
        let c = |nodes: &[&str]| RedisConfig {
            mode: RedisMode::Cluster,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            ..RedisConfig::default()
        };
        let a = c(&["redis://n2:7001", "redis://:pw-SECRET@n1:7000", "redis://n2:7001"]);
        let b = c(&["redis://n1:7000", "redis://n2:7001"]);
        assert_eq!(a.paging_target(), "n1:7000,n2:7001");
        assert_eq!(a.paging_target(), b.paging_target());
    }
}
