//! The command table: one place that says, per Redis command (and per subcommand where it matters), what the
//! command does, as far as redguard cares.
//!
//! Every user of a raw command's meaning asks here: the standalone backend whether a command may be sent again
//! after a dropped connection ([`Command::resend`]), the raw-command path which cached keys a command may have
//! changed ([`Command::kind`], [`Command::keys`], [`Flags::KEYSPACE`], [`Flags::SCRIPT`]), the policy which commands
//! can never share the one connection ([`Flags::CONN_STATE`], [`Flags::BLOCKING`], [`Flags::BLOCK_OPTION`],
//! [`Flags::PUSHES`], from which the policy derives its built-in denials), cluster routing which key to hash
//! ([`first_key`], [`key_slot`]), and the metrics a bounded label ([`canonical_name`]).
//!
//! The rows (`table.rs`) follow Redis 7.0's `COMMAND INFO`: read/write/admin from its flags, key positions from its
//! key specs. `tests/commands.rs` asks a real redis-server and fails where the two disagree, except for the
//! deliberate differences it lists. Lookup is a binary search over a sorted static slice, comparing the
//! caller's bytes case-insensitively in place: no allocation.

mod table;

use std::cmp::Ordering;
use std::sync::LazyLock;

/// What a command does to the data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Reads keys, changes nothing (Redis's `readonly` flag).
    Read,
    /// May change keys (Redis's `write` flag; scripts too, which Redis flags neither way).
    Write,
    /// Server administration that reads and writes no keys (Redis's `admin` flag).
    Admin,
    /// Connection, server, pub/sub or scripting control: no keys read or written (none of those flags).
    Connection,
}

/// Properties of a command beyond its kind. A small bit set; combine with [`Flags::with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags(u16);

impl Flags {
    pub const NONE: Flags = Flags(0);
    /// Safe to send again after the connection dropped under it: sending it twice changes nothing.
    pub const RESEND: Flags = Flags(1);
    /// Always may block the connection until something happens (BLPOP, WAIT).
    pub const BLOCKING: Flags = Flags(1 << 1);
    /// Blocks only with its `BLOCK` option (XREAD, XREADGROUP).
    pub const BLOCK_OPTION: Flags = Flags(1 << 2);
    /// Changes the state of the connection it is sent on (MULTI, SELECT, CLIENT REPLY).
    pub const CONN_STATE: Flags = Flags(1 << 3);
    /// Turns the connection into a stream of pushes: the subscribe commands, MONITOR, SYNC.
    pub const PUSHES: Flags = Flags(1 << 4);
    /// Changes keys it does not name, possibly all of them (FLUSHDB, SWAPDB, REPLICAOF).
    pub const KEYSPACE: Flags = Flags(1 << 5);
    /// Runs code: may touch keys it was given only as arguments, and may have written before an error.
    pub const SCRIPT: Flags = Flags(1 << 6);

    pub const fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

/// How a command's reply can stand in for Redis while Redis is away (the fallback cache's entry kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    /// GET: one string value.
    String,
    /// HGET: one field of a hash.
    HashField,
    /// HGETALL: a whole hash.
    Hash,
    /// MGET: one string value per key.
    Strings,
}

/// Where a command's keys are among its arguments (position 0 is the command name), as Redis's key specs say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// No keys.
    None,
    /// Positions `first..=last` every `step`; a negative `last` counts from the end (-1: the last argument).
    /// Redis's legacy (first key, last key, step) triple.
    Range { first: u8, last: i8, step: u8 },
    /// A count at position `at`, then that many keys (EVAL, FCALL, ZUNION, LMPOP).
    NumKeys { at: u8 },
    /// A destination key at 1, then a count at 2 and that many keys (ZUNIONSTORE, ZINTERSTORE, ZDIFFSTORE).
    DestNumKeys,
    /// After the first `STREAMS` at or past position `from`: the first half of the remaining arguments (XREAD).
    Streams { from: u8 },
    /// Keys at places the table does not model (SORT's STORE, GEORADIUS's STORE, MIGRATE's KEYS); `first` is the
    /// position of a key always present.
    Movable { first: u8 },
}

/// One row of the table: a command, or one subcommand of a container command (CLIENT, OBJECT, XINFO ...).
#[derive(Debug)]
pub struct Command {
    /// Uppercase; for a subcommand, the second word only.
    pub name: &'static str,
    pub kind: Kind,
    pub flags: Flags,
    pub keys: Keys,
    /// Whether (and as what) its reply may answer for Redis from the fallback cache.
    pub cached: Option<Cached>,
    /// The subcommands, sorted, for a container command (whose own row then says nothing else).
    pub subs: &'static [Command],
}

