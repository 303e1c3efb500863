//! The command table (`src/commands/`) against a real redis-server's own account of its commands (`COMMAND`):
//! every command Redis knows is in the table, every row agrees with Redis's flags (read, write, admin, blocking,
//! pub/sub) and key positions (first, last, step; movable keys), and where a row computes keys from the
//! arguments (numkeys, STREAMS) it finds the same keys as `COMMAND GETKEYS`. Deliberate differences are listed
//! here, each with its reason in the table.

mod common;

use std::collections::BTreeMap;

use common::RedisServer;
use redguard::commands::{self, Command, Flags, Keys, Kind};
use redis::Value;

/// Rows for commands newer than the Redis 7.0 these tests run against, kept for the policy.
const NEWER_THAN_7_0: &[&str] = &["WAITAOF", "CLIENT SETINFO", "CLIENT NO-TOUCH"];
/// Redis flags these neither readonly nor write; a script may write, so the table says Write.
const SCRIPTS_WRITE: &[&str] = &["EVAL", "EVALSHA", "FCALL"];
/// Redis does not flag WAIT `blocking`; it holds the connection until replicas answer.
const BLOCKS_UNFLAGGED: &[&str] = &["WAIT"];

/// One command as `COMMAND` describes it.
#[derive(Debug)]
struct Info {
    flags: Vec<String>,
    first: i64,
    last: i64,
    step: i64,
    subs: BTreeMap<String, Info>,
}

impl Info {
    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".to_owned(),
        other => panic!("not a string: {other:?}"),
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

fn array(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        other => panic!("not an array: {other:?}"),
    }
}

/// Name (uppercase, without the container's `name|` prefix) and description of one `COMMAND` entry.
fn parse(entry: &Value) -> (String, Info) {
    let e = array(entry);
    let name = text(&e[0]).to_ascii_uppercase();
    let name = name.rsplit('|').next().unwrap().to_owned();
    let subs = e.get(9).map(array).unwrap_or_default().iter().map(parse).collect();
    let info = Info {
        flags: array(&e[2]).iter().map(text).collect(),
        first: int(&e[3]),
        last: int(&e[4]),
        step: int(&e[5]),
        subs,
    };
    (name, info)
}

fn connect(redis: &RedisServer) -> redis::Connection {
    redis::Client::open(redis.url()).unwrap().get_connection().unwrap()
}

fn redis_commands(conn: &mut redis::Connection) -> BTreeMap<String, Info> {
    let all: Value = redis::cmd("COMMAND").query(conn).unwrap();
    array(&all).iter().map(parse).collect()
}

/// Every row, as ("NAME" or "NAME SUB", row).
fn rows() -> Vec<(String, &'static Command)> {
    let mut out = Vec::new();
    for row in commands::all() {
        if row.subs.is_empty() {
            out.push((row.name.to_owned(), row));
        }
        for sub in row.subs {
            out.push((format!("{} {}", row.name, sub.name), sub));
        }
    }
    out
}

fn redis_kind(info: &Info) -> Kind {
    if info.has("write") {
        Kind::Write
    } else if info.has("readonly") {
        Kind::Read
    } else if info.has("admin") {
        Kind::Admin
    } else {
        Kind::Connection
    }
}

/// What the row's key spec should look like in Redis's legacy triple and `movablekeys` flag.
fn keys_agree(row: &Command, info: &Info) -> bool {
    let movable = info.has("movablekeys");
    let triple = (info.first, info.last, info.step);
    match row.keys {
        Keys::None => !movable && triple == (0, 0, 0),
        Keys::Range { first, last, step } => !movable && triple == (first.into(), last.into(), step.into()),
        Keys::NumKeys { .. } | Keys::Streams { .. } => movable && triple == (0, 0, 0),
        Keys::DestNumKeys => movable && triple == (1, 1, 1),
        Keys::Movable { first } => movable && info.first == i64::from(first),
    }
}

