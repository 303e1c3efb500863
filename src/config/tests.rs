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
    assert_eq!(b.mode, breaker::Mode::Enforce);
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
    assert_eq!(c.admin.max_connections, 32);
    assert_eq!(c.admin.read_timeout, Duration::from_secs(5));
    assert_eq!(c.api.max_inflight_body_bytes, 16 << 20);
    assert_eq!(c.api.max_pipeline_commands, 1000);
    assert_eq!(c.api.commands.deny, policy::default_deny());
    assert!(c.api.commands.deny.iter().any(|d| d == "FLUSHALL"));
    assert!(c.api.commands.deny.iter().any(|d| d == "MULTI"));
    assert_eq!(c.api.commands.allow, None);
    assert_eq!(c.ratelimit.on_unavailable, RateLimitFallback::Local);
    assert_eq!(c.ratelimit.local_max_keys, 10_000);
    assert!(c.reload.watch);
    assert_eq!(c.log.level, "info");

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
  max_pipeline_commands: 50
  max_inflight_body_bytes: 4MiB
  commands:
    deny: [KEYS, "cluster reset"]
    allow: [GET, SET, KEYS]
admin:
  listen: 0.0.0.0:9999
  ready_requires_redis: true
  max_connections: 8
  read_timeout: 2s
ratelimit:
  on_unavailable: deny
  local_max_keys: 500
reload:
  watch: false
log:
  level: debug
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
    assert_eq!(b.mode, breaker::Mode::Observe);
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
    assert_eq!(c.admin.max_connections, 8);
    assert_eq!(c.admin.read_timeout, Duration::from_secs(2));
    assert_eq!(c.api.max_inflight_body_bytes, 4 << 20);
    assert_eq!(c.api.max_pipeline_commands, 50);
    assert_eq!(c.api.commands.deny, ["KEYS", "cluster reset"]);
    assert_eq!(
        c.api.commands.allow,
        Some(vec!["GET".to_owned(), "SET".to_owned(), "KEYS".to_owned()])
    );
    assert_eq!(c.ratelimit.on_unavailable, RateLimitFallback::Deny);
    assert_eq!(c.ratelimit.local_max_keys, 500);
    assert!(!c.reload.watch);
    assert_eq!(c.log.level, "debug");
}

