//! The rows of the command table (see the module above for what each column means).
//!
//! Generated once from Redis 7.0's `COMMAND` and kept by hand since; `tests/commands.rs` checks every row against
//! a real redis-server. Sorted by name (and each container's subcommands by name): lookup is a binary search.
//! Where a row differs from Redis on purpose, the comment says why and the test lists it.
//!
//! Our own columns, not Redis's: `RESEND` (every read by default, see [`read`]; PING, ECHO and TIME too), `cached`
//! (the four replies the typed ops cache: GET, HGET, HGETALL, MGET) and the flags the policy and the cache need
//! (`CONN_STATE`, `BLOCKING`, `BLOCK_OPTION`, `PUSHES`, `KEYSPACE`, `SCRIPT`).

use super::{Cached, Command, Flags, Keys, Kind};

const BLOCKING: Flags = Flags::BLOCKING;
const BLOCK_OPTION: Flags = Flags::BLOCK_OPTION;
const CONN_STATE: Flags = Flags::CONN_STATE;
const KEYSPACE: Flags = Flags::KEYSPACE;
const PUSHES: Flags = Flags::PUSHES;
const RESEND: Flags = Flags::RESEND;
const SCRIPT: Flags = Flags::SCRIPT;
const NONE: Keys = Keys::None;

const fn at(first: u8, last: i8, step: u8) -> Keys {
    Keys::Range { first, last, step }
}

const fn row(name: &'static str, kind: Kind, flags: Flags, keys: Keys) -> Command {
    Command {
        name,
        kind,
        flags,
        keys,
        cached: None,
        subs: &[],
    }
}

/// A read: changes nothing, so it is safe to send twice (unless [`Command::no_resend`] says otherwise).
const fn read(name: &'static str, keys: Keys) -> Command {
    row(name, Kind::Read, RESEND, keys)
}

const fn write(name: &'static str, keys: Keys) -> Command {
    row(name, Kind::Write, Flags::NONE, keys)
}

const fn admin(name: &'static str, keys: Keys) -> Command {
    row(name, Kind::Admin, Flags::NONE, keys)
}

const fn conn(name: &'static str, keys: Keys) -> Command {
    row(name, Kind::Connection, Flags::NONE, keys)
}

/// A command whose meaning is its subcommand's (`CLIENT KILL`, `OBJECT ENCODING`).
const fn container(name: &'static str, subs: &'static [Command]) -> Command {
    Command {
        subs,
        ..row(name, Kind::Connection, Flags::NONE, NONE)
    }
}

impl Command {
    const fn with(self, flags: Flags) -> Command {
        Command {
            flags: self.flags.with(flags),
            ..self
        }
    }

    /// A read that is not sent twice: XREAD may block (with BLOCK), and a dropped block has no clean retry.
    const fn no_resend(self) -> Command {
        Command {
            flags: Flags(self.flags.0 & !Flags::RESEND.0),
            ..self
        }
    }

    const fn cached(self, cached: Cached) -> Command {
        Command {
            cached: Some(cached),
            ..self
        }
    }
}

/// Every row, in one place in memory ([`ROWS`] is the same list for compile-time use: the lookup's index).
pub(super) static COMMANDS: &[Command] = ROWS;