/// A command's arguments, the name first, with random access: a slice of byte strings or a built `redis::Cmd`.
pub trait Args {
    fn arg_count(&self) -> usize;
    fn arg_at(&self, i: usize) -> Option<&[u8]>;
}

impl<A: AsRef<[u8]>> Args for [A] {
    fn arg_count(&self) -> usize {
        self.len()
    }

    fn arg_at(&self, i: usize) -> Option<&[u8]> {
        self.get(i).map(AsRef::as_ref)
    }
}

impl<A: AsRef<[u8]>, const N: usize> Args for [A; N] {
    fn arg_count(&self) -> usize {
        N
    }

    fn arg_at(&self, i: usize) -> Option<&[u8]> {
        self.as_slice().arg_at(i)
    }
}

impl Args for redis::Cmd {
    fn arg_count(&self) -> usize {
        self.args_iter().len()
    }

    fn arg_at(&self, i: usize) -> Option<&[u8]> {
        self.args_iter().nth(i).map(|a| match a {
            redis::Arg::Simple(bytes) => bytes,
            // A SCAN cursor, which no key position ever is.
            _ => &b""[..],
        })
    }
}

impl Command {
    pub const fn is(&self, flags: Flags) -> bool {
        self.flags.contains(flags)
    }

    /// Safe to send again after the connection dropped under it.
    pub const fn resend(&self) -> bool {
        self.is(Flags::RESEND)
    }

    /// The positions of the keys of this command in `args`, or `None` when they cannot be known from the table
    /// ([`Keys::Movable`]) or the arguments are malformed (a count that is not a number or exceeds the
    /// arguments; Redis refuses such a command).
    pub fn keys<A: Args + ?Sized>(&self, args: &A) -> Option<KeyPositions> {
        let len = args.arg_count();
        let numkeys = |at: usize| -> Option<KeyPositions> {
            let n: usize = std::str::from_utf8(args.arg_at(at)?).ok()?.parse().ok()?;
            let end = (at + 1).checked_add(n).filter(|&end| end <= len)?;
            Some(KeyPositions::range(at + 1, end, 1))
        };
        match self.keys {
            Keys::None => Some(KeyPositions::range(0, 0, 1)),
            Keys::Range { first, last, step } => {
                let first = usize::from(first);
                let end = if last < 0 {
                    (len + 1).saturating_sub(usize::from(last.unsigned_abs()))
                } else {
                    (usize::from(last.unsigned_abs()) + 1).min(len)
                };
                Some(KeyPositions::range(first, end, usize::from(step.max(1))))
            }
            Keys::NumKeys { at } => numkeys(usize::from(at)),
            Keys::DestNumKeys => {
                let mut keys = numkeys(2)?;
                keys.single = Some(1);
                Some(keys)
            }
            Keys::Streams { from } => {
                let at = (usize::from(from)..len)
                    .find(|&i| args.arg_at(i).is_some_and(|a| a.eq_ignore_ascii_case(b"STREAMS")))?;
                let rest = len - at - 1;
                (rest > 0 && rest.is_multiple_of(2)).then(|| KeyPositions::range(at + 1, at + 1 + rest / 2, 1))
            }
            Keys::Movable { .. } => None,
        }
    }
}

/// The argument positions of a command's keys, in order.
#[derive(Debug, Clone)]
pub struct KeyPositions {
    single: Option<usize>,
    next: usize,
    end: usize,
    step: usize,
}

impl KeyPositions {
    fn range(next: usize, end: usize, step: usize) -> KeyPositions {
        KeyPositions {
            single: None,
            next,
            end,
            step,
        }
    }
}

impl Iterator for KeyPositions {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if let Some(i) = self.single.take() {
            return Some(i);
        }
        (self.next < self.end).then(|| {
            let i = self.next;
            self.next += self.step;
            i
        })
    }
}

/// Compares `name` (uppercase) with `input` uppercased, byte by byte, without copying.
fn cmp_upper(name: &str, input: &[u8]) -> Ordering {
    name.bytes().cmp(input.iter().map(u8::to_ascii_uppercase))
}