#[test]
fn command_lists_are_checked_entry_by_entry() {
    let all = problems(
        "api:\n  max_pipeline_commands: 0\n  commands:\n    deny: [FLUSHALL, \"A B C\"]\n    allow: [GET, multi, \"client reply\", \"\", BLPOP, \"XREAD BLOCK\", SUBSCRIBE]\nratelimit:\n  local_max_keys: 0\n",
    );
    assert_eq!(all.len(), 6, "{all:#?}");
    assert_eq!(all[0], "api.max_pipeline_commands must be at least 1");
    assert_eq!(all[1], "ratelimit.local_max_keys must be at least 1");
    assert!(
        all[2].starts_with("api.commands.deny[1]: \"A B C\" is not a command name"),
        "{}",
        all[2]
    );
    assert!(
        all[3].starts_with("api.commands.allow[1]: MULTI can never be allowed"),
        "{}",
        all[3]
    );
    assert!(
        all[4].starts_with("api.commands.allow[2]: CLIENT REPLY can never be allowed"),
        "{}",
        all[4]
    );
    assert!(
        all[5].starts_with("api.commands.allow[3]: \"\" is not a command name"),
        "{}",
        all[5]
    );
    // An empty section means the defaults; an empty deny list is the operator's choice.
    assert_eq!(
        yaml("api:\n  commands:\n").unwrap().api.commands,
        CommandsConfig::default()
    );
    assert!(yaml("api:\n  commands:\n    deny: []\n")
        .unwrap()
        .api
        .commands
        .deny
        .is_empty());
    let (line, msg) = parse_err("api:\n  commands:\n    denied: [X]\n");
    assert_eq!(line, Some(3));
    assert!(
        msg.contains("unknown field `denied`, expected `deny` or `allow`"),
        "{msg}"
    );
    let (_, msg) = parse_err("ratelimit:\n  on_unavailable: maybe\n");
    assert!(msg.contains("expected one of `local`, `allow`, `deny`"), "{msg}");
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
fn connection_and_body_limits_are_validated() {
    assert_eq!(
        problems("admin:\n  max_connections: 0\n  read_timeout: 0s\n"),
        [
            "admin.read_timeout must be greater than 0",
            "admin.max_connections must be at least 1",
        ]
    );
    assert_eq!(
        problems("api:\n  max_body_bytes: 2MiB\n  max_inflight_body_bytes: 1MiB\n"),
        ["api.max_inflight_body_bytes (1048576) must be at least api.max_body_bytes (2097152)"]
    );
    assert_eq!(
        problems("api:\n  max_body_bytes: 5GiB\n  max_inflight_body_bytes: 8GiB\n"),
        ["api.max_body_bytes must be at most 4294967295 (4 GiB), got 5368709120"]
    );
    // The environment reaches the new keys too.
    let vars = env(&[
        ("REDGUARD_ADMIN_MAX_CONNECTIONS", "4"),
        ("REDGUARD_ADMIN_READ_TIMEOUT", "750ms"),
        ("REDGUARD_API_MAX_INFLIGHT_BODY_BYTES", "32MiB"),
    ]);
    let c = Config::load(None, vars).unwrap();
    assert_eq!(c.admin.max_connections, 4);
    assert_eq!(c.admin.read_timeout, Duration::from_millis(750));
    assert_eq!(c.api.max_inflight_body_bytes, 32 << 20);
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
fn a_misspelt_key_of_a_section_is_an_error_naming_the_variable() {
    let err = Config::load(None, env(&[("REDGUARD_BREAKER_FAILURE_TRESHOLD", "3")])).unwrap_err();
    let ConfigError::Env { var, message } = &err else {
        panic!("expected an env error, got {err}");
    };
    assert_eq!(var, "REDGUARD_BREAKER_FAILURE_TRESHOLD");
    assert!(
        message.starts_with("names no key of the `breaker` section; its variables are REDGUARD_BREAKER_MODE, "),
        "{message}"
    );
    assert!(message.contains("REDGUARD_BREAKER_FAILURE_THRESHOLD"), "{message}");
    // A key nested under a file-only one says so.
    for (var, says) in [
        (
            "REDGUARD_REDIS_TLS_CA_FILE",
            "redis.tls.* can only be set in the config file",
        ),
        (
            "REDGUARD_API_COMMANDS_DENY",
            "api.commands.* can only be set in the config file",
        ),
    ] {
        let err = Config::load(None, env(&[(var, "x")])).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Env { var: v, message } if v == var && message == says),
            "{err}"
        );
    }
}

#[test]
fn other_redguard_names_and_the_sinks_own_variables_are_left_alone() {
    // Not `REDGUARD_<SECTION>_<KEY>`: a tool's variable, the app container's socket path, a bare section name.
    let vars = env(&[
        ("REDGUARD_BIN", "target/release/redguard"),
        ("REDGUARD_SOCKET", "/var/run/redguard/redguard.sock"),
        ("REDGUARD_LOG", "debug"),
        ("REDGUARD_REDIS", "x"),
    ]);
    assert_eq!(Config::load(None, vars).unwrap(), Config::default());
    // A sink may keep its secret in a variable that looks like a key of a section.
    let f = file("notify:\n  sinks:\n    - {type: slack, url_env: REDGUARD_NOTIFY_SLACK_URL}\n");
    let vars = env(&[("REDGUARD_NOTIFY_SLACK_URL", "https://hooks.slack.test/x")]);
    let c = Config::load(Some(f.path()), vars).unwrap();
    assert_eq!(
        c.notify.sinks[0].url.as_ref().unwrap().expose(),
        "https://hooks.slack.test/x"
    );
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
    assert!(
        err.to_string()
            .starts_with("cannot read redis.password_file /nonexistent/pw: "),
        "{err}"
    );
    assert_eq!(Config::load(None, Vec::new()).unwrap().redis.password, None);
}

const SENTINEL: &str = "redis:\n  mode: sentinel\n  master_name: m\n  sentinels: [redis://s1:26379]\n";

