//! Keeps the reference docs honest: `docs/configuration.md` lists exactly the config keys redguard accepts and
//! `examples/redguard.yaml` holds, and `docs/operations.md` names every metric `src/metrics.rs` registers.
//!
//! The accepted keys are read from the code's own behaviour, not from a list kept by hand: every config struct
//! rejects unknown keys (`deny_unknown_fields`), and serde's refusal of an unknown key names every key the
//! struct takes ("unknown field `__probe__`, expected one of `a`, `b`"). Probing each section, then each key
//! of it with a mapping (a nested section answers with its own list) or a list of mappings (`notify.sinks`),
//! gives the whole tree. So a key added to a struct shows up here without anyone updating this test, and a key
//! removed from one makes its documentation fail. Sink keys are written `notify.sinks[].key`; the types a sink
//! key belongs to (the doc's "types" column) are checked against what validation accepts for each type.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use redguard::config::{Config, ConfigError};
use serde_yaml_ng::{Mapping, Value};

const PROBE: &str = "__probe__";
const SINK_TYPES: [&str; 3] = ["slack", "pagerduty", "webhook"];

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

/// One step from the root of the config to a probed place.
#[derive(Clone)]
enum Step {
    Key(String),
    /// Into the first element of a list (of sections).
    Item,
}

/// The YAML that puts `leaf` at `path`.
fn nest(path: &[Step], leaf: Value) -> Value {
    path.iter().rev().fold(leaf, |inner, step| match step {
        Step::Key(k) => Value::Mapping(Mapping::from_iter([(Value::from(k.as_str()), inner)])),
        Step::Item => Value::Sequence(vec![inner]),
    })
}

/// The keys of the section at `path`, if it is one: serde names them when it refuses an unknown key there.
fn section_keys(path: &[Step]) -> Option<Vec<String>> {
    let probe = Value::Mapping(Mapping::from_iter([(Value::from(PROBE), Value::from(1))]));
    let yaml = serde_yaml_ng::to_string(&nest(path, probe)).expect("probe YAML serializes");
    let message = match Config::from_yaml(&yaml, "probe") {
        Err(ConfigError::Parse { message, .. }) => message,
        _ => return None,
    };
    let rest = &message[message.find(&format!("unknown field `{PROBE}`"))?..];
    if rest.contains("there are no fields") {
        return Some(Vec::new());
    }
    let listed = &rest[rest.find("expected")?..];
    Some(listed.split('`').skip(1).step_by(2).map(str::to_owned).collect())
}

/// Every key the config structs accept, as `section.key` (`notify.sinks[].key` inside a sink).
fn accepted_keys() -> BTreeSet<String> {
    fn walk(path: Vec<Step>, name: String, keys: &mut BTreeSet<String>) {
        for key in section_keys(&path).expect("walk only visits sections") {
            let mut below = path.clone();
            below.push(Step::Key(key.clone()));
            let dotted = if name.is_empty() {
                key.clone()
            } else {
                format!("{name}.{key}")
            };
            if section_keys(&below).is_some() {
                walk(below, dotted, keys);
                continue;
            }
            below.push(Step::Item);
            if section_keys(&below).is_some() {
                // A list of sections: the list is a key, and so is each key of an element.
                keys.insert(dotted.clone());
                walk(below, format!("{dotted}[]"), keys);
            } else {
                keys.insert(dotted);
            }
        }
    }
    let sections = section_keys(&[])
        .expect("the config no longer refuses unknown keys (deny_unknown_fields), so this test cannot learn its keys");
    assert!(
        sections.iter().any(|s| s == "redis"),
        "unexpected top-level keys: {sections:?}"
    );
    let mut keys = BTreeSet::new();
    walk(Vec::new(), String::new(), &mut keys);
    keys
}