#[test]
fn every_row_agrees_with_what_redis_says_of_its_commands() {
    let redis = RedisServer::start();
    let mut conn = connect(&redis);
    let known = redis_commands(&mut conn);

    // Coverage both ways: every command (and subcommand) of this Redis has a row; every row is a Redis command.
    let mut problems = Vec::new();
    for (name, info) in &known {
        match commands::find(name.as_bytes()) {
            None => problems.push(format!("{name}: known to Redis, not in the table")),
            Some(row) => {
                for sub in info.subs.keys() {
                    if !row.subs.iter().any(|s| s.name == sub) {
                        problems.push(format!("{name} {sub}: known to Redis, not in the table"));
                    }
                }
                if row.subs.is_empty() != info.subs.is_empty() {
                    problems.push(format!("{name}: a container in one and not the other"));
                }
            }
        }
    }

    for (name, row) in rows() {
        let mut words = name.split(' ');
        let top = known.get(words.next().unwrap());
        let info = match words.next() {
            Some(sub) => top.and_then(|t| t.subs.get(sub)),
            None => top,
        };
        let Some(info) = info else {
            if !NEWER_THAN_7_0.contains(&name.as_str()) {
                problems.push(format!("{name}: in the table, unknown to Redis"));
            }
            continue;
        };
        let mut check = |ok: bool, what: &str| {
            if !ok {
                problems.push(format!("{name}: {what} (Redis: {info:?}, table: {row:?})"));
            }
        };
        let expected = if SCRIPTS_WRITE.contains(&name.as_str()) {
            Kind::Write
        } else {
            redis_kind(info)
        };
        check(row.kind == expected, "kind differs from Redis's flags");
        check(keys_agree(row, info), "key positions differ from Redis's");
        let blocks = row.is(Flags::BLOCKING) || row.is(Flags::BLOCK_OPTION);
        check(
            blocks == info.has("blocking") || BLOCKS_UNFLAGGED.contains(&name.as_str()),
            "blocking differs",
        );
        check(
            !row.is(Flags::BLOCK_OPTION) || info.has("blocking"),
            "BLOCK_OPTION on a command Redis does not call blocking",
        );
        let subscribes = info.has("pubsub") && name.ends_with("SUBSCRIBE");
        let replication_stream = ["MONITOR", "SYNC", "PSYNC"].contains(&name.as_str());
        check(
            row.is(Flags::PUSHES) == (subscribes || replication_stream),
            "PUSHES: the subscribe commands, MONITOR, SYNC and PSYNC",
        );
        check(
            !row.is(Flags::KEYSPACE) || info.has("write") || info.has("admin"),
            "KEYSPACE on a command that is neither write nor admin",
        );
        // Resending is for commands that change nothing: Redis's reads, and PING, ECHO, TIME.
        let pure =
            (row.kind == Kind::Read && !info.has("blocking")) || ["PING", "ECHO", "TIME"].contains(&name.as_str());
        check(row.resend() == pure, "RESEND: reads that never block, PING, ECHO, TIME");
        check(
            row.cached.is_none() || info.has("readonly"),
            "a cached reply of a non-read",
        );
        check(
            !row.is(Flags::SCRIPT) || SCRIPTS_WRITE.contains(&name.as_str()),
            "SCRIPT: EVAL, EVALSHA, FCALL",
        );
    }
    assert!(
        problems.is_empty(),
        "the command table disagrees with Redis:\n{}",
        problems.join("\n")
    );
}

/// `COMMAND GETKEYS args..`: the keys Redis finds in a command.
fn redis_keys(conn: &mut redis::Connection, args: &[&str]) -> Vec<String> {
    let reply: Value = redis::cmd("COMMAND").arg("GETKEYS").arg(args).query(conn).unwrap();
    array(&reply).iter().map(text).collect()
}

#[test]
fn computed_key_positions_find_the_keys_redis_finds() {
    let redis = RedisServer::start();
    let mut conn = connect(&redis);
    let samples: &[&[&str]] = &[
        &["EVAL", "return 1", "2", "a", "b", "argv"],
        &["EVAL_RO", "return 1", "1", "a", "argv"],
        &["EVALSHA", "0123456789012345678901234567890123456789", "1", "a"],
        &["EVALSHA_RO", "0123456789012345678901234567890123456789", "2", "a", "b"],
        &["FCALL", "f", "2", "a", "b", "argv"],
        &["FCALL_RO", "f", "1", "a"],
        &["ZUNION", "2", "a", "b", "WITHSCORES"],
        &["ZINTER", "2", "a", "b"],
        &["ZDIFF", "2", "a", "b"],
        &["ZINTERCARD", "2", "a", "b", "LIMIT", "1"],
        &["SINTERCARD", "2", "a", "b"],
        &["LMPOP", "2", "a", "b", "LEFT"],
        &["ZMPOP", "2", "a", "b", "MIN"],
        &["BLMPOP", "0", "2", "a", "b", "LEFT"],
        &["BZMPOP", "0", "2", "a", "b", "MIN"],
        &["ZUNIONSTORE", "d", "2", "a", "b"],
        &["ZINTERSTORE", "d", "2", "a", "b", "AGGREGATE", "MAX"],
        &["ZDIFFSTORE", "d", "2", "a", "b"],
        &["XREAD", "COUNT", "1", "STREAMS", "a", "b", "0", "0"],
        &["XREAD", "BLOCK", "0", "STREAMS", "a", "$"],
        &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "a", "b", ">", ">"],
        &["XREADGROUP", "GROUP", "streams", "c", "COUNT", "1", "STREAMS", "a", ">"],
        // Fixed ranges too, one of each shape.
        &["MSET", "a", "1", "b", "2"],
        &["BLPOP", "a", "b", "0"],
        &["BITOP", "AND", "d", "a", "b"],
        &["OBJECT", "ENCODING", "a"],
        &["XGROUP", "CREATE", "a", "g", "$"],
    ];
    // Every computed key spec in the table has a sample.
    for (name, row) in rows() {
        if matches!(
            row.keys,
            Keys::NumKeys { .. } | Keys::DestNumKeys | Keys::Streams { .. }
        ) {
            assert!(samples.iter().any(|s| s[0] == name), "{name} needs a sample");
        }
    }
    for args in samples {
        let row = commands::lookup(*args).unwrap_or_else(|| panic!("{args:?} not in the table"));
        let ours: Vec<String> = row
            .keys(*args)
            .unwrap_or_else(|| panic!("{args:?}: keys unknown"))
            .map(|i| args[i].to_owned())
            .collect();
        assert_eq!(ours, redis_keys(&mut conn, args), "{args:?}");
        let slot = commands::slot(*args);
        assert_eq!(
            slot,
            Some(commands::key_slot(ours[0].as_bytes())),
            "{args:?} routes by its first key"
        );
    }
}