#[test]
fn the_sentinel_password_comes_from_its_file_and_its_env_wins() {
    let pw = file("sentinel-s3cret\n");
    let cfg = file(&format!(
        "{SENTINEL}  sentinel_username: watcher\n  sentinel_password_file: {}\n",
        pw.path().display()
    ));
    let c = Config::load(Some(cfg.path()), Vec::new()).unwrap();
    let r = &c.redis;
    assert_eq!(r.sentinel_username.as_deref(), Some("watcher"));
    assert_eq!(
        r.sentinel_password.as_ref().map(Secret::expose),
        Some("sentinel-s3cret")
    );
    assert_eq!(
        (&r.username, &r.password),
        (&None, &None),
        "the master's credentials are separate"
    );
    assert!(!format!("{c:?}").contains("sentinel-s3cret"), "the secret never prints");

    let vars = env(&[
        ("REDGUARD_REDIS_SENTINEL_PASSWORD", "from-env"),
        ("REDGUARD_REDIS_PASSWORD", "master-pw"),
    ]);
    let c = Config::load(Some(cfg.path()), vars).unwrap();
    assert_eq!(c.redis.sentinel_password.as_ref().map(Secret::expose), Some("from-env"));
    assert_eq!(c.redis.password.as_ref().map(Secret::expose), Some("master-pw"));

    let only_env = file(SENTINEL);
    let vars = env(&[
        ("REDGUARD_REDIS_SENTINEL_PASSWORD", "from-env"),
        ("REDGUARD_REDIS_SENTINEL_USERNAME", "watcher"),
    ]);
    let c = Config::load(Some(only_env.path()), vars).unwrap();
    assert_eq!(c.redis.sentinel_password.as_ref().map(Secret::expose), Some("from-env"));
    assert_eq!(c.redis.sentinel_username.as_deref(), Some("watcher"));

    let vars = env(&[("REDGUARD_REDIS_SENTINEL_PASSWORD_FILE", "/nonexistent/sentinel-pw")]);
    let err = Config::load(Some(only_env.path()), vars).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot read redis.sentinel_password_file /nonexistent/sentinel-pw: "),
        "{err}"
    );
    let empty = file("\n");
    let vars = env(&[("REDGUARD_REDIS_SENTINEL_PASSWORD_FILE", empty.path().to_str().unwrap())]);
    let err = Config::load(Some(only_env.path()), vars).unwrap_err();
    assert!(err.to_string().contains("file is empty"), "{err}");
}