/// The keys of a YAML file, flattened the same way (a list of mappings as `key[].field`).
fn yaml_keys(value: &Value, name: &str, keys: &mut BTreeSet<String>) {
    match value {
        Value::Mapping(m) => {
            for (k, v) in m {
                let k = k.as_str().expect("config keys are strings");
                let dotted = if name.is_empty() {
                    k.to_owned()
                } else {
                    format!("{name}.{k}")
                };
                yaml_keys(v, &dotted, keys);
            }
        }
        Value::Sequence(items) if items.iter().any(Value::is_mapping) => {
            keys.insert(name.to_owned());
            items
                .iter()
                .for_each(|item| yaml_keys(item, &format!("{name}[]"), keys));
        }
        _ => {
            keys.insert(name.to_owned());
        }
    }
}

/// A documented key: the table row it is in, split into cells.
struct Row {
    key: String,
    cells: Vec<String>,
}

/// The rows of docs/configuration.md's tables whose first cell is a key in backticks.
fn documented_rows() -> Vec<Row> {
    let is_key = |s: &str| {
        s.contains('.')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.[]".contains(c))
    };
    read("docs/configuration.md")
        .lines()
        .filter(|line| line.starts_with('|'))
        .filter_map(|line| {
            let cells: Vec<String> = line
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect();
            let key = cells.first()?.strip_prefix('`')?.strip_suffix('`')?.to_owned();
            is_key(&key).then_some(Row { key, cells })
        })
        .collect()
}

fn difference(a: &BTreeSet<String>, b: &BTreeSet<String>) -> Vec<String> {
    a.difference(b).cloned().collect()
}

#[test]
fn configuration_doc_lists_each_accepted_key_exactly_once() {
    let accepted = accepted_keys();
    let rows = documented_rows();
    let mut seen = BTreeMap::<&str, usize>::new();
    rows.iter().for_each(|r| *seen.entry(r.key.as_str()).or_default() += 1);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).map(|(k, _)| *k).collect();
    assert!(
        twice.is_empty(),
        "docs/configuration.md documents these keys more than once: {twice:?}"
    );
    let documented: BTreeSet<String> = seen.keys().map(|k| k.to_string()).collect();
    let missing = difference(&accepted, &documented);
    let unknown = difference(&documented, &accepted);
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/configuration.md is out of step with the config structs:\n  accepted but not documented: \
         {missing:?}\n  documented but not accepted: {unknown:?}"
    );
}

#[test]
fn example_config_has_every_accepted_key_except_the_per_sink_ones() {
    let mut example = BTreeSet::new();
    let text = read("examples/redguard.yaml");
    yaml_keys(
        &serde_yaml_ng::from_str(&text).expect("examples/redguard.yaml parses"),
        "",
        &mut example,
    );
    // The example has no sink (`sinks: []`): which keys a sink takes depends on its type (docs/configuration.md).
    let accepted: BTreeSet<String> = accepted_keys().into_iter().filter(|k| !k.contains("[]")).collect();
    let missing = difference(&accepted, &example);
    let unknown = difference(&example, &accepted);
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "examples/redguard.yaml is out of step with the config structs:\n  accepted but not in the example: \
         {missing:?}\n  in the example but not accepted: {unknown:?}"
    );
    let example = Config::from_yaml(&text, "examples/redguard.yaml").expect("the example config is valid");
    let defaults = Config::from_yaml("", "<defaults>").expect("the defaults are valid");
    assert!(
        example == defaults,
        "examples/redguard.yaml must hold every key at its default"
    );
}

/// A value of the right type for a sink key, so that validation gets as far as judging the key's type.
fn sample(key: &str) -> Value {
    match key {
        "severity" => Value::from("info"),
        "headers" => Value::Mapping(Mapping::from_iter([(Value::from("X-Test"), Value::from("v"))])),
        _ => Value::from("x"),
    }
}

