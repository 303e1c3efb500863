//! The checks `run` makes before it serves, shared with `redguard check-config`, so that a config the check
//! passes is one `run` starts with (on the same host), and one it refuses is refused by both alike.
//!
//! [`crate::config`] validates the settings themselves; this checks them against the host, without changing
//! anything and without connecting to Redis: the socket path (its length against the platform's limit, that
//! its directory exists, and that nothing but a stale socket is at it), `listen.socket_group` (it must
//! resolve), the Redis settings, built into clients exactly as `run` builds them ([`backend::check`]), and that
//! both listeners' connection limits fit the open-file limit ([`resources::descriptor_problem`]).
//! Every problem is reported at once, like the config validation does.

use std::path::Path;

use crate::api::socket::{self, Found};
use crate::backend;
use crate::config::Config;
use crate::resources;

/// What the checks found when they passed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// `listen.socket_group`, resolved to a gid.
    pub socket_gid: Option<u32>,
    /// Things worth knowing that are not errors for `check-config`, e.g. that a process listens on the
    /// socket path now (`run` refuses to start while it does).
    pub notes: Vec<String>,
}

/// Why `run` would not start with this config on this host; each problem names its `section.key`.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration for this host:\n  {}", .problems.join("\n  "))]
pub struct PreflightError {
    pub problems: Vec<String>,
}

/// Runs every check (see the module doc).
pub fn check(cfg: &Config) -> Result<Checked, PreflightError> {
    let mut problems = Vec::new();
    let mut checked = Checked::default();
    let l = &cfg.listen;
    if socket::path_problems("listen.socket", &l.socket, &mut problems) == Some(Found::LiveSocket) {
        checked.notes.push(live_socket_note("listen.socket", &l.socket));
    }
    if let Some(resp) = &l.resp_socket {
        if socket::path_problems("listen.resp_socket", resp, &mut problems) == Some(Found::LiveSocket) {
            checked.notes.push(live_socket_note("listen.resp_socket", resp));
        }
    }
    if let Some(group) = l.socket_group.as_deref() {
        checked.socket_gid = socket::resolve_group(group);
        if checked.socket_gid.is_none() {
            problems.push(format!(
                "listen.socket_group: no group {group:?} (give a numeric gid or a name from /etc/group)"
            ));
        }
    }
    problems.extend(backend::check(&cfg.redis));
    problems.extend(resources::descriptor_problem(cfg));
    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(PreflightError { problems })
    }
}

fn live_socket_note(key: &str, path: &Path) -> String {
    format!(
        "{key} {}: a process is listening there now; `redguard run` refuses to start until it stops",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid config with its socket in `dir`.
    fn config(dir: &Path, yaml: &str) -> Config {
        let mut cfg = Config::from_yaml(yaml, "test").unwrap();
        cfg.listen.socket = dir.join("rg.sock");
        cfg
    }

    fn problems(cfg: &Config) -> Vec<String> {
        check(cfg).map(|c| panic!("passed: {c:?}")).unwrap_err().problems
    }

    #[test]
    fn a_usable_config_passes_and_resolves_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let checked = check(&config(dir.path(), "listen:\n  socket_group: \"4321\"\n")).unwrap();
        assert_eq!(
            checked,
            Checked {
                socket_gid: Some(4321),
                notes: vec![]
            }
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), "redis:\n  url: redis://:pw-SECRET@127.0.0.1:99999\n");
        cfg.listen.socket = dir.path().join("s".repeat(200));
        cfg.listen.socket_group = Some("no-such-group-redguard".into());
        let p = problems(&cfg);
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(p[0].contains("listen.socket") && p[0].contains("at most"), "{p:#?}");
        assert!(
            p[1].contains("listen.socket_group") && p[1].contains("no-such-group-redguard"),
            "{p:#?}"
        );
        assert!(p[2].starts_with("redis.url") && p[2].contains("99999"), "{p:#?}");
        assert!(!p[2].contains("pw-SECRET"), "the password is masked: {p:#?}");
    }

    #[test]
    fn each_bad_node_or_sentinel_url_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = config(
            dir.path(),
            "redis:\n  mode: cluster\n  nodes: [\"redis://127.0.0.1:7000\", \"redis://127.0.0.1:70001\", \"redis://h:x\"]\n",
        );
        let p = problems(&cluster);
        assert!(p.len() == 2 && p.iter().all(|l| l.starts_with("redis.nodes")), "{p:#?}");
        let sentinel = config(
            dir.path(),
            "redis:\n  mode: sentinel\n  master_name: m\n  sentinels: [\"redis://127.0.0.1:99999\"]\n",
        );
        let p = problems(&sentinel);
        assert!(p.len() == 1 && p[0].starts_with("redis.sentinels"), "{p:#?}");
    }

    #[test]
    fn a_missing_tls_file_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            dir.path(),
            "redis:\n  url: rediss://127.0.0.1:1\n  tls:\n    ca_file: /nonexistent/ca.crt\n",
        );
        let p = problems(&cfg);
        assert!(
            p.len() == 1 && p[0].contains("redis.tls.ca_file /nonexistent/ca.crt"),
            "{p:#?}"
        );
    }

    #[test]
    fn a_regular_file_at_the_socket_path_is_a_problem_and_a_live_socket_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "");
        std::fs::write(&cfg.listen.socket, "precious").unwrap();
        let p = problems(&cfg);
        assert!(p.len() == 1 && p[0].contains("a regular file"), "{p:#?}");
        std::fs::remove_file(&cfg.listen.socket).unwrap();
        let _live = std::os::unix::net::UnixListener::bind(&cfg.listen.socket).unwrap();
        let checked = check(&cfg).unwrap();
        assert!(
            checked.notes.len() == 1 && checked.notes[0].contains("refuses to start"),
            "{checked:?}"
        );
    }
}