#[test]
fn sentinel_credentials_outside_sentinel_mode_are_refused() {
    assert_eq!(
        problems("redis:\n  sentinel_username: watcher\n  sentinel_password_file: /etc/pw\n"),
        [
            "redis.sentinel_username is only used when redis.mode is sentinel (this one is standalone)",
            "redis.sentinel_password_file is only used when redis.mode is sentinel (this one is standalone)",
        ]
    );
    assert_eq!(
        problems("redis:\n  mode: cluster\n  nodes: [redis://a:1]\n  sentinel_username: watcher\n"),
        ["redis.sentinel_username is only used when redis.mode is sentinel (this one is cluster)"]
    );
    // The variable is reported with every other problem, before any file is read.
    let vars = env(&[
        ("REDGUARD_REDIS_SENTINEL_PASSWORD", "s3cret-in-env"),
        ("REDGUARD_REDIS_SENTINEL_PASSWORD_FILE", "/nonexistent/pw"),
    ]);
    let err = Config::load(None, vars).unwrap_err();
    let ConfigError::Invalid { problems: found, .. } = &err else {
        panic!("expected validation problems, got {err:?}")
    };
    assert_eq!(
        found,
        &[
            "redis.sentinel_password_file is only used when redis.mode is sentinel (this one is standalone)",
            "REDGUARD_REDIS_SENTINEL_PASSWORD is only used when redis.mode is sentinel (this one is standalone)",
        ]
    );
    assert!(!err.to_string().contains("s3cret-in-env"), "{err}");
    assert_eq!(
        problems(&format!("{SENTINEL}  sentinel_username: ''\n")),
        ["redis.sentinel_username must not be empty"]
    );
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
        // serde lists one field as "`a`", two as "`a` or `b`" and more as "one of `a`, `b`, `c`".
        let expected = msg.split_once("expected ").unwrap().1;
        let file_only = FILE_ONLY_KEYS
            .iter()
            .filter(|(s, _)| s == section)
            .flat_map(|(_, k)| k.iter());
        let want: Vec<String> = keys.iter().chain(file_only).map(|k| format!("`{k}`")).collect();
        let want = match want.as_slice() {
            [a] => a.clone(),
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
    assert_eq!(
        known_key("REDGUARD_REDIS_SENTINEL_USERNAME"),
        Some(("redis", "sentinel_username"))
    );
    assert_eq!(
        known_key("REDGUARD_REDIS_SENTINEL_PASSWORD_FILE"),
        Some(("redis", "sentinel_password_file"))
    );
    assert_eq!(
        known_key("REDGUARD_REDIS_SENTINEL_PASSWORD"),
        None,
        "a secret, not a YAML key"
    );
    assert_eq!(known_key("REDGUARD_API_COMMANDS"), None, "lists are file-only");
    assert_eq!(
        known_key("REDGUARD_RATELIMIT_ON_UNAVAILABLE"),
        Some(("ratelimit", "on_unavailable"))
    );
}

// ---- notify ----

fn sink(c: &Config, i: usize) -> &SinkConfig {
    &c.notify.sinks[i]
}

#[test]
fn notify_defaults_are_the_documented_values() {
    let n = Config::default().notify;
    assert_eq!(n.instance, None);
    assert_eq!(n.on, [NotifyOn::ToOpen, NotifyOn::ToHalfOpen, NotifyOn::ToClosed]);
    assert_eq!(n.min_interval, Duration::from_secs(30));
    assert_eq!(n.queue_size, 1000);
    assert_eq!(n.timeout, Duration::from_secs(5));
    assert_eq!(n.max_attempts, 5);
    assert_eq!(n.shutdown_grace, Duration::from_secs(5));
    assert!(n.sinks.is_empty());
    let pd = yaml("notify:\n  sinks:\n    - type: pagerduty\n      routing_key: k\n").unwrap();
    let pd = sink(&pd, 0);
    assert_eq!(pd.kind, SinkKind::PagerDuty);
    assert_eq!(
        pd.url.as_ref().map(Secret::expose),
        Some("https://events.pagerduty.com/v2/enqueue")
    );
    assert_eq!(pd.severity, Some(Severity::Critical));
}

const NOTIFY_FULL: &str = r#"
notify:
  instance: prod/api-0
  on: [to_open, to_closed]
  min_interval: 1m
  queue_size: 50
  timeout: 2s
  max_attempts: 3
  shutdown_grace: 10s
  sinks:
    - type: slack
      url: https://hooks.slack.com/services/T1/B1/abc
    - type: pagerduty
      name: pd-primary
      routing_key: R0UT1NG
      url: https://events.eu.pagerduty.com/v2/enqueue
      severity: warning
    - type: webhook
      url: https://hooks.example.com/redguard
      headers:
        Authorization: Bearer t0ken
      secret: hmac-key
    - type: slack
      url: https://hooks.slack.com/services/T2/B2/def
"#;

#[test]
fn notify_full_example_sets_every_key() {
    let c = yaml(NOTIFY_FULL).unwrap();
    let n = &c.notify;
    assert_eq!(n.instance.as_deref(), Some("prod/api-0"));
    assert_eq!(n.on, [NotifyOn::ToOpen, NotifyOn::ToClosed]);
    assert_eq!(n.min_interval, Duration::from_secs(60));
    assert_eq!(n.queue_size, 50);
    assert_eq!(n.timeout, Duration::from_secs(2));
    assert_eq!(n.max_attempts, 3);
    assert_eq!(n.shutdown_grace, Duration::from_secs(10));
    let names: Vec<&str> = n.sinks.iter().map(SinkConfig::name).collect();
    assert_eq!(names, ["slack", "pd-primary", "webhook", "slack-2"]);
    let s = sink(&c, 0);
    assert_eq!(
        s.url.as_ref().map(Secret::expose),
        Some("https://hooks.slack.com/services/T1/B1/abc")
    );
    let pd = sink(&c, 1);
    assert_eq!(pd.routing_key.as_ref().map(Secret::expose), Some("R0UT1NG"));
    assert_eq!(
        pd.url.as_ref().map(Secret::expose),
        Some("https://events.eu.pagerduty.com/v2/enqueue")
    );
    assert_eq!(pd.severity, Some(Severity::Warning));
    let kinds: Vec<SinkKind> = n.sinks.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [SinkKind::Slack, SinkKind::PagerDuty, SinkKind::Webhook, SinkKind::Slack]
    );
    let w = sink(&c, 2);
    assert_eq!(w.headers["Authorization"].expose(), "Bearer t0ken");
    assert_eq!(w.secret.as_ref().map(Secret::expose), Some("hmac-key"));
    // Secrets stay out of Debug output (and so out of any log line that prints the config).
    let shown = format!("{c:?}");
    for secret in ["abc", "R0UT1NG", "t0ken", "hmac-key", "hooks.slack.com"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

#[test]
fn repeated_sink_types_get_numbered_names_that_avoid_explicit_ones() {
    let text = "notify:\n  sinks:\n    - {type: webhook, url: 'http://a', name: webhook-2}\n    - {type: webhook, url: 'http://b'}\n    - {type: webhook, url: 'http://c'}\n";
    let c = yaml(text).unwrap();
    let names: Vec<&str> = c.notify.sinks.iter().map(SinkConfig::name).collect();
    assert_eq!(names, ["webhook-2", "webhook", "webhook-3"]);
}

#[test]
fn notify_validation_reports_every_problem_by_key() {
    let text = r#"
notify:
  instance: ""
  on: []
  queue_size: 0
  timeout: 0s
  max_attempts: 0
  sinks:
    - type: slack
    - type: slack
      url: https://hooks.slack.com/x
      url_env: SLACK_URL
    - type: pagerduty
      routing_key_file: /nonexistent/pd-key
      url: ftp://events.example.com
    - type: webhook
      name: "has space"
      url: "not a url"
      secret_env: NOPE_NOT_SET
      headers:
        Content-Type: text/plain
        "bad header": x
    - type: webhook
      name: slack
      url: http://hook-secret-in-url.example/abc
"#;
    let all = problems(text);
    assert_eq!(
        all,
        [
            "notify.instance must not be empty",
            "notify.on must list at least one of to_open, to_half_open, to_closed",
            "notify.queue_size must be at least 1",
            "notify.max_attempts must be at least 1",
            "notify.timeout must be greater than 0",
            "notify.sinks[3].name must be 1 to 64 characters from A-Z a-z 0-9 _ - ., got \"has space\"",
            "notify.sinks[0]: one of url, url_file or url_env is required",
            "notify.sinks[1]: set only one of url, url_file or url_env",
            "notify.sinks[2].routing_key_file: cannot read /nonexistent/pd-key: No such file or directory (os error 2)",
            "notify.sinks[2].url must be an http:// or https:// URL with a host",
            "notify.sinks[3].url is not a valid URL (relative URL without a base)",
            "notify.sinks[3].secret_env: environment variable NOPE_NOT_SET is not set or empty",
            "notify.sinks[3].headers.Content-Type is set by redguard and cannot be overridden",
            "notify.sinks[3].headers: \"bad header\" is not a valid header name",
        ]
    );
    // An explicit name may take a type's default name; the unnamed slack sinks then move on.
    let c = yaml("notify:\n  sinks:\n    - {type: webhook, name: slack, url: 'http://h'}\n    - {type: slack, url: 'https://h'}\n").unwrap();
    assert_eq!(c.notify.sinks[1].name(), "slack-2");
    assert_eq!(
        problems("notify:\n  sinks:\n    - {type: slack, name: a, url: 'https://h'}\n    - {type: slack, name: a, url: 'https://h'}\n"),
        ["notify.sinks[1].name \"a\" is used by another sink"]
    );
}

#[test]
fn sink_secrets_come_from_files_and_env_and_never_show_in_errors() {
    let key = file("pd-from-file\n");
    let text = format!(
        "notify:\n  sinks:\n    - type: slack\n      url_env: SLACK_HOOK\n    - type: pagerduty\n      routing_key_file: {}\n    - type: webhook\n      url: http://127.0.0.1:1/hook\n      secret_env: HOOK_SECRET\n",
        key.path().display()
    );
    let cfg = file(&text);
    let vars = env(&[
        ("SLACK_HOOK", "https://hooks.slack.com/services/T/B/from-env\n"),
        ("HOOK_SECRET", "s3cr3t"),
    ]);
    let c = Config::load(Some(cfg.path()), vars).unwrap();
    let s = sink(&c, 0);
    assert_eq!(
        s.url.as_ref().map(Secret::expose),
        Some("https://hooks.slack.com/services/T/B/from-env")
    );
    let pd = sink(&c, 1);
    assert_eq!(pd.routing_key.as_ref().map(Secret::expose), Some("pd-from-file"));
    let w = sink(&c, 2);
    assert_eq!(w.secret.as_ref().map(Secret::expose), Some("s3cr3t"));

    // A bad URL taken from the environment is reported by key, without its value.
    let vars = env(&[("SLACK_HOOK", "mailto:T0PSECRET@example.com"), ("HOOK_SECRET", "x")]);
    let err = Config::load(Some(cfg.path()), vars).unwrap_err().to_string();
    assert!(
        err.contains("notify.sinks[0].url must be an http:// or https:// URL"),
        "{err}"
    );
    assert!(!err.contains("T0PSECRET"), "{err}");
    let empty = file("\n");
    let text = format!(
        "notify:\n  sinks:\n    - type: pagerduty\n      routing_key_file: {}\n",
        empty.path().display()
    );
    let err = yaml(&text).unwrap_err().to_string();
    assert!(
        err.ends_with(&format!(
            "notify.sinks[0].routing_key_file: cannot read {}: file is empty",
            empty.path().display()
        )),
        "{err}"
    );
}

#[test]
fn notify_parse_errors_name_the_sink_key() {
    let two =
        "notify:\n  sinks:\n    - type: slack\n      url: https://h\n    - type: pagerduty\n      routing_key: k\n";
    let (line, msg) = parse_err(&format!("{two}      colour: red\n"));
    assert_eq!(line, Some(7));
    assert!(msg.starts_with("notify.sinks[1]: unknown field `colour`"), "{msg}");
    let (line, msg) = parse_err(&format!("{two}      severity: meh\n"));
    assert_eq!(line, Some(7));
    assert!(
        msg.starts_with("notify.sinks[1].severity: unknown variant `meh`"),
        "{msg}"
    );
    let (line, msg) = parse_err("notify:\n  sinks:\n    - type: teams\n      url: https://h\n");
    assert_eq!(line, Some(3));
    assert!(msg.contains("unknown variant `teams`"), "{msg}");
    // A key of another sink type parses, and validation names it.
    assert_eq!(
        problems("notify:\n  sinks:\n    - {type: slack, url: 'https://h', severity: info, secret: x}\n"),
        [
            "notify.sinks[0].severity is not a setting of type slack",
            "notify.sinks[0].secret is not a setting of type slack"
        ]
    );
    let (line, msg) = parse_err("notify:\n  on: [to_open, to_nowhere]\n");
    assert_eq!(line, Some(2));
    assert!(msg.contains("unknown variant `to_nowhere`"), "{msg}");
    let (_, msg) = parse_err("notify:\n  min_interval: 30\n");
    assert!(msg.contains("got the bare number 30"), "{msg}");
}

#[test]
fn notify_env_overrides_cover_the_scalar_keys() {
    let vars = env(&[
        ("REDGUARD_NOTIFY_INSTANCE", "eu/api-1"),
        ("REDGUARD_NOTIFY_ON", "to_open, to_closed"),
        ("REDGUARD_NOTIFY_MIN_INTERVAL", "0s"),
        ("REDGUARD_NOTIFY_QUEUE_SIZE", "10"),
        ("REDGUARD_NOTIFY_TIMEOUT", "1s"),
        ("REDGUARD_NOTIFY_MAX_ATTEMPTS", "2"),
        ("REDGUARD_NOTIFY_SHUTDOWN_GRACE", "3s"),
    ]);
    let n = Config::load(None, vars).unwrap().notify;
    assert_eq!(n.instance.as_deref(), Some("eu/api-1"));
    assert_eq!(n.on, [NotifyOn::ToOpen, NotifyOn::ToClosed]);
    assert_eq!(n.min_interval, Duration::ZERO);
    assert_eq!(n.queue_size, 10);
    assert_eq!(n.timeout, Duration::from_secs(1));
    assert_eq!(n.max_attempts, 2);
    assert_eq!(n.shutdown_grace, Duration::from_secs(3));

    let err = Config::load(None, env(&[("REDGUARD_NOTIFY_ON", "to_open,sideways")])).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Env { var, message } if var == "REDGUARD_NOTIFY_ON" && message.contains("\"sideways\"")),
        "{err:?}"
    );
    let err = Config::load(None, env(&[("REDGUARD_NOTIFY_SINKS", "[]")])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment variable REDGUARD_NOTIFY_SINKS: notify.sinks can only be set in the config file"
    );
}