#[test]
fn sink_keys_belong_to_the_types_the_doc_says() {
    let rows: Vec<Row> = documented_rows()
        .into_iter()
        .filter(|r| r.key.starts_with("notify.sinks[]."))
        .collect();
    assert!(!rows.is_empty(), "docs/configuration.md documents no sink keys");
    for row in rows {
        let key = row.key.trim_start_matches("notify.sinks[].");
        let types = row
            .cells
            .get(1)
            .unwrap_or_else(|| panic!("{}: no types column", row.key));
        for kind in SINK_TYPES {
            let documented = types.contains(&format!("`{kind}`"));
            if key == "type" {
                assert!(documented, "notify.sinks[].type must list {kind}");
                continue;
            }
            let sink = Mapping::from_iter([
                (Value::from("type"), Value::from(kind)),
                (Value::from(key), sample(key)),
            ]);
            let yaml = serde_yaml_ng::to_string(&nest(
                &[Step::Key("notify".into()), Step::Key("sinks".into())],
                Value::Sequence(vec![Value::Mapping(sink)]),
            ))
            .unwrap();
            let refused = match Config::from_yaml(&yaml, "probe") {
                Err(ConfigError::Invalid { problems, .. }) => problems
                    .iter()
                    .any(|p| p.contains(&format!("notify.sinks[0].{key} is not a setting of type {kind}"))),
                Err(ConfigError::Parse { message, .. }) => {
                    panic!("{}: give the test a sample value: {message}", row.key)
                }
                _ => false,
            };
            assert_eq!(
                documented,
                !refused,
                "docs/configuration.md says {} {} a key of type {kind}, but validation {} it",
                row.key,
                if documented { "is" } else { "is not" },
                if refused { "refuses" } else { "accepts" }
            );
        }
    }
}

/// Each `redguard_*` name in `text` (a word starting there), without a histogram's series suffix.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = text[from..].find("redguard_").map(|i| i + from) {
        let word = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
        let end = at + bytes[at..].iter().take_while(|&&b| word(b)).count();
        if at == 0 || !(word(bytes[at - 1]) || bytes[at - 1].is_ascii_uppercase()) {
            let name = &text[at..end];
            let name = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|n| n.ends_with("_seconds")))
                .unwrap_or(name);
            names.insert(name.to_owned());
        }
        from = end;
    }
    names
}

/// The files that register metrics: `src/metrics.rs`, and the modules whose metrics sit next to their code.
const METRIC_SOURCES: [&str; 3] = ["src/metrics.rs", "src/metrics/gauges.rs", "src/reload.rs"];

/// The metrics redguard registers: the quoted `"redguard_..."` names of [`METRIC_SOURCES`] outside their tests.
fn registered_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in METRIC_SOURCES {
        let source = read(file);
        let code = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
        names.extend(
            code.split('"')
                .skip(1)
                .step_by(2)
                .filter(|s| s.starts_with("redguard_") && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
                .map(str::to_owned),
        );
    }
    assert!(
        names.len() > 10,
        "found too few metric names in src/metrics.rs: {names:?}"
    );
    names
}

#[test]
fn operations_doc_names_every_metric_and_no_other() {
    let registered = registered_metrics();
    let documented = metric_names(&read("docs/operations.md"));
    let missing = difference(&registered, &documented);
    assert!(
        missing.is_empty(),
        "docs/operations.md does not document these metrics: {missing:?}"
    );
    for doc in [
        "README.md",
        "docs/operations.md",
        "docs/api.md",
        "docs/topologies.md",
        "docs/ARCHITECTURE.md",
    ] {
        let unknown = difference(&metric_names(&read(doc)), &registered);
        assert!(
            unknown.is_empty(),
            "{doc} names metrics that {METRIC_SOURCES:?} do not register: {unknown:?}"
        );
    }
}

