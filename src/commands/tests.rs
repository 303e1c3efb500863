//! Unit tests of the command table's lookup and key extraction (the rows themselves are checked against a real
//! redis-server in `tests/commands.rs`).

use super::*;

fn keys_of<'a>(args: &'a [&'a str]) -> Option<Vec<&'a str>> {
    let row = lookup(args).unwrap_or_else(|| panic!("{args:?} not in the table"));
    row.keys(args).map(|ks| ks.map(|i| args[i]).collect())
}

#[test]
fn rows_and_subcommands_are_sorted_unique_and_uppercase() {
    let sorted = |rows: &[Command]| rows.windows(2).all(|w| w[0].name < w[1].name);
    assert!(sorted(all()), "the table must stay sorted for binary search");
    for row in all() {
        assert_eq!(row.name, row.name.to_ascii_uppercase());
        assert!(sorted(row.subs), "{}'s subcommands must stay sorted", row.name);
        for sub in row.subs {
            assert_eq!(sub.name, sub.name.to_ascii_uppercase());
            assert!(
                sub.subs.is_empty(),
                "{} {}: one level of subcommands",
                row.name,
                sub.name
            );
        }
    }
    // Every row can be found by its own name in any case, at its own position, and a name one letter longer
    // or shorter finds nothing (unless it is another row's).
    for (i, row) in all().iter().enumerate() {
        assert!(row.name.as_bytes()[0].is_ascii_uppercase(), "{}", row.name);
        assert!(std::ptr::eq(find(row.name.as_bytes()).unwrap(), row));
        assert_eq!(
            position(row.name.to_ascii_lowercase().as_bytes()),
            Some(i),
            "{}",
            row.name
        );
        for near in [format!("{}X", row.name), row.name[..row.name.len() - 1].to_owned()] {
            let expected = all().iter().position(|r| r.name == near);
            assert_eq!(position(near.as_bytes()), expected, "{near}");
        }
    }
}

#[test]
fn lookup_ignores_case_and_resolves_subcommands() {
    assert_eq!(find(b"get").unwrap().name, "GET");
    assert_eq!(find(b"ZRangeByScore").unwrap().name, "ZRANGEBYSCORE");
    assert!(find(b"GETX").is_none());
    assert!(find(b"").is_none());
    assert!(
        find(b"[GET").is_none() && find(b"@").is_none() && find(b"1").is_none(),
        "no letter first"
    );
    assert!(find(b"\xff\xfe").is_none());
    assert!(find(&[b'A'; 1000]).is_none(), "a long name");
    let sub = lookup(&["object", "Encoding", "k"]).unwrap();
    assert_eq!((sub.name, sub.kind), ("ENCODING", Kind::Read));
    assert_eq!(lookup(&["CLIENT", "kill", "id", "1"]).unwrap().kind, Kind::Admin);
    assert!(lookup(&["OBJECT"]).is_none(), "a container without its subcommand");
    assert!(lookup(&["OBJECT", "NOPE"]).is_none(), "an unknown subcommand");
    let none: [&str; 0] = [];
    assert!(lookup(&none).is_none());
    assert_eq!(canonical_name(b"hgetall"), Some("HGETALL"));
    assert_eq!(canonical_name(b"client"), Some("CLIENT"));
    assert_eq!(canonical_name(b"JSON.SET"), None);
}

#[test]
fn a_row_found_by_position_is_the_row_lookup_finds() {
    for (i, row) in all().iter().enumerate() {
        let name = row.name.to_ascii_lowercase();
        assert_eq!(position(name.as_bytes()), Some(i), "{name}");
        let subs: Vec<&str> = row.subs.iter().map(|sub| sub.name).chain(["NOPE"]).collect();
        for sub in if row.subs.is_empty() { &["k"][..] } else { &subs[..] } {
            let args = [name.as_str(), sub, "k"];
            let by_position = row_at(Some(i), &args).map(std::ptr::from_ref);
            assert_eq!(by_position, lookup(&args).map(std::ptr::from_ref), "{args:?}");
        }
        assert_eq!(
            row_at(Some(i), &[name.as_str()]).is_some(),
            row.subs.is_empty(),
            "{name} alone"
        );
    }
    assert!(row_at(None, &["GET", "k"]).is_none(), "a name not in the table");
    assert!(row_at(Some(all().len()), &["GET", "k"]).is_none(), "past the table");
}

#[test]
fn the_columns_say_what_the_cache_and_the_retry_rule_need() {
    let get = find(b"GET").unwrap();
    assert!(get.resend() && get.kind == Kind::Read && get.cached == Some(Cached::String));
    assert_eq!(find(b"HGET").unwrap().cached, Some(Cached::HashField));
    assert_eq!(find(b"HGETALL").unwrap().cached, Some(Cached::Hash));
    assert_eq!(find(b"MGET").unwrap().cached, Some(Cached::Strings));
    assert_eq!(all().iter().filter(|r| r.cached.is_some()).count(), 4);
    for name in ["PING", "EXISTS", "TTL", "ZSCORE", "TIME"] {
        assert!(find(name.as_bytes()).unwrap().resend(), "{name}");
    }
    for name in ["SET", "INCRBY", "PUBLISH", "EVAL", "BLPOP", "XREAD", "EXPIRE"] {
        assert!(!find(name.as_bytes()).unwrap().resend(), "{name}");
    }
    assert!(find(b"FLUSHDB").unwrap().is(Flags::KEYSPACE));
    assert!(find(b"EVALSHA").unwrap().is(Flags::SCRIPT));
    assert!(!find(b"EVAL_RO").unwrap().is(Flags::SCRIPT));
    assert!(lookup(&["CLIENT", "REPLY", "OFF"]).unwrap().is(Flags::CONN_STATE));
}

#[test]
fn key_ranges_follow_first_last_and_step() {
    assert_eq!(keys_of(&["GET", "k"]), Some(vec!["k"]));
    assert_eq!(keys_of(&["SET", "k", "v", "PX", "5"]), Some(vec!["k"]));
    assert_eq!(keys_of(&["DEL", "a", "b", "c"]), Some(vec!["a", "b", "c"]));
    assert_eq!(keys_of(&["MSET", "a", "1", "b", "2"]), Some(vec!["a", "b"]));
    assert_eq!(keys_of(&["BLPOP", "a", "b", "0"]), Some(vec!["a", "b"]), "last = -2");
    assert_eq!(keys_of(&["RENAME", "a", "b"]), Some(vec!["a", "b"]));
    assert_eq!(keys_of(&["BITOP", "AND", "dest", "a"]), Some(vec!["dest", "a"]));
    assert_eq!(keys_of(&["OBJECT", "ENCODING", "k"]), Some(vec!["k"]));
    assert_eq!(keys_of(&["PING"]), Some(vec![]));
    assert_eq!(keys_of(&["FLUSHALL", "ASYNC"]), Some(vec![]));
    // Fewer arguments than the spec: no key past the end, no panic.
    assert_eq!(keys_of(&["GET"]), Some(vec![]));
    assert_eq!(keys_of(&["MSET", "a"]), Some(vec!["a"]));
    assert_eq!(keys_of(&["BLPOP"]), Some(vec![]));
}

#[test]
fn numkeys_specs_read_the_count_and_never_run_past_the_arguments() {
    assert_eq!(
        keys_of(&["EVAL", "return 1", "2", "a", "b", "argv"]),
        Some(vec!["a", "b"])
    );
    assert_eq!(keys_of(&["evalsha", "abc", "0", "argv"]), Some(vec![]));
    assert_eq!(keys_of(&["FCALL", "f", "1", "k", "x"]), Some(vec!["k"]));
    assert_eq!(keys_of(&["ZUNION", "2", "a", "b", "WITHSCORES"]), Some(vec!["a", "b"]));
    assert_eq!(keys_of(&["LMPOP", "1", "l", "LEFT"]), Some(vec!["l"]));
    assert_eq!(keys_of(&["BLMPOP", "0", "2", "a", "b", "LEFT"]), Some(vec!["a", "b"]));
    assert_eq!(
        keys_of(&["ZUNIONSTORE", "dest", "2", "a", "b"]),
        Some(vec!["dest", "a", "b"])
    );
    assert_eq!(keys_of(&["ZDIFFSTORE", "dest", "1", "a"]), Some(vec!["dest", "a"]));
    // A count that is too large, negative, not a number, absent or overflowing: unknown, never a panic.
    for bad in [
        &["EVAL", "s", "3", "a"][..],
        &["EVAL", "s", "-1", "a"],
        &["EVAL", "s", "x", "a"],
        &["EVAL", "s"],
        &["EVAL", "s", "18446744073709551615", "a"],
        &["EVAL", "s", "99999999999999999999999", "a"],
        &["ZUNIONSTORE", "dest"],
        &["ZUNIONSTORE"],
    ] {
        assert_eq!(keys_of(bad), None, "{bad:?}");
    }
}

#[test]
fn streams_keys_are_the_first_half_after_the_keyword() {
    assert_eq!(
        keys_of(&["XREAD", "COUNT", "2", "STREAMS", "a", "b", "0", "0"]),
        Some(vec!["a", "b"])
    );
    assert_eq!(keys_of(&["xread", "streams", "s", "$"]), Some(vec!["s"]));
    assert_eq!(
        keys_of(&["XREADGROUP", "GROUP", "streams", "c", "STREAMS", "s", ">"]),
        Some(vec!["s"]),
        "a group named `streams` is not the keyword"
    );
    assert_eq!(
        keys_of(&["XREAD", "STREAMS", "a", "b", "0"]),
        None,
        "odd: Redis refuses it"
    );
    assert_eq!(keys_of(&["XREAD", "STREAMS"]), None);
    assert_eq!(keys_of(&["XREAD", "COUNT", "1"]), None);
}

#[test]
fn movable_keys_are_unknown_but_route_by_their_fixed_key() {
    assert_eq!(keys_of(&["SORT", "l", "STORE", "dest"]), None);
    assert_eq!(keys_of(&["MIGRATE", "h", "6379", "k", "0", "100"]), None);
    assert_eq!(first_key(&["SORT", "l", "STORE", "dest"]), Some(&b"l"[..]));
    assert_eq!(first_key(&["MIGRATE", "h", "6379", "k", "0", "100"]), Some(&b"k"[..]));
}

#[test]
fn cluster_routing_hashes_the_first_key_the_table_gives() {
    assert_eq!(slot(&["GET", "foo"]), Some(12182));
    assert_eq!(
        slot(&["EVAL", "return 1", "1", "foo"]),
        Some(12182),
        "the key, not the script"
    );
    assert_eq!(slot(&["EVALSHA", "abc", "0"]), None, "no keys: any node");
    assert_eq!(slot(&["XREAD", "COUNT", "1", "STREAMS", "foo", "0"]), Some(12182));
    assert_eq!(slot(&["OBJECT", "ENCODING", "foo"]), Some(12182));
    assert_eq!(slot(&["MEMORY", "USAGE", "foo"]), Some(12182));
    assert_eq!(slot(&["ZINTER", "1", "foo"]), Some(12182));
    assert_eq!(slot(&["PING"]), None);
    assert_eq!(slot(&["TIME"]), None);
    assert_eq!(slot(&["CLUSTER", "INFO"]), None);
    // Not in the table: the argument after the name, as before the table.
    assert_eq!(slot(&["JSON.GET", "foo", "$"]), Some(12182));
    // A malformed count: the argument after the name; Redis refuses the command wherever it lands.
    assert_eq!(slot(&["EVAL", "foo", "9"]), Some(12182));
    // A built command gives the same answer as its arguments.
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg("abc").arg(1).arg("foo");
    assert_eq!(slot(&cmd), Some(12182));
    assert_eq!(slot(&redis::cmd("PING")), None);
}

#[test]
fn key_slots_follow_the_cluster_spec() {
    // Values from CLUSTER KEYSLOT.
    assert_eq!(key_slot(b"foo"), 12182);
    assert_eq!(key_slot(b"bar"), 5061);
    assert_eq!(key_slot(b""), 0);
    assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
    assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
    assert_ne!(
        key_slot(b"foo{}{bar}"),
        key_slot(b"bar"),
        "an empty first tag means the whole key is hashed"
    );
    assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
}

#[test]
fn the_name_index_finds_most_commands_at_their_first_probe() {
    // What the index is for is speed: a name should rarely need more than the slot its hash names.
    let index = &**super::INDEX;
    let mut extra_probes = 0;
    for (i, row) in all().iter().enumerate() {
        let home = super::name_hash(row.name.as_bytes());
        let distance = (0..super::INDEX_SLOTS)
            .find(|d| usize::from(index[(home + d) % super::INDEX_SLOTS]) == i + 1)
            .expect("every row is in the index");
        extra_probes += distance;
    }
    assert!(
        extra_probes < all().len() / 4,
        "{extra_probes} extra probes for {} rows",
        all().len()
    );
}