#[test]
fn instance_defaults_to_the_pod_from_the_downward_api() {
    let load = |pairs: &[(&str, &str)]| Config::load(None, env(pairs)).unwrap().notify.instance;
    assert_eq!(
        load(&[("POD_NAME", "api-7c9"), ("POD_NAMESPACE", "prod")]).as_deref(),
        Some("prod/api-7c9")
    );
    assert_eq!(load(&[("POD_NAME", "api-7c9")]).as_deref(), Some("api-7c9"));
    assert_eq!(
        load(&[("POD_NAMESPACE", "prod")]),
        None,
        "the hostname is used then, at start"
    );
    let f = file("notify:\n  instance: explicit\n");
    let c = Config::load(Some(f.path()), env(&[("POD_NAME", "api-7c9")])).unwrap();
    assert_eq!(c.notify.instance.as_deref(), Some("explicit"));
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
        [
            "redis.sentinels must not carry credentials; set redis.sentinel_username and the sentinel password \
             (REDGUARD_REDIS_SENTINEL_PASSWORD or redis.sentinel_password_file) instead (redis.username and the \
             password are for the master)"
        ]
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

#[test]
fn log_level_takes_a_level_or_a_filter_and_names_a_bad_one() {
    assert_eq!(yaml("log:\n  level: debug\n").unwrap().log.level, "debug");
    assert_eq!(
        yaml("log:\n  level: \"warn,redguard::notify=debug\"\n")
            .unwrap()
            .log
            .level,
        "warn,redguard::notify=debug"
    );
    let problems = problems("log:\n  level: \"info,redguard=loudest\"\n");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("log.level: \"info,redguard=loudest\" is not a level or a filter"),
        "{problems:?}"
    );
}