#[test]
fn api_doc_lists_every_command_the_default_policy_denies() {
    let api = read("docs/api.md");
    let section = &api[api
        .find("**The default `api.commands.deny`.**")
        .expect("api.md has the default deny list")..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let defaults = Config::from_yaml("", "<defaults>").expect("the defaults are valid");
    let missing: Vec<&String> = defaults
        .api
        .commands
        .deny
        .iter()
        .filter(|rule| {
            // `CLUSTER` subcommands are listed by their second word under one heading.
            let shown = match rule.split_once(' ') {
                Some(("CLUSTER", sub)) => sub,
                _ => rule.as_str(),
            };
            !section.contains(&format!("`{shown}`"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/api.md does not list these default denials: {missing:?}"
    );
}

#[test]
fn every_accepted_key_is_live_or_restart_only_and_the_doc_says_which() {
    use redguard::reload::{Apply, KEYS};
    // A sink's keys are one key for a reload: the list of sinks.
    let accepted: BTreeSet<String> = accepted_keys()
        .into_iter()
        .map(|k| {
            if k.starts_with("notify.sinks[]") {
                "notify.sinks".to_owned()
            } else {
                k
            }
        })
        .collect();
    // The passwords read from their file or variable are compared too, though no YAML key sets them.
    let read_not_written = ["redis.password", "redis.sentinel_password"];
    let listed: BTreeSet<String> = KEYS
        .iter()
        .map(|k| k.name.to_owned())
        .filter(|k| !read_not_written.contains(&k.as_str()))
        .collect();
    assert!(
        listed == accepted,
        "reload::KEYS is out of step with the config structs:\n  accepted but not in KEYS: {:?}\n  in KEYS but \
         not accepted: {:?}",
        difference(&accepted, &listed),
        difference(&listed, &accepted)
    );
    let rows = documented_rows();
    let mut wrong = Vec::new();
    for key in KEYS.iter().filter(|k| !read_not_written.contains(&k.name)) {
        let expected = match key.apply {
            Apply::Live => "live",
            Apply::Restart => "restart",
        };
        let row = rows
            .iter()
            .find(|r| r.key == key.name)
            .expect("documented (checked above)");
        if row.cells.get(2).map(String::as_str) != Some(expected) {
            wrong.push(format!(
                "{}: doc says {:?}, code says {expected}",
                key.name,
                row.cells.get(2)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/configuration.md's reload column is wrong:\n  {}",
        wrong.join("\n  ")
    );
}

/// `(method, path)` of every route the socket API answers, read from the `match` in `src/api/mod.rs`
/// (`"/v1/cmd" if post => ...`).
fn socket_routes() -> BTreeSet<(String, String)> {
    let source = read("src/api/mod.rs");
    source
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix('"')?;
            let (path, rest) = rest.split_once('"')?;
            let method = match rest.trim().strip_prefix("if ")?.split_whitespace().next()? {
                "post" => "POST",
                "read" => "GET",
                _ => return None,
            };
            Some((method.to_owned(), path.to_owned()))
        })
        .collect()
}

#[test]
fn api_doc_lists_every_route_and_every_op_once() {
    let api = read("docs/api.md");
    let routes = socket_routes();
    assert!(routes.len() >= 8, "found too few routes in src/api/mod.rs: {routes:?}");
    for (method, path) in &routes {
        let row = format!("| `{method} {path}` |");
        assert_eq!(
            api.matches(&row).count(),
            1,
            "docs/api.md's route table must list {method} {path} once"
        );
    }
    // The ops: each row `Name => "name", ...` of the `ops!` table, once in the op table of `POST /v1/cmd`.
    let ops: Vec<String> = read("src/op/mod.rs")
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.trim().split_once(" => \"")?;
            Some(rest.split_once('"')?.0.to_owned())
        })
        .collect();
    assert!(ops.len() >= 25, "found too few ops in src/op/mod.rs: {ops:?}");
    let section = &api[api.find("## `POST /v1/cmd`").expect("api.md documents /v1/cmd")..];
    let section = &section[..section
        .find("\n### ")
        .expect("the op table comes before the subsections")];
    for op in &ops {
        assert_eq!(
            section.matches(&format!("| `{op}` |")).count(),
            1,
            "the op table of docs/api.md must list `{op}` once"
        );
    }
}
