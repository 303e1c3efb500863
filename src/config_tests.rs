//! Tests of config parsing, validation and overrides.

use super::*;
use std::io::Write;

fn yaml(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(text, "test.yaml")
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn parse_err(text: &str) -> (Option<usize>, String) {
    match yaml(text) {
        Err(ConfigError::Parse { line, message, .. }) => (line, message),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

fn problems(text: &str) -> Vec<String> {
    match yaml(text) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

#[test]
fn defaults_are_the_documented_values() {
    let c = Config::default();
    assert_eq!(c.listen.socket, PathBuf::from("./redguard.sock"));
    assert_eq!(c.listen.socket_mode, 0o660);
    assert_eq!(c.listen.drain_timeout, Duration::from_secs(10));
    assert_eq!(c.redis.url, "redis://127.0.0.1:6379");
    assert_eq!(c.redis.password_file, None);
    assert_eq!(c.redis.password, None);
    assert_eq!(c.redis.command_timeout, Duration::from_millis(250));
    assert_eq!(c.redis.connect_timeout, Duration::from_secs(1));
    let b = &c.breaker;
    assert_eq!(b.mode, BreakerMode::Enforce);
    assert_eq!(b.failure_threshold, 5);
    assert_eq!(b.failure_rate_threshold, None);
    assert_eq!(b.slow_call_duration, None);
    assert_eq!(b.slow_call_rate_threshold, None);
    assert_eq!(b.window_size, 100);
    assert_eq!(b.minimum_calls, 20);
    assert_eq!(b.recovery_timeout, Duration::from_secs(60));
    assert_eq!(b.recovery_jitter, 0.1);
    assert_eq!(b.recovery_backoff, 2.0);
    assert_eq!(b.recovery_timeout_max, Duration::from_secs(300));
    assert_eq!(b.half_open_max_calls, 1);
    assert_eq!(b.success_threshold, 1);
    assert_eq!(c.cache.max_entries, 1000);
    assert_eq!(c.cache.max_bytes, 16 * 1024 * 1024);
    assert_eq!(c.cache.ttl, Some(Duration::from_secs(300)));
    assert!(!c.cache.clear_on_close);
    assert_eq!(c.api.max_body_bytes, 1024 * 1024);
    assert_eq!(c.api.on_unavailable, OnUnavailable::Error);
    assert_eq!(c.admin.listen, "127.0.0.1:9190".parse().unwrap());
    assert!(!c.admin.ready_requires_redis);

    assert_eq!(Config::from_yaml("", "<defaults>").unwrap(), c);
    assert_eq!(yaml("# only a comment\n\n").unwrap(), c);
    assert_eq!(yaml("redis:\n  # url: commented out\n").unwrap(), c);
    assert_eq!(Config::load(None, Vec::new()).unwrap(), c);
}

const FULL: &str = r#"
listen:
  socket: /run/redguard/rg.sock
  socket_mode: "0600"
  drain_timeout: 30s
redis:
  url: rediss://cache.internal:6380/2
  password_file: /etc/redguard/pw
  command_timeout: 100ms
  connect_timeout: 2s
breaker:
  mode: observe
  failure_threshold: 3
  failure_rate_threshold: 50
  slow_call_duration: 80ms
  slow_call_rate_threshold: 75.5
  window_size: 50
  minimum_calls: 10
  recovery_timeout: 30s
  recovery_jitter: 0.25
  recovery_backoff: 1.5
  recovery_timeout_max: 10m
  half_open_max_calls: 3
  success_threshold: 2
cache:
  max_entries: 5000
  max_bytes: 64MiB
  ttl: 1h
  clear_on_close: true
api:
  max_body_bytes: 512KiB
  on_unavailable: default
admin:
  listen: 0.0.0.0:9999
  ready_requires_redis: true
"#;

#[test]
fn full_example_sets_every_key() {
    let c = yaml(FULL).unwrap();
    assert_eq!(c.listen.socket, PathBuf::from("/run/redguard/rg.sock"));
    assert_eq!(c.listen.socket_mode, 0o600);
    assert_eq!(c.listen.drain_timeout, Duration::from_secs(30));
    assert_eq!(c.redis.url, "rediss://cache.internal:6380/2");
    assert_eq!(c.redis.password_file, Some(PathBuf::from("/etc/redguard/pw")));
    assert_eq!(c.redis.password, None);
    assert_eq!(c.redis.command_timeout, Duration::from_millis(100));
    assert_eq!(c.redis.connect_timeout, Duration::from_secs(2));
    let b = &c.breaker;
    assert_eq!(b.mode, BreakerMode::Observe);
    assert_eq!(b.failure_threshold, 3);
    assert_eq!(b.failure_rate_threshold, Some(50.0));
    assert_eq!(b.slow_call_duration, Some(Duration::from_millis(80)));
    assert_eq!(b.slow_call_rate_threshold, Some(75.5));
    assert_eq!(b.window_size, 50);
    assert_eq!(b.minimum_calls, 10);
    assert_eq!(b.recovery_timeout, Duration::from_secs(30));
    assert_eq!(b.recovery_jitter, 0.25);
    assert_eq!(b.recovery_backoff, 1.5);
    assert_eq!(b.recovery_timeout_max, Duration::from_secs(600));
    assert_eq!(b.half_open_max_calls, 3);
    assert_eq!(b.success_threshold, 2);
    assert_eq!(c.cache.max_entries, 5000);
    assert_eq!(c.cache.max_bytes, 64 << 20);
    assert_eq!(c.cache.ttl, Some(Duration::from_secs(3600)));
    assert!(c.cache.clear_on_close);
    assert_eq!(c.api.max_body_bytes, 512 << 10);
    assert_eq!(c.api.on_unavailable, OnUnavailable::Default);
    assert_eq!(c.admin.listen, "0.0.0.0:9999".parse().unwrap());
    assert!(c.admin.ready_requires_redis);
}

#[test]
fn durations_parse_each_unit_and_reject_bad_ones() {
    for (text, want) in [
        ("250ms", Duration::from_millis(250)),
        ("60s", Duration::from_secs(60)),
        ("5m", Duration::from_secs(300)),
        ("1h", Duration::from_secs(3600)),
        ("1m 30s", Duration::from_secs(90)),
    ] {
        let c = yaml(&format!("listen:\n  drain_timeout: {text}\n")).unwrap();
        assert_eq!(c.listen.drain_timeout, want, "{text}");
    }
    let (line, msg) = parse_err("redis:\n  url: redis://h\n  command_timeout: 5 parsecs\n");
    assert_eq!(line, Some(3));
    assert!(
        msg.starts_with("redis.command_timeout: invalid duration \"5 parsecs\""),
        "{msg}"
    );
    let (line, msg) = parse_err("listen:\n  drain_timeout: 10\n");
    assert_eq!(line, Some(2));
    assert!(msg.contains("got the bare number 10"), "{msg}");
    assert!(parse_err("listen:\n  drain_timeout: -1s\n")
        .1
        .contains("invalid duration"));

    assert_eq!(yaml("cache:\n  ttl: 0\n").unwrap().cache.ttl, None);
    assert_eq!(yaml("cache:\n  ttl: \"0\"\n").unwrap().cache.ttl, None);
    assert_eq!(yaml("cache:\n  ttl: 0s\n").unwrap().cache.ttl, None);
    assert_eq!(
        yaml("cache:\n  ttl: 90s\n").unwrap().cache.ttl,
        Some(Duration::from_secs(90))
    );
    assert_eq!(parse_err("cache:\n  ttl: 30\n").0, Some(2));
}

#[test]
fn sizes_parse_each_unit_and_reject_bad_ones() {
    for (text, want) in [
        ("0", 0),
        ("\"0\"", 0),
        ("4096", 4096),
        ("10B", 10),
        ("100KB", 100_000),
        ("3MB", 3_000_000),
        ("2GB", 2_000_000_000),
        ("512KiB", 512 * 1024),
        ("16MiB", 16 * 1024 * 1024),
        ("1GiB", 1 << 30),
        ("8 MiB", 8 << 20),
    ] {
        let c = yaml(&format!("cache:\n  max_bytes: {text}\n")).unwrap();
        assert_eq!(c.cache.max_bytes, want, "{text}");
    }
    for bad in ["-1MiB", "-1", "16XB", "1.5MiB", "MiB", "99999999999GiB"] {
        let (line, msg) = parse_err(&format!("\ncache:\n  max_bytes: {bad}\n"));
        assert_eq!(line, Some(3), "{bad}");
        assert!(msg.starts_with("cache.max_bytes: "), "{bad}: {msg}");
    }
    assert_eq!(
        yaml("api:\n  max_body_bytes: 2MB\n").unwrap().api.max_body_bytes,
        2_000_000
    );
}

#[test]
fn socket_mode_is_an_octal_string() {
    assert_eq!(
        yaml("listen:\n  socket_mode: 0644\n").unwrap().listen.socket_mode,
        0o644
    );
    assert_eq!(
        yaml("listen:\n  socket_mode: '600'\n").unwrap().listen.socket_mode,
        0o600
    );
    assert!(parse_err("listen:\n  socket_mode: \"0689\"\n")
        .1
        .contains("invalid octal mode"));
    assert!(parse_err("listen:\n  socket_mode: 660\n").1.contains("quote it"));
    assert_eq!(
        problems("listen:\n  socket_mode: \"1777\"\n"),
        ["listen.socket_mode must be at most 0777, got 1777"]
    );
}

#[test]
fn unknown_keys_are_rejected_with_key_and_line() {
    let err = yaml("listen:\n  socket: a.sock\nbreakers:\n  mode: observe\n").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("test.yaml:3:1: unknown field `breakers`, expected one of"),
        "{text}"
    );
    assert!(!text.contains("at line"), "{text}");

    let (line, msg) = parse_err("# comment\nlisten:\n  socket: a.sock\n  sockett: b.sock\n");
    assert_eq!(line, Some(4));
    assert!(
        msg.starts_with("listen: unknown field `sockett`, expected one of"),
        "{msg}"
    );
}

#[test]
fn wrong_type_reports_the_line() {
    let err = yaml("breaker:\n  mode: enforce\n  failure_threshold: lots\n").unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Parse {
                line: Some(3),
                column: Some(22),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "test.yaml:3:22: breaker.failure_threshold: invalid type: string \"lots\", expected u32"
    );
    let (line, msg) = parse_err("api:\n  on_unavailable: maybe\n");
    assert_eq!(line, Some(2));
    assert!(msg.contains("unknown variant `maybe`"), "{msg}");
}

#[test]
fn validation_reports_every_problem() {
    let text = "redis:\n  url: http://user:hunter2@h\n  command_timeout: 0s\nbreaker:\n  failure_threshold: 0\n  failure_rate_threshold: 150\n  slow_call_rate_threshold: 20\n  window_size: 10\n  recovery_jitter: 1.5\n  recovery_backoff: 0.5\n  recovery_timeout: 2m\n  recovery_timeout_max: 1m\napi:\n  max_body_bytes: 0\n";
    let all = problems(text);
    assert_eq!(
        all,
        [
            "redis.url must start with redis:// or rediss://, got \"http://user:***@h\"",
            "redis.command_timeout must be greater than 0",
            "breaker.failure_threshold must be at least 1",
            "api.max_body_bytes must be at least 1",
            "breaker.failure_rate_threshold must be in (0, 100], got 150",
            "breaker.slow_call_rate_threshold is set but breaker.slow_call_duration is not",
            "breaker.minimum_calls must be in 1..=10 (breaker.window_size), got 20",
            "breaker.recovery_jitter must be in [0, 1), got 1.5",
            "breaker.recovery_backoff must be at least 1.0, got 0.5",
            "breaker.recovery_timeout_max (1m) must be at least breaker.recovery_timeout (2m)",
        ]
    );
    let shown = yaml(text).unwrap_err().to_string();
    assert!(
        shown.starts_with("invalid configuration in test.yaml:\n  redis.url"),
        "{shown}"
    );
    assert_eq!(shown.lines().count(), 11);
    assert_eq!(
        problems("breaker:\n  slow_call_duration: 1s\n"),
        ["breaker.slow_call_duration is set but breaker.slow_call_rate_threshold is not"]
    );
}

#[test]
fn env_overrides_win_over_the_file() {
    let f = file("redis:\n  url: redis://file:6379\nbreaker:\n  failure_threshold: 3\n");
    let vars = env(&[
        ("REDGUARD_REDIS_URL", "redis://env:6379"),
        ("REDGUARD_BREAKER_FAILURE_THRESHOLD", "7"),
        ("REDGUARD_CACHE_MAX_BYTES", "2MiB"),
        ("REDGUARD_CACHE_TTL", "0"),
        ("REDGUARD_ADMIN_READY_REQUIRES_REDIS", "true"),
        ("REDGUARD_LISTEN_SOCKET_MODE", "0600"),
        ("PATH", "/usr/bin"),
    ]);
    let c = Config::load(Some(f.path()), vars).unwrap();
    assert_eq!(c.redis.url, "redis://env:6379");
    assert_eq!(c.breaker.failure_threshold, 7);
    assert_eq!(c.cache.max_bytes, 2 << 20);
    assert_eq!(c.cache.ttl, None);
    assert!(c.admin.ready_requires_redis);
    assert_eq!(c.listen.socket_mode, 0o600);
    assert_eq!(c.redis.command_timeout, Duration::from_millis(250));
}

#[test]
fn env_errors_name_the_variable() {
    let vars = env(&[("REDGUARD_BREAKER_FAILURE_THRESHOLD", "many")]);
    let err = Config::load(None, vars).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Env { var, .. } if var == "REDGUARD_BREAKER_FAILURE_THRESHOLD"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "environment variable REDGUARD_BREAKER_FAILURE_THRESHOLD: invalid type: string \"many\", expected u32"
    );
    // A value that parses but breaks a rule is reported by key like any other.
    let err = Config::load(None, env(&[("REDGUARD_BREAKER_RECOVERY_JITTER", "2")])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration in <defaults>:\n  breaker.recovery_jitter must be in [0, 1), got 2"
    );
}

#[test]
fn unknown_redguard_env_vars_are_ignored() {
    let vars = env(&[
        ("REDGUARD_LOG", "debug"),
        ("REDGUARD_BREAKER_NOPE", "1"),
        ("REDGUARD_REDIS", "x"),
    ]);
    assert_eq!(Config::load(None, vars).unwrap(), Config::default());
}

#[test]
fn file_errors_keep_line_numbers_when_env_overrides_exist() {
    let f = file("listen:\n  socket: a\n  bogus: 1\n");
    let vars = env(&[("REDGUARD_REDIS_URL", "redis://env")]);
    let err = Config::load(Some(f.path()), vars).unwrap_err();
    let want = format!("{}:3:3: listen: unknown field `bogus`", f.path().display());
    assert!(err.to_string().starts_with(&want), "{err}");

    let missing = Path::new("/nonexistent/redguard.yaml");
    let err = Config::load(Some(missing), Vec::new()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot read config file /nonexistent/redguard.yaml: "),
        "{err}"
    );
}

#[test]
fn password_comes_from_file_and_env_wins() {
    let pw = file("s3cret\n");
    let cfg = file(&format!("redis:\n  password_file: {}\n", pw.path().display()));
    let c = Config::load(Some(cfg.path()), Vec::new()).unwrap();
    assert_eq!(c.redis.password.as_ref().map(Secret::expose), Some("s3cret"));

    let vars = env(&[("REDGUARD_REDIS_PASSWORD", "from-env")]);
    let c = Config::load(Some(cfg.path()), vars).unwrap();
    assert_eq!(c.redis.password.as_ref().map(Secret::expose), Some("from-env"));

    let vars = env(&[("REDGUARD_REDIS_PASSWORD_FILE", "/nonexistent/pw")]);
    let err = Config::load(None, vars).unwrap_err();
    assert!(matches!(&err, ConfigError::PasswordFile { path, .. } if path == Path::new("/nonexistent/pw")));
    assert_eq!(Config::load(None, Vec::new()).unwrap().redis.password, None);
}

#[test]
fn display_url_masks_the_password() {
    let shown = |url: &str| {
        RedisConfig {
            url: url.to_owned(),
            ..RedisConfig::default()
        }
        .display_url()
    };
    assert_eq!(shown("redis://user:pa@ss@host:6379/0"), "redis://user:***@host:6379/0");
    assert_eq!(shown("rediss://:secret@host:6380"), "rediss://:***@host:6380");
    assert_eq!(shown("redis://secret@host"), "redis://***@host");
    assert_eq!(shown("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
    assert_eq!(shown("redis://host/0?user=a@b"), "redis://host/0?user=a@b");
}

#[test]
fn secret_never_prints_its_value() {
    let s = Secret::new("hunter2");
    assert_eq!(format!("{s:?}"), "***");
    assert_eq!(s.to_string(), "***");
    assert_eq!(s.expose(), "hunter2");
    let mut c = Config::default();
    c.redis.password = Some(s);
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn known_keys_match_the_structs() {
    for (section, keys) in KNOWN_KEYS {
        let (_, msg) = parse_err(&format!("{section}:\n  zz_unknown: 1\n"));
        // serde lists two fields as "`a` or `b`" and more as "one of `a`, `b`, `c`".
        let expected = msg.split_once("expected ").unwrap().1;
        let want: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
        let want = match want.as_slice() {
            [a, b] => format!("{a} or {b}"),
            all => format!("one of {}", all.join(", ")),
        };
        assert_eq!(expected, want, "{section}");
    }
    let (_, msg) = parse_err("zz_unknown: 1\n");
    let sections: Vec<String> = KNOWN_KEYS.iter().map(|(s, _)| format!("`{s}`")).collect();
    assert!(msg.ends_with(&sections.join(", ")), "{msg}");
    assert_eq!(
        known_key("REDGUARD_REDIS_PASSWORD_FILE"),
        Some(("redis", "password_file"))
    );
    assert_eq!(known_key("REDGUARD_REDIS_PASSWORD"), None);
}

#[test]
fn redis_mode_defaults_to_standalone_with_no_topology() {
    let r = Config::default().redis;
    assert_eq!(r.mode, RedisMode::Standalone);
    assert!(r.nodes.is_empty() && r.sentinels.is_empty());
    assert_eq!((r.master_name, r.username), (None, None));
    assert_eq!(r.tls, TlsConfig::default());
    assert_eq!(r.node_metrics_limit, 16);
    assert_eq!(RedisMode::Cluster.as_str(), "cluster");
}

#[test]
fn cluster_sentinel_tls_and_acl_settings_parse() {
    let c = yaml(
        "redis:\n  mode: cluster\n  nodes:\n    - rediss://10.0.0.1:6379\n    - rediss://10.0.0.2:6379\n  username: app\n  tls:\n    ca_file: /etc/redguard/ca.pem\n    cert_file: /etc/redguard/client.pem\n    key_file: /etc/redguard/client.key\n  node_metrics_limit: 4\n",
    )
    .unwrap();
    let r = &c.redis;
    assert_eq!(r.mode, RedisMode::Cluster);
    assert_eq!(r.nodes, ["rediss://10.0.0.1:6379", "rediss://10.0.0.2:6379"]);
    assert_eq!(r.username.as_deref(), Some("app"));
    assert_eq!(r.tls.ca_file, Some(PathBuf::from("/etc/redguard/ca.pem")));
    assert_eq!(r.tls.key_file, Some(PathBuf::from("/etc/redguard/client.key")));
    assert_eq!(r.node_metrics_limit, 4);
    assert!(r.uses_tls());
    assert_eq!(
        r.display_target(),
        "cluster rediss://10.0.0.1:6379,rediss://10.0.0.2:6379"
    );

    let c =
        yaml("redis:\n  mode: sentinel\n  master_name: mymaster\n  sentinels: redis://s1:26379, redis://s2:26379\n")
            .unwrap();
    assert_eq!(c.redis.sentinels, ["redis://s1:26379", "redis://s2:26379"]);
    assert_eq!(
        c.redis.display_target(),
        "sentinel mymaster via redis://s1:26379,redis://s2:26379"
    );
    assert!(!c.redis.uses_tls());
}

#[test]
fn mode_specific_keys_are_checked() {
    assert_eq!(
        problems("redis:\n  mode: cluster\n"),
        ["redis.nodes must list at least one seed node when redis.mode is cluster"]
    );
    assert_eq!(
        problems("redis:\n  mode: sentinel\n  nodes: [redis://a:1]\n"),
        [
            "redis.master_name must be set when redis.mode is sentinel",
            "redis.sentinels must list at least one sentinel when redis.mode is sentinel",
            "redis.nodes is only used in another redis.mode (this one is sentinel)",
        ]
    );
    assert_eq!(
        problems("redis:\n  mode: cluster\n  nodes: [redis://a:1, rediss://b:2, 'http://u:pw@c:3']\n"),
        [
            "redis.nodes entries must start with redis:// or rediss://, got \"http://u:***@c:3\"",
            "redis.nodes must all use the same scheme (all redis:// or all rediss://)",
        ]
    );
    assert_eq!(
        problems("redis:\n  mode: sentinel\n  master_name: m\n  sentinels: ['redis://:pw@s:26379']\n"),
        ["redis.sentinels must not carry credentials; redis.username and the password are for the master"]
    );
    assert_eq!(
        problems("redis:\n  username: ''\n  node_metrics_limit: 0\n  tls:\n    cert_file: c.pem\n"),
        [
            "redis.username must not be empty",
            "redis.node_metrics_limit must be at least 1",
            "redis.tls.cert_file and redis.tls.key_file must be set together",
            "redis.tls is set but redis.url does not use rediss://",
        ]
    );
    assert_eq!(
        problems("redis:\n  master_name: m\n"),
        ["redis.master_name is only used in another redis.mode (this one is standalone)"]
    );
    let (line, msg) = parse_err("redis:\n  tls:\n    ca: x\n");
    assert_eq!(line, Some(3));
    assert!(msg.contains("unknown field `ca`"), "{msg}");
}

#[test]
fn mode_and_nodes_come_from_the_environment() {
    let vars = env(&[
        ("REDGUARD_REDIS_MODE", "cluster"),
        ("REDGUARD_REDIS_NODES", "redis://a:7000,redis://b:7001"),
        ("REDGUARD_REDIS_USERNAME", "app"),
    ]);
    let c = Config::load(None, vars).unwrap();
    assert_eq!(c.redis.mode, RedisMode::Cluster);
    assert_eq!(c.redis.nodes, ["redis://a:7000", "redis://b:7001"]);
    assert_eq!(c.redis.username.as_deref(), Some("app"));
}