#[test]
fn runbook_and_dashboard_links_must_be_absolute_http_urls_and_name_their_key() {
    let c = yaml("notify:\n  runbook_url: https://runbooks.example/redguard#open\n  dashboard_url: 'http://grafana.example:3000/d/rg?var-pod=api-0'\n").unwrap();
    assert_eq!(
        c.notify.runbook_url.as_deref(),
        Some("https://runbooks.example/redguard#open")
    );
    assert_eq!(
        c.notify.dashboard_url.as_deref(),
        Some("http://grafana.example:3000/d/rg?var-pod=api-0")
    );
    assert_eq!(Config::default().notify.runbook_url, None);
    assert_eq!(Config::default().notify.dashboard_url, None);

    for (value, want) in [
        ("/d/redguard", "notify.runbook_url is not an absolute URL"),
        (
            "ftp://files.example/runbook",
            "notify.runbook_url must be an absolute http:// or https:// URL",
        ),
        (
            "mailto:oncall@example.com",
            "notify.runbook_url must be an absolute http:// or https:// URL",
        ),
        ("''", "notify.runbook_url is not an absolute URL"),
        (
            "' https://runbooks.example/x'",
            "notify.runbook_url must be an absolute http:// or https:// URL",
        ),
    ] {
        let p = problems(&format!("notify:\n  runbook_url: {value}\n"));
        assert!(p.len() == 1 && p[0].starts_with(want), "{value}: {p:?}");
    }
    let long = format!("https://grafana.example/{}", "a".repeat(3000));
    let p = problems(&format!("notify:\n  dashboard_url: {long}\n"));
    assert_eq!(
        p,
        ["notify.dashboard_url is longer than 3000 bytes (Slack's limit for a button's URL)"]
    );

    // The deploy generator sets them through the environment.
    let vars = env(&[
        ("REDGUARD_NOTIFY_RUNBOOK_URL", "https://runbooks.example/rg"),
        ("REDGUARD_NOTIFY_DASHBOARD_URL", "relative/path"),
    ]);
    let err = Config::load(None, vars).unwrap_err().to_string();
    assert!(err.contains("notify.dashboard_url is not an absolute URL"), "{err}");
    let vars = env(&[("REDGUARD_NOTIFY_DASHBOARD_URL", "https://grafana.example/d/rg")]);
    let n = Config::load(None, vars).unwrap().notify;
    assert_eq!(n.dashboard_url.as_deref(), Some("https://grafana.example/d/rg"));
}