fn search(rows: &'static [Command], name: &[u8]) -> Option<&'static Command> {
    rows.binary_search_by(|row| cmp_upper(row.name, name))
        .ok()
        .map(|i| &rows[i])
}

/// Slots of [`INDEX`]: a power of two, over four times the rows, so a name is mostly found at its first probe.
const INDEX_SLOTS: usize = 1024;

/// The longest command name in the table: a longer name is no command, and is not even hashed.
const LONGEST_NAME: usize = longest_name(table::ROWS);

const fn longest_name(rows: &[Command]) -> usize {
    let (mut i, mut longest) = (0, 0);
    while i < rows.len() {
        if rows[i].name.len() > longest {
            longest = rows[i].name.len();
        }
        i += 1;
    }
    longest
}

/// A hash index from a command name to its row's position (plus one; 0 is an empty slot), built on first use.
/// Why not a binary search: a request's command is looked up several times (the policy, the metrics, the
/// cacheable reads, the cache's bookkeeping), and a case-insensitive binary search cost about 300 instructions
/// a lookup (callgrind, a GET on the RESP socket); hashing a short name and one comparison cost a fraction.
static INDEX: LazyLock<Box<[u16; INDEX_SLOTS]>> = LazyLock::new(|| {
    let mut index = Box::new([0u16; INDEX_SLOTS]);
    for (i, row) in table::COMMANDS.iter().enumerate() {
        let mut slot = name_hash(row.name.as_bytes());
        while index[slot] != 0 {
            slot = (slot + 1) % INDEX_SLOTS;
        }
        index[slot] = u16::try_from(i + 1).expect("fewer than 65535 rows");
    }
    index
});

/// FNV-1a of the name's uppercase bytes, reduced to a slot of [`INDEX`].
fn name_hash(name: &[u8]) -> usize {
    let hash = name.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b.to_ascii_uppercase())).wrapping_mul(0x0100_0193)
    });
    hash as usize % INDEX_SLOTS
}

/// Every row, sorted by name (for tests and documentation).
pub fn all() -> &'static [Command] {
    table::COMMANDS
}

/// The row of the command called `name` (any case). For a container command (CLIENT, OBJECT ...) this is the
/// container's row; [`lookup`] finds the subcommand's.
pub fn find(name: &[u8]) -> Option<&'static Command> {
    position(name).map(|i| &table::COMMANDS[i])
}

/// The position of the command called `name` (any case) in [`all`]: an index for arrays kept per command (the
/// RESP socket's metrics, the policy's verdicts).
pub fn position(name: &[u8]) -> Option<usize> {
    if name.len() > LONGEST_NAME {
        return None;
    }
    let index = &**INDEX;
    let mut slot = name_hash(name);
    // The table has fewer rows than slots, so an empty slot ends every probe sequence within INDEX_SLOTS steps.
    for _ in 0..INDEX_SLOTS {
        let i = usize::from(index[slot].checked_sub(1)?);
        if table::COMMANDS[i].name.as_bytes().eq_ignore_ascii_case(name) {
            return Some(i);
        }
        slot = (slot + 1) % INDEX_SLOTS;
    }
    None
}

/// The row that describes the command `args` (name first): its subcommand's row for a container command.
/// `None` when the command, or a container's subcommand, is not in the table.
pub fn lookup<A: Args + ?Sized>(args: &A) -> Option<&'static Command> {
    row_at(position(args.arg_at(0)?), args)
}

/// What [`lookup`] gives, for a caller that already holds the name's [`position`]: the RESP socket finds it once
/// per command and hands it to the policy, the metrics and the cache, instead of hashing the name for each.
pub fn row_at<A: Args + ?Sized>(position: Option<usize>, args: &A) -> Option<&'static Command> {
    let row = table::COMMANDS.get(position?)?;
    if row.subs.is_empty() {
        Some(row)
    } else {
        search(row.subs, args.arg_at(1)?)
    }
}

/// The table's own spelling of a command name (`"get"` gives `"GET"`), or `None` for a command not in the
/// table: a bounded set of values, fit for a metric label.
pub fn canonical_name(name: &[u8]) -> Option<&'static str> {
    find(name).map(|row| row.name)
}

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The hash slot of a key, per the Redis Cluster spec: CRC16 (XMODEM) of the key, or of its hash tag (the part
/// between the first `{` and the next `}`, if not empty), modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % SLOTS
}

/// The key a cluster routes `args` by: the first of the keys the table gives; none for a command the table
/// says has no keys (PING, TIME, EVAL with 0 keys); the argument after the name for a command the table does
/// not know or whose keys it cannot tell.
pub fn first_key<A: Args + ?Sized>(args: &A) -> Option<&[u8]> {
    match lookup(args) {
        Some(row) => match (row.keys(args), row.keys) {
            (Some(mut keys), _) => keys.next().and_then(|i| args.arg_at(i)),
            (None, Keys::Movable { first }) => args.arg_at(usize::from(first)),
            (None, _) => args.arg_at(1),
        },
        None => args.arg_at(1),
    }
}

/// The slot of the command `args` by [`first_key`], or `None` for a keyless command.
pub fn slot<A: Args + ?Sized>(args: &A) -> Option<u16> {
    first_key(args).map(key_slot)
}

#[cfg(test)]
mod tests;