pub(super) const ROWS: &[Command] = &[
    container(
        "ACL",
        &[
            conn("CAT", NONE),
            admin("DELUSER", NONE),
            admin("DRYRUN", NONE),
            conn("GENPASS", NONE),
            admin("GETUSER", NONE),
            conn("HELP", NONE),
            admin("LIST", NONE),
            admin("LOAD", NONE),
            admin("LOG", NONE),
            admin("SAVE", NONE),
            admin("SETUSER", NONE),
            admin("USERS", NONE),
            conn("WHOAMI", NONE),
        ],
    ),
    write("APPEND", at(1, 1, 1)),
    // Sets a one-shot flag on the connection for the next command, whoever sends it.
    conn("ASKING", NONE).with(CONN_STATE),
    conn("AUTH", NONE).with(CONN_STATE),
    admin("BGREWRITEAOF", NONE),
    admin("BGSAVE", NONE),
    read("BITCOUNT", at(1, 1, 1)),
    write("BITFIELD", at(1, 1, 1)),
    read("BITFIELD_RO", at(1, 1, 1)),
    write("BITOP", at(2, -1, 1)),
    read("BITPOS", at(1, 1, 1)),
    write("BLMOVE", at(1, 2, 1)).with(BLOCKING),
    write("BLMPOP", Keys::NumKeys { at: 2 }).with(BLOCKING),
    write("BLPOP", at(1, -2, 1)).with(BLOCKING),
    write("BRPOP", at(1, -2, 1)).with(BLOCKING),
    write("BRPOPLPUSH", at(1, 2, 1)).with(BLOCKING),
    write("BZMPOP", Keys::NumKeys { at: 2 }).with(BLOCKING),
    write("BZPOPMAX", at(1, -2, 1)).with(BLOCKING),
    write("BZPOPMIN", at(1, -2, 1)).with(BLOCKING),
    container(
        "CLIENT",
        &[
            conn("CACHING", NONE).with(CONN_STATE),
            conn("GETNAME", NONE),
            conn("GETREDIR", NONE),
            conn("HELP", NONE),
            conn("ID", NONE),
            conn("INFO", NONE),
            admin("KILL", NONE),
            admin("LIST", NONE),
            admin("NO-EVICT", NONE).with(CONN_STATE),
            // Redis 7.2, newer than the Redis this table is checked against; kept for the policy.
            conn("NO-TOUCH", NONE).with(CONN_STATE),
            admin("PAUSE", NONE),
            conn("REPLY", NONE).with(CONN_STATE),
            // Redis 7.2, like NO-TOUCH.
            conn("SETINFO", NONE).with(CONN_STATE),
            conn("SETNAME", NONE).with(CONN_STATE),
            conn("TRACKING", NONE).with(CONN_STATE),
            conn("TRACKINGINFO", NONE),
            admin("UNBLOCK", NONE),
            admin("UNPAUSE", NONE),
        ],
    ),
    container(
        "CLUSTER",
        &[
            admin("ADDSLOTS", NONE),
            admin("ADDSLOTSRANGE", NONE),
            admin("BUMPEPOCH", NONE),
            admin("COUNT-FAILURE-REPORTS", NONE),
            conn("COUNTKEYSINSLOT", NONE),
            admin("DELSLOTS", NONE),
            admin("DELSLOTSRANGE", NONE),
            admin("FAILOVER", NONE),
            admin("FLUSHSLOTS", NONE),
            admin("FORGET", NONE),
            conn("GETKEYSINSLOT", NONE),
            conn("HELP", NONE),
            conn("INFO", NONE),
            conn("KEYSLOT", NONE),
            conn("LINKS", NONE),
            admin("MEET", NONE),
            conn("MYID", NONE),
            conn("NODES", NONE),
            admin("REPLICAS", NONE),
            admin("REPLICATE", NONE),
            admin("RESET", NONE),
            admin("SAVECONFIG", NONE),
            admin("SET-CONFIG-EPOCH", NONE),
            admin("SETSLOT", NONE),
            conn("SHARDS", NONE),
            admin("SLAVES", NONE),
            conn("SLOTS", NONE),
        ],
    ),
    container(
        "COMMAND",
        &[
            conn("COUNT", NONE),
            conn("DOCS", NONE),
            conn("GETKEYS", NONE),
            conn("GETKEYSANDFLAGS", NONE),
            conn("HELP", NONE),
            conn("INFO", NONE),
            conn("LIST", NONE),
        ],
    ),
    container(
        "CONFIG",
        &[
            admin("GET", NONE),
            conn("HELP", NONE),
            admin("RESETSTAT", NONE),
            admin("REWRITE", NONE),
            admin("SET", NONE),
        ],
    ),
    write("COPY", at(1, 2, 1)),
    read("DBSIZE", NONE),
    admin("DEBUG", NONE).with(KEYSPACE),
    write("DECR", at(1, 1, 1)),
    write("DECRBY", at(1, 1, 1)),
    write("DEL", at(1, -1, 1)),
    conn("DISCARD", NONE).with(CONN_STATE),
    read("DUMP", at(1, 1, 1)),
    conn("ECHO", NONE).with(RESEND),
    // Scripts: Redis flags EVAL, EVALSHA and FCALL neither readonly nor write; a script may write, so here they do.
    // Their keys are the declared ones, but a script may write a key it got in ARGV: see `Flags::SCRIPT`.
    write("EVAL", Keys::NumKeys { at: 2 }).with(SCRIPT),
    write("EVALSHA", Keys::NumKeys { at: 2 }).with(SCRIPT),
    read("EVALSHA_RO", Keys::NumKeys { at: 2 }),
    read("EVAL_RO", Keys::NumKeys { at: 2 }),
    conn("EXEC", NONE).with(CONN_STATE),
    read("EXISTS", at(1, -1, 1)),
    write("EXPIRE", at(1, 1, 1)),
    write("EXPIREAT", at(1, 1, 1)),
    read("EXPIRETIME", at(1, 1, 1)),
    admin("FAILOVER", NONE).with(KEYSPACE),
    write("FCALL", Keys::NumKeys { at: 2 }).with(SCRIPT),
    read("FCALL_RO", Keys::NumKeys { at: 2 }),
    write("FLUSHALL", NONE).with(KEYSPACE),
    write("FLUSHDB", NONE).with(KEYSPACE),
    container(
        "FUNCTION",
        &[
            write("DELETE", NONE),
            conn("DUMP", NONE),
            write("FLUSH", NONE),
            conn("HELP", NONE),
            conn("KILL", NONE),
            conn("LIST", NONE),
            write("LOAD", NONE),
            write("RESTORE", NONE),
            conn("STATS", NONE),
        ],
    ),
    write("GEOADD", at(1, 1, 1)),
    read("GEODIST", at(1, 1, 1)),
    read("GEOHASH", at(1, 1, 1)),
    read("GEOPOS", at(1, 1, 1)),
    write("GEORADIUS", Keys::Movable { first: 1 }),
    write("GEORADIUSBYMEMBER", Keys::Movable { first: 1 }),
    read("GEORADIUSBYMEMBER_RO", at(1, 1, 1)),
    read("GEORADIUS_RO", at(1, 1, 1)),
    read("GEOSEARCH", at(1, 1, 1)),
    write("GEOSEARCHSTORE", at(1, 2, 1)),
    read("GET", at(1, 1, 1)).cached(Cached::String),
    read("GETBIT", at(1, 1, 1)),
    write("GETDEL", at(1, 1, 1)),
    write("GETEX", at(1, 1, 1)),
    read("GETRANGE", at(1, 1, 1)),
    write("GETSET", at(1, 1, 1)),
    write("HDEL", at(1, 1, 1)),
    conn("HELLO", NONE).with(CONN_STATE),
    read("HEXISTS", at(1, 1, 1)),
    read("HGET", at(1, 1, 1)).cached(Cached::HashField),
    read("HGETALL", at(1, 1, 1)).cached(Cached::Hash),
    write("HINCRBY", at(1, 1, 1)),
    write("HINCRBYFLOAT", at(1, 1, 1)),
    read("HKEYS", at(1, 1, 1)),
    read("HLEN", at(1, 1, 1)),
    read("HMGET", at(1, 1, 1)),
    write("HMSET", at(1, 1, 1)),
    read("HRANDFIELD", at(1, 1, 1)),
    read("HSCAN", at(1, 1, 1)),
    write("HSET", at(1, 1, 1)),
    write("HSETNX", at(1, 1, 1)),
    read("HSTRLEN", at(1, 1, 1)),
    read("HVALS", at(1, 1, 1)),
    write("INCR", at(1, 1, 1)),
    write("INCRBY", at(1, 1, 1)),
    write("INCRBYFLOAT", at(1, 1, 1)),
    conn("INFO", NONE),
    read("KEYS", NONE),
    conn("LASTSAVE", NONE),
    container(
        "LATENCY",
        &[
            admin("DOCTOR", NONE),
            admin("GRAPH", NONE),
            conn("HELP", NONE),
            admin("HISTOGRAM", NONE),
            admin("HISTORY", NONE),
            admin("LATEST", NONE),
            admin("RESET", NONE),
        ],
    ),
    read("LCS", at(1, 2, 1)),
    read("LINDEX", at(1, 1, 1)),
    write("LINSERT", at(1, 1, 1)),
    read("LLEN", at(1, 1, 1)),
    write("LMOVE", at(1, 2, 1)),
    write("LMPOP", Keys::NumKeys { at: 1 }),
    read("LOLWUT", NONE),
    write("LPOP", at(1, 1, 1)),
    read("LPOS", at(1, 1, 1)),
    write("LPUSH", at(1, 1, 1)),
    write("LPUSHX", at(1, 1, 1)),
    read("LRANGE", at(1, 1, 1)),
    write("LREM", at(1, 1, 1)),
    write("LSET", at(1, 1, 1)),
    write("LTRIM", at(1, 1, 1)),
    container(
        "MEMORY",
        &[
            conn("DOCTOR", NONE),
            conn("HELP", NONE),
            conn("MALLOC-STATS", NONE),
            conn("PURGE", NONE),
            conn("STATS", NONE),
            read("USAGE", at(2, 2, 1)),
        ],
    ),
    read("MGET", at(1, -1, 1)).cached(Cached::Strings),
    write("MIGRATE", Keys::Movable { first: 3 }),
    container(
        "MODULE",
        &[
            conn("HELP", NONE),
            admin("LIST", NONE),
            admin("LOAD", NONE),
            admin("LOADEX", NONE),
            admin("UNLOAD", NONE),
        ],
    ),
    admin("MONITOR", NONE).with(PUSHES),
    write("MOVE", at(1, 1, 1)),
    write("MSET", at(1, -1, 2)),
    write("MSETNX", at(1, -1, 2)),
    conn("MULTI", NONE).with(CONN_STATE),
    container(
        "OBJECT",
        &[
            read("ENCODING", at(2, 2, 1)),
            read("FREQ", at(2, 2, 1)),
            conn("HELP", NONE),
            read("IDLETIME", at(2, 2, 1)),
            read("REFCOUNT", at(2, 2, 1)),
        ],
    ),
    write("PERSIST", at(1, 1, 1)),
    write("PEXPIRE", at(1, 1, 1)),
    write("PEXPIREAT", at(1, 1, 1)),
    read("PEXPIRETIME", at(1, 1, 1)),
    write("PFADD", at(1, 1, 1)),
    read("PFCOUNT", at(1, -1, 1)),
    write("PFDEBUG", at(2, 2, 1)),
    write("PFMERGE", at(1, -1, 1)),
    admin("PFSELFTEST", NONE),
    conn("PING", NONE).with(RESEND),
    write("PSETEX", at(1, 1, 1)),
    conn("PSUBSCRIBE", NONE).with(PUSHES),
    admin("PSYNC", NONE).with(PUSHES),
    read("PTTL", at(1, 1, 1)),
    conn("PUBLISH", NONE),
    container(
        "PUBSUB",
        &[
            conn("CHANNELS", NONE),
            conn("HELP", NONE),
            conn("NUMPAT", NONE),
            conn("NUMSUB", NONE),
            conn("SHARDCHANNELS", NONE),
            conn("SHARDNUMSUB", NONE),
        ],
    ),
    conn("PUNSUBSCRIBE", NONE).with(PUSHES),
    conn("QUIT", NONE).with(CONN_STATE),
    read("RANDOMKEY", NONE),
    conn("READONLY", NONE).with(CONN_STATE),
    conn("READWRITE", NONE).with(CONN_STATE),
    write("RENAME", at(1, 2, 1)),
    write("RENAMENX", at(1, 2, 1)),
    admin("REPLCONF", NONE),
    admin("REPLICAOF", NONE).with(KEYSPACE),
    conn("RESET", NONE).with(CONN_STATE),
    write("RESTORE", at(1, 1, 1)),
    write("RESTORE-ASKING", at(1, 1, 1)),
    conn("ROLE", NONE),
    write("RPOP", at(1, 1, 1)),
    write("RPOPLPUSH", at(1, 2, 1)),
    write("RPUSH", at(1, 1, 1)),
    write("RPUSHX", at(1, 1, 1)),
    write("SADD", at(1, 1, 1)),
    admin("SAVE", NONE),
    read("SCAN", NONE),
    read("SCARD", at(1, 1, 1)),
    container(
        "SCRIPT",
        &[
            conn("DEBUG", NONE),
            conn("EXISTS", NONE),
            conn("FLUSH", NONE),
            conn("HELP", NONE),
            conn("KILL", NONE),
            conn("LOAD", NONE),
        ],
    ),
    read("SDIFF", at(1, -1, 1)),
    write("SDIFFSTORE", at(1, -1, 1)),
    conn("SELECT", NONE).with(CONN_STATE),
    write("SET", at(1, 1, 1)),
    write("SETBIT", at(1, 1, 1)),
    write("SETEX", at(1, 1, 1)),
    write("SETNX", at(1, 1, 1)),
    write("SETRANGE", at(1, 1, 1)),
    admin("SHUTDOWN", NONE),
    read("SINTER", at(1, -1, 1)),
    read("SINTERCARD", Keys::NumKeys { at: 1 }),
    write("SINTERSTORE", at(1, -1, 1)),
    read("SISMEMBER", at(1, 1, 1)),
    admin("SLAVEOF", NONE).with(KEYSPACE),
    container(
        "SLOWLOG",
        &[
            admin("GET", NONE),
            conn("HELP", NONE),
            admin("LEN", NONE),
            admin("RESET", NONE),
        ],
    ),
    read("SMEMBERS", at(1, 1, 1)),
    read("SMISMEMBER", at(1, 1, 1)),
    write("SMOVE", at(1, 2, 1)),
    write("SORT", Keys::Movable { first: 1 }),
    read("SORT_RO", Keys::Movable { first: 1 }),
    write("SPOP", at(1, 1, 1)),
    conn("SPUBLISH", at(1, 1, 1)),
    read("SRANDMEMBER", at(1, 1, 1)),
    write("SREM", at(1, 1, 1)),
    read("SSCAN", at(1, 1, 1)),
    conn("SSUBSCRIBE", at(1, -1, 1)).with(PUSHES),
    read("STRLEN", at(1, 1, 1)),
    conn("SUBSCRIBE", NONE).with(PUSHES),
    read("SUBSTR", at(1, 1, 1)),
    read("SUNION", at(1, -1, 1)),
    write("SUNIONSTORE", at(1, -1, 1)),
    conn("SUNSUBSCRIBE", at(1, -1, 1)).with(PUSHES),
    write("SWAPDB", NONE).with(KEYSPACE),
    admin("SYNC", NONE).with(PUSHES),
    conn("TIME", NONE).with(RESEND),
    read("TOUCH", at(1, -1, 1)),
    read("TTL", at(1, 1, 1)),
    read("TYPE", at(1, 1, 1)),
    write("UNLINK", at(1, -1, 1)),
    conn("UNSUBSCRIBE", NONE).with(PUSHES),
    conn("UNWATCH", NONE).with(CONN_STATE),
    // Redis does not flag WAIT `blocking`, but it holds the connection until replicas answer or it times out.
    conn("WAIT", NONE).with(BLOCKING),
    // Redis 7.2; blocks like WAIT.
    conn("WAITAOF", NONE).with(BLOCKING),
    conn("WATCH", at(1, -1, 1)).with(CONN_STATE),
    write("XACK", at(1, 1, 1)),
    write("XADD", at(1, 1, 1)),
    write("XAUTOCLAIM", at(1, 1, 1)),
    write("XCLAIM", at(1, 1, 1)),
    write("XDEL", at(1, 1, 1)),
    container(
        "XGROUP",
        &[
            write("CREATE", at(2, 2, 1)),
            write("CREATECONSUMER", at(2, 2, 1)),
            write("DELCONSUMER", at(2, 2, 1)),
            write("DESTROY", at(2, 2, 1)),
            conn("HELP", NONE),
            write("SETID", at(2, 2, 1)),
        ],
    ),
    container(
        "XINFO",
        &[
            read("CONSUMERS", at(2, 2, 1)),
            read("GROUPS", at(2, 2, 1)),
            conn("HELP", NONE),
            read("STREAM", at(2, 2, 1)),
        ],
    ),
    read("XLEN", at(1, 1, 1)),
    read("XPENDING", at(1, 1, 1)),
    read("XRANGE", at(1, 1, 1)),
    // Redis flags XREAD and XREADGROUP `blocking`; they block only with BLOCK, which the policy looks for.
    read("XREAD", Keys::Streams { from: 1 }).with(BLOCK_OPTION).no_resend(),
    write("XREADGROUP", Keys::Streams { from: 4 }).with(BLOCK_OPTION),
    read("XREVRANGE", at(1, 1, 1)),
    write("XSETID", at(1, 1, 1)),
    write("XTRIM", at(1, 1, 1)),
    write("ZADD", at(1, 1, 1)),
    read("ZCARD", at(1, 1, 1)),
    read("ZCOUNT", at(1, 1, 1)),
    read("ZDIFF", Keys::NumKeys { at: 1 }),
    write("ZDIFFSTORE", Keys::DestNumKeys),
    write("ZINCRBY", at(1, 1, 1)),
    read("ZINTER", Keys::NumKeys { at: 1 }),
    read("ZINTERCARD", Keys::NumKeys { at: 1 }),
    write("ZINTERSTORE", Keys::DestNumKeys),
    read("ZLEXCOUNT", at(1, 1, 1)),
    write("ZMPOP", Keys::NumKeys { at: 1 }),
    read("ZMSCORE", at(1, 1, 1)),
    write("ZPOPMAX", at(1, 1, 1)),
    write("ZPOPMIN", at(1, 1, 1)),
    read("ZRANDMEMBER", at(1, 1, 1)),
    read("ZRANGE", at(1, 1, 1)),
    read("ZRANGEBYLEX", at(1, 1, 1)),
    read("ZRANGEBYSCORE", at(1, 1, 1)),
    write("ZRANGESTORE", at(1, 2, 1)),
    read("ZRANK", at(1, 1, 1)),
    write("ZREM", at(1, 1, 1)),
    write("ZREMRANGEBYLEX", at(1, 1, 1)),
    write("ZREMRANGEBYRANK", at(1, 1, 1)),
    write("ZREMRANGEBYSCORE", at(1, 1, 1)),
    read("ZREVRANGE", at(1, 1, 1)),
    read("ZREVRANGEBYLEX", at(1, 1, 1)),
    read("ZREVRANGEBYSCORE", at(1, 1, 1)),
    read("ZREVRANK", at(1, 1, 1)),
    read("ZSCAN", at(1, 1, 1)),
    read("ZSCORE", at(1, 1, 1)),
    read("ZUNION", Keys::NumKeys { at: 1 }),
    write("ZUNIONSTORE", Keys::DestNumKeys),
];