#[test]
fn a_whsec_signing_secret_must_be_base64_and_is_never_printed() {
    let sinks =
        |secret: &str| format!("notify:\n  sinks:\n    - {{type: webhook, url: 'http://h', secret: '{secret}'}}\n");
    assert!(yaml(&sinks("whsec_aGVsbG8=")).is_ok());
    assert!(yaml(&sinks("plain-secret")).is_ok(), "any other secret is its bytes");
    for bad in ["whsec_not*base64*SECRETX", "whsec_"] {
        let p = problems(&sinks(bad));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(
                "notify.sinks[0]: the signing secret (secret, secret_file or secret_env) starts with whsec_"
            ),
            "{p:?}"
        );
        assert!(!p[0].contains("SECRETX"), "{p:?}");
    }
    let p = problems("notify:\n  sinks:\n    - {type: webhook, url: 'http://h', headers: {Webhook-Id: x}}\n");
    assert_eq!(
        p,
        ["notify.sinks[0].headers.Webhook-Id is set by redguard and cannot be overridden"]
    );
}

#[test]
fn log_format_is_text_or_json_from_the_file_or_the_environment() {
    use super::LogFormat;
    assert_eq!(Config::default().log.format, LogFormat::Text);
    assert_eq!(yaml("log:\n  format: json\n").unwrap().log.format, LogFormat::Json);
    let (line, message) = parse_err("log:\n  format: yaml\n");
    assert_eq!(line, Some(2));
    assert!(
        message.contains("log.format") && message.contains("text") && message.contains("json"),
        "{message}"
    );
    let c = Config::load(None, env(&[("REDGUARD_LOG_FORMAT", "json")])).unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
    let err = Config::load(None, env(&[("REDGUARD_LOG_FORMAT", "xml")])).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Env { var, .. } if var == "REDGUARD_LOG_FORMAT"),
        "{err:?}"
    );
}

#[test]
fn the_resp_listeners_are_off_by_default_tcp_is_loopback_only_and_the_socket_is_not_the_json_one() {
    let d = yaml("").unwrap();
    assert_eq!((d.listen.resp_socket, d.listen.resp_tcp), (None, None));
    assert!(d.resp.serve_cached_reads);
    assert_eq!(d.resp.max_dedicated_connections, 64);
    let ok = yaml("listen:\n  resp_socket: /tmp/r.sock\n  resp_tcp: 127.0.0.1:6380\n").unwrap();
    assert_eq!(ok.listen.resp_tcp.unwrap().port(), 6380);
    assert!(yaml("listen:\n  resp_tcp: \"[::1]:6380\"\n").is_ok());
    let p = problems("listen:\n  resp_tcp: 0.0.0.0:6380\n");
    assert!(
        p.iter()
            .any(|m| m.contains("listen.resp_tcp must be a loopback address")),
        "{p:?}"
    );
    let p = problems("listen:\n  socket: /tmp/same.sock\n  resp_socket: /tmp/same.sock\n");
    assert!(
        p.iter()
            .any(|m| m.contains("listen.resp_socket must differ from listen.socket")),
        "{p:?}"
    );
}
