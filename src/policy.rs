//! The command policy: which Redis commands applications may send through redguard.
//!
//! A rule names a command (`FLUSHALL`) or a command and one subcommand (`CLUSTER ADDSLOTS`, matched against
//! the first argument). For `XREAD` and `XREADGROUP` the second word is matched against their options too, so
//! `XREAD BLOCK` catches `XREAD COUNT 5 BLOCK 0 STREAMS ..`. Names are compared case-insensitively.
//!
//! A command passes when all three hold:
//! 1. no built-in rule forbids it ([`always_denied`], read from the command table: commands that would block,
//!    take over or change the state of the one connection every request shares; no configuration can let them
//!    through). The one exception: on the RESP socket a blocking command or a subscription runs on a Redis
//!    connection of its own, where that reason does not hold, and is judged without them
//!    ([`Policy::check_own_connection`]);
//! 2. no `api.commands.deny` rule matches it (default [`default_deny`]);
//! 3. `api.commands.allow` is unset, or one of its rules matches it.
//!
//! So deny always wins, and `allow` can only narrow what `deny` leaves. The policy judges what the application
//! asks for, raw or typed (a typed op by the command it sends, [`crate::op::OpName::command`]); commands redguard
//! sends for itself (recovery probes, the rate limiter's script) are not the application's and are not judged.
//! This module is pure: no I/O, no configuration parsing beyond the rule syntax.

use std::collections::HashMap;
use std::fmt;

use crate::commands::{self, Command, Flags};

/// Why the command table says a command can never share the one connection every request uses.
///
/// A command that changes that connection's state would change it for every other caller (MULTI would pull
/// their commands into a transaction, SELECT would move them to another database, CLIENT REPLY OFF would
/// desynchronise every reply), a blocking command would stall every command queued behind it, and the subscribe
/// and replication commands turn the connection into a stream that request/response cannot carry.
/// `/v1/pipeline` with `"atomic": true` is the way to run a transaction. In the order the default deny list
/// shows them.
const NEVER: [Flags; 3] = [Flags::CONN_STATE, Flags::BLOCKING, Flags::PUSHES];

/// Whether the command table flags `row` as one that can never be sent (see [`NEVER`]).
fn never_sendable(row: &Command) -> bool {
    NEVER.iter().any(|&flag| row.is(flag))
}

/// The built-in denials, as rules: every command table row flagged `CONN_STATE`, `BLOCKING` or `PUSHES` (a
/// subcommand as `CLIENT REPLY`), and `XREAD BLOCK` / `XREADGROUP BLOCK` for rows flagged `BLOCK_OPTION`.
/// Grouped by flag, in table order within a group. Derived from the table, so a row and the policy cannot
/// disagree; no configuration can let these through.
pub(crate) fn always_denied() -> Vec<String> {
    let mut out = Vec::new();
    for flag in NEVER {
        for row in commands::all() {
            if row.is(flag) {
                out.push(row.name.to_owned());
            }
            if flag == Flags::BLOCKING && row.is(Flags::BLOCK_OPTION) {
                out.push(format!("{} BLOCK", row.name));
            }
            for sub in row.subs.iter().filter(|sub| sub.is(flag)) {
                out.push(format!("{} {}", row.name, sub.name));
            }
        }
    }
    out
}

/// Administrative commands denied unless the operator writes their own `api.commands.deny`. The default value
/// of that key is these plus [`always_denied`] (listed again so the default reads as the whole picture).
pub(crate) const ADMIN_DENIED: &[&str] = &[
    "FLUSHALL",
    "FLUSHDB",
    "SWAPDB",
    "CONFIG",
    "SHUTDOWN",
    "DEBUG",
    "REPLICAOF",
    "SLAVEOF",
    "MODULE",
    "ACL",
    "FAILOVER",
    "CLIENT KILL",
    "CLIENT PAUSE",
    "CLIENT UNPAUSE",
    "CLIENT UNBLOCK",
    // CLUSTER subcommands that change the topology; CLUSTER INFO, NODES, SLOTS, SHARDS, KEYSLOT ... pass.
    "CLUSTER ADDSLOTS",
    "CLUSTER ADDSLOTSRANGE",
    "CLUSTER DELSLOTS",
    "CLUSTER DELSLOTSRANGE",
    "CLUSTER FLUSHSLOTS",
    "CLUSTER SETSLOT",
    "CLUSTER MEET",
    "CLUSTER FORGET",
    "CLUSTER REPLICATE",
    "CLUSTER FAILOVER",
    "CLUSTER RESET",
    "CLUSTER BUMPEPOCH",
    "CLUSTER SET-CONFIG-EPOCH",
    "CLUSTER SAVECONFIG",
];

/// The default `api.commands.deny`: [`ADMIN_DENIED`] followed by [`always_denied`].
pub(crate) fn default_deny() -> Vec<String> {
    let mut deny: Vec<String> = ADMIN_DENIED.iter().map(|s| (*s).to_owned()).collect();
    deny.extend(always_denied());
    deny
}

/// One rule: a command, or a command and one subcommand or option. Stored uppercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    command: String,
    sub: Option<String>,
}

impl Rule {
    /// Parses `"FLUSHALL"` or `"cluster addslots"`. The error says what is wrong with `text`.
    pub(crate) fn parse(text: &str) -> Result<Rule, String> {
        let word_ok = |w: &str| w.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_|.".contains(&b));
        let words: Vec<&str> = text.split_ascii_whitespace().collect();
        match words.as_slice() {
            [command] if word_ok(command) => Ok(Rule {
                command: command.to_ascii_uppercase(),
                sub: None,
            }),
            [command, sub] if word_ok(command) && word_ok(sub) => Ok(Rule {
                command: command.to_ascii_uppercase(),
                sub: Some(sub.to_ascii_uppercase()),
            }),
            _ => Err(format!(
                "{text:?} is not a command name or a command and subcommand (like \"CLUSTER ADDSLOTS\")"
            )),
        }
    }

    /// Whether this rule can never be allowed: it is, or lies inside, a built-in denial ([`always_denied`]).
    pub(crate) fn is_always_denied(&self) -> bool {
        let Some(row) = commands::find(self.command.as_bytes()) else {
            return false;
        };
        match &self.sub {
            None => never_sendable(row),
            Some(sub) => {
                never_sendable(row)
                    || (row.is(Flags::BLOCK_OPTION) && sub == "BLOCK")
                    || commands::lookup(&[self.command.as_bytes(), sub.as_bytes()]).is_some_and(never_sendable)
            }
        }
    }
}

impl Rule {
    /// Whether this rule names a command the RESP socket runs on a Redis connection of its own: a blocking
    /// command, `XREAD BLOCK` / `XREADGROUP BLOCK`, or a subscription. Built-in denials keep these off the JSON
    /// API's shared connection, but an allow list may name them for the RESP socket.
    pub(crate) fn runs_on_own_connection(&self) -> bool {
        let Some(row) = commands::find(self.command.as_bytes()) else {
            return false;
        };
        match &self.sub {
            None => row.is(Flags::BLOCKING) || SUBSCRIBING.contains(&row.name),
            Some(sub) => row.is(Flags::BLOCK_OPTION) && sub == "BLOCK",
        }
    }
}

/// The commands that start subscribed mode on the RESP socket.
const SUBSCRIBING: [&str; 3] = ["SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE"];

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sub {
            Some(sub) => write!(f, "{} {sub}", self.command),
            None => f.write_str(&self.command),
        }
    }
}

/// The rules of one list, by command.
#[derive(Debug, Default)]
struct Rules(HashMap<String, Entry>);

#[derive(Debug, Default)]
struct Entry {
    /// The whole command matches.
    whole: bool,
    subs: Vec<String>,
}

impl Rules {
    fn new<'r>(rules: impl IntoIterator<Item = &'r Rule>) -> Rules {
        let mut map: HashMap<String, Entry> = HashMap::new();
        for rule in rules {
            let entry = map.entry(rule.command.clone()).or_default();
            match &rule.sub {
                Some(sub) => entry.subs.push(sub.clone()),
                None => entry.whole = true,
            }
        }
        Rules(map)
    }

    /// The rule that matches the command, shown as the caller should see it.
    fn find(&self, name: &str, args: &[&[u8]]) -> Option<String> {
        let entry = self.0.get(name)?;
        if entry.whole {
            return Some(name.to_owned());
        }
        let sub = entry
            .subs
            .iter()
            .find(|sub| qualifiers(name, args).any(|q| q.eq_ignore_ascii_case(sub.as_bytes())))?;
        Some(format!("{name} {sub}"))
    }
}

/// The words a two-word rule is matched against: the first argument, and for XREAD/XREADGROUP every option
/// keyword before STREAMS.
fn qualifiers<'a>(name: &str, args: &'a [&'a [u8]]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let first = args.get(1).copied();
    let options = matches!(name, "XREAD" | "XREADGROUP").then(|| stream_options(args));
    first.into_iter().chain(options.into_iter().flatten())
}

/// The option keywords of XREAD / XREADGROUP, skipping their values, up to STREAMS.
fn stream_options<'a>(args: &'a [&'a [u8]]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut i = 1;
    std::iter::from_fn(move || {
        let word = *args.get(i)?;
        let upper = word.to_ascii_uppercase();
        i += match upper.as_slice() {
            b"STREAMS" => return None,
            b"COUNT" | b"BLOCK" => 2,
            b"GROUP" => 3,
            // NOACK and anything unknown: step one word, so a misplaced BLOCK is still seen.
            _ => 1,
        };
        Some(word)
    })
}

/// The built-in denial `args` falls under, named as [`always_denied`] names it, if any: the command table's row
/// for the command (or its subcommand) is flagged as never sendable, or it is XREAD / XREADGROUP with `BLOCK`.
fn built_in_denial(name: &str, args: &[&[u8]]) -> Option<String> {
    let command = commands::find(args.first()?)?;
    if command.subs.is_empty() {
        if never_sendable(command) {
            return Some(name.to_owned());
        }
    } else {
        let sub = commands::lookup(args)?;
        return never_sendable(sub).then(|| format!("{name} {}", sub.name));
    }
    let row = command;
    (row.is(Flags::BLOCK_OPTION) && stream_options(args).any(|o| o.eq_ignore_ascii_case(b"BLOCK")))
        .then(|| format!("{name} BLOCK"))
}

/// Whether `args` is a command that blocks its connection until something happens: a row flagged `BLOCKING`
/// (BLPOP, WAIT ...), or XREAD / XREADGROUP with `BLOCK`. The RESP socket runs these on a connection of their own
/// ([`Policy::check_own_connection`]). `position` is the name's [`commands::position`], which the caller has
/// found already.
pub(crate) fn blocks<A: AsRef<[u8]>>(position: Option<usize>, args: &[A]) -> bool {
    let Some(row) = position.and_then(|i| commands::all().get(i)) else {
        return false;
    };
    if row.is(Flags::BLOCKING) || !row.is(Flags::BLOCK_OPTION) {
        return row.is(Flags::BLOCKING);
    }
    let args: Vec<&[u8]> = args.iter().map(AsRef::as_ref).collect();
    let with_block = stream_options(&args).any(|o| o.eq_ignore_ascii_case(b"BLOCK"));
    with_block
}

/// A command the policy refused, shown as its rule names it (`FLUSHALL`, `CLUSTER ADDSLOTS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denied {
    pub command: String,
}

/// The compiled policy. Cheap to consult: for most commands one command table lookup (see `passes`); for a
/// command some rule names, one uppercase copy of its name and a few map lookups.
#[derive(Debug)]
pub(crate) struct Policy {
    /// Per command table row ([`commands::position`]): the command passes whatever its arguments, because no
    /// rule and no built-in denial names it or one of its subcommands or options. Worked out once when the
    /// policy is built, so the commands every request sends skip the rule maps.
    passes: Vec<bool>,
    deny: Rules,
    /// The deny rules that are not built-in denials ([`Rule::is_always_denied`]): what judges a blocking command
    /// that runs on a connection of its own, where the reason for those denials does not hold.
    deny_own_connection: Rules,
    allow: Option<Rules>,
}

impl Policy {
    /// Builds the policy from already-parsed rules (see [`Rule::parse`]).
    pub(crate) fn new(deny_rules: &[Rule], allow: Option<&[Rule]>) -> Policy {
        let deny = Rules::new(deny_rules);
        let allow = allow.map(Rules::new);
        let passes = commands::all()
            .iter()
            .map(|row| {
                // Subcommands and XREAD's BLOCK are judged by their arguments.
                row.subs.is_empty()
                    && !never_sendable(row)
                    && !row.is(Flags::BLOCK_OPTION)
                    && !deny.0.contains_key(row.name)
                    && allow
                        .as_ref()
                        .is_none_or(|a| a.0.get(row.name).is_some_and(|e| e.whole))
            })
            .collect();
        Policy {
            passes,
            deny_own_connection: Rules::new(deny_rules.iter().filter(|r| !r.is_always_denied())),
            deny,
            allow,
        }
    }

    /// Builds the policy from config strings; the config has validated them already, so a bad one is skipped.
    pub(crate) fn from_config(deny: &[String], allow: Option<&[String]>) -> Policy {
        let parse = |list: &[String]| list.iter().filter_map(|s| Rule::parse(s).ok()).collect::<Vec<_>>();
        let allow = allow.map(parse);
        Policy::new(&parse(deny), allow.as_deref())
    }

    /// Judges one command given as its arguments, the command name first.
    pub(crate) fn check<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<(), Denied> {
        self.check_at(args.first().and_then(|name| commands::position(name.as_ref())), args)
    }

    /// [`Policy::check`], for a caller that holds the name's [`commands::position`] already.
    pub(crate) fn check_at<A: AsRef<[u8]>>(&self, position: Option<usize>, args: &[A]) -> Result<(), Denied> {
        if position.is_some_and(|i| self.passes.get(i) == Some(&true)) {
            return Ok(());
        }
        self.judge(args, false)
    }

    /// Judges a command that will run on a connection of its own (a blocking command, [`blocks`], or a
    /// subscription on the RESP socket): the built-in denials, which protect the one shared connection, do not
    /// apply; every other rule does (deny still wins).
    pub(crate) fn check_own_connection<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<(), Denied> {
        self.judge(args, true)
    }

    fn judge<A: AsRef<[u8]>>(&self, args: &[A], own_connection: bool) -> Result<(), Denied> {
        let args: Vec<&[u8]> = args.iter().map(AsRef::as_ref).collect();
        let Some(first) = args.first() else {
            return Ok(());
        };
        let name = String::from_utf8_lossy(first).to_ascii_uppercase();
        let denied = if own_connection {
            self.deny_own_connection.find(&name, &args)
        } else {
            built_in_denial(&name, &args).or_else(|| self.deny.find(&name, &args))
        };
        if let Some(command) = denied {
            return Err(Denied { command });
        }
        match &self.allow {
            Some(allow) if allow.find(&name, &args).is_none() => {
                // Name the subcommand too when the allow list only lets some subcommands of this command pass.
                let partly = allow.0.get(&name).is_some_and(|e| !e.subs.is_empty());
                let command = match args.get(1) {
                    Some(sub) if partly => format!("{name} {}", String::from_utf8_lossy(sub).to_ascii_uppercase()),
                    _ => name,
                };
                Err(Denied { command })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocking_command_on_its_own_connection_is_judged_by_every_rule_but_the_built_in_ones() {
        let policy = Policy::from_config(&[default_deny(), vec!["XREADGROUP".to_owned()]].concat(), None);
        for line in [
            "BLPOP l 0",
            "XREAD COUNT 1 BLOCK 0 STREAMS s $",
            "blmove a b LEFT RIGHT 0",
            "WAIT 1 0",
        ] {
            let args: Vec<&str> = line.split(' ').collect();
            assert!(blocks(commands::position(args[0].as_bytes()), &args), "{line}");
            assert!(
                policy.check(&args).is_err(),
                "{line}: the shared connection never takes it"
            );
            assert_eq!(policy.check_own_connection(&args), Ok(()), "{line}");
        }
        // A rule the operator wrote still wins (a rule naming a built-in denial itself cannot be told from the
        // default list's); so does an allow list.
        assert!(policy
            .check_own_connection(&["XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">"])
            .is_err());
        let narrow = Policy::from_config(&default_deny(), Some(&["GET".to_owned()]));
        assert!(narrow.check_own_connection(&["BLPOP", "l", "0"]).is_err());
        for line in [
            "XREAD COUNT 1 STREAMS s 0",
            "GET k",
            "LPOP l",
            "SUBSCRIBE c",
            "GET BLOCK",
            "SET BLOCK 1",
        ] {
            let args: Vec<&str> = line.split(' ').collect();
            assert!(!blocks(commands::position(args[0].as_bytes()), &args), "{line}");
        }
    }

    fn rules(list: &[&str]) -> Vec<Rule> {
        list.iter().map(|s| Rule::parse(s).unwrap()).collect()
    }

    fn default_policy() -> Policy {
        Policy::from_config(&default_deny(), None)
    }

    fn denied(p: &Policy, line: &str) -> Option<String> {
        let args: Vec<&str> = line.split(' ').collect();
        p.check(&args).err().map(|d| d.command)
    }

    #[test]
    fn the_default_denies_admin_blocking_subscribe_and_connection_state_commands() {
        let p = default_policy();
        for (line, shown) in [
            ("FLUSHALL", "FLUSHALL"),
            ("flushdb ASYNC", "FLUSHDB"),
            ("Config get maxmemory", "CONFIG"),
            ("SHUTDOWN NOSAVE", "SHUTDOWN"),
            ("debug sleep 0", "DEBUG"),
            ("REPLICAOF host 6379", "REPLICAOF"),
            ("ACL WHOAMI", "ACL"),
            ("BLPOP q 0", "BLPOP"),
            ("bzmpop 0 1 z MIN", "BZMPOP"),
            ("WAIT 1 0", "WAIT"),
            ("subscribe ch", "SUBSCRIBE"),
            ("SUNSUBSCRIBE", "SUNSUBSCRIBE"),
            ("MULTI", "MULTI"),
            ("exec", "EXEC"),
            ("watch k", "WATCH"),
            ("SELECT 2", "SELECT"),
            ("client reply OFF", "CLIENT REPLY"),
            ("cluster addslots 1 2", "CLUSTER ADDSLOTS"),
            ("CLUSTER setslot 1 NODE x", "CLUSTER SETSLOT"),
            ("cluster Reset HARD", "CLUSTER RESET"),
        ] {
            assert_eq!(denied(&p, line).as_deref(), Some(shown), "{line}");
        }
        for line in [
            "GET k",
            "zadd z 1 m",
            "CLUSTER INFO",
            "cluster keyslot k",
            "CLIENT ID",
            "XREAD COUNT 2 STREAMS s 0",
            "SCRIPT FLUSH",
            "EVAL x 0",
        ] {
            assert_eq!(denied(&p, line), None, "{line}");
        }
    }

    #[test]
    fn xread_is_denied_only_with_block_wherever_the_option_sits() {
        let p = default_policy();
        assert_eq!(denied(&p, "XREAD BLOCK 0 STREAMS s $").as_deref(), Some("XREAD BLOCK"));
        assert_eq!(
            denied(&p, "xread count 5 block 100 streams s $").as_deref(),
            Some("XREAD BLOCK")
        );
        assert_eq!(
            denied(&p, "XREADGROUP GROUP streams block COUNT 1 BLOCK 0 STREAMS s >").as_deref(),
            Some("XREADGROUP BLOCK"),
            "a group named `streams` and a consumer named `block` must not hide the option"
        );
        assert_eq!(
            denied(&p, "XREADGROUP GROUP g c NOACK STREAMS block >"),
            None,
            "a stream named `block` is not the option"
        );
        assert_eq!(denied(&p, "XREAD COUNT 1 STREAMS block 0"), None);
    }

    #[test]
    fn the_per_command_shortcut_agrees_with_the_rules_for_every_command_in_the_table() {
        let policies = [
            default_policy(),
            Policy::from_config(&[], None),
            Policy::from_config(&["GET".to_owned(), "CLIENT LIST".to_owned(), "SET".to_owned()], None),
            Policy::from_config(
                &default_deny(),
                Some(&["GET".to_owned(), "HSET".to_owned(), "CLIENT ID".to_owned()]),
            ),
            Policy::from_config(&[], Some(&["XREAD".to_owned(), "OBJECT".to_owned()])),
        ];
        let mut shortcuts = 0;
        for policy in &policies {
            for (i, row) in commands::all().iter().enumerate() {
                for tail in [
                    &[][..],
                    &["k"],
                    &["BLOCK", "0", "STREAMS", "s", "0"],
                    &["LIST"],
                    &["ID"],
                ] {
                    let args: Vec<&str> = std::iter::once(row.name).chain(tail.iter().copied()).collect();
                    assert_eq!(policy.check(&args), policy.judge(&args, false), "{args:?}");
                    let lower: Vec<String> = args.iter().map(|a| a.to_ascii_lowercase()).collect();
                    assert_eq!(policy.check(&lower), policy.judge(&lower, false), "{lower:?}");
                }
                shortcuts += usize::from(policy.passes[i]);
            }
        }
        // The shortcut is taken (GET passes without the rule maps under the default policy) and is not taken
        // where a rule names the command.
        assert!(shortcuts > 100, "{shortcuts}");
        let get = commands::position(b"GET").unwrap();
        assert!(policies[0].passes[get]);
        assert!(!policies[2].passes[get]);
        assert!(!policies[4].passes[get]);
        assert!(!policies[4].passes[commands::position(b"XREAD").unwrap()]);
    }

    #[test]
    fn allow_narrows_and_deny_wins() {
        let deny = rules(&["KEYS", "CLUSTER RESET"]);
        let allow = rules(&["GET", "SET", "CLUSTER", "CONFIG GET", "MULTI"]);
        let p = Policy::new(&deny, Some(&allow));
        assert_eq!(denied(&p, "get k"), None);
        assert_eq!(denied(&p, "CLUSTER INFO"), None);
        assert_eq!(denied(&p, "CONFIG GET maxmemory"), None);
        assert_eq!(denied(&p, "DEL k").as_deref(), Some("DEL"), "not in allow");
        assert_eq!(denied(&p, "config set x y").as_deref(), Some("CONFIG SET"));
        assert_eq!(
            denied(&p, "CLUSTER RESET").as_deref(),
            Some("CLUSTER RESET"),
            "deny wins"
        );
        assert_eq!(
            denied(&p, "MULTI").as_deref(),
            Some("MULTI"),
            "built-in denials win over allow"
        );
        // An operator's own deny list replaces the default: FLUSHALL passes here, MULTI never does.
        let p = Policy::new(&rules(&["KEYS"]), None);
        assert_eq!(denied(&p, "FLUSHALL"), None);
        assert_eq!(denied(&p, "keys *").as_deref(), Some("KEYS"));
        assert_eq!(denied(&p, "multi").as_deref(), Some("MULTI"));
        assert_eq!(denied(&p, "brpop q 1").as_deref(), Some("BRPOP"));
    }

    #[test]
    fn an_empty_allow_list_lets_nothing_through() {
        let p = Policy::new(&[], Some(&[]));
        assert_eq!(denied(&p, "PING").as_deref(), Some("PING"));
    }

    #[test]
    fn rules_parse_and_name_their_problems() {
        assert_eq!(
            Rule::parse(" cluster  addslots ").unwrap().to_string(),
            "CLUSTER ADDSLOTS"
        );
        assert_eq!(Rule::parse("client no-evict").unwrap().to_string(), "CLIENT NO-EVICT");
        for bad in ["", "  ", "A B C", "FLUSH*", "GET\u{e9}"] {
            let err = Rule::parse(bad).unwrap_err();
            assert!(err.contains("is not a command name"), "{bad:?}: {err}");
        }
        assert!(Rule::parse("multi").unwrap().is_always_denied());
        assert!(Rule::parse("XREAD BLOCK").unwrap().is_always_denied());
        assert!(Rule::parse("CLIENT REPLY").unwrap().is_always_denied());
        assert!(!Rule::parse("CLIENT").unwrap().is_always_denied());
        assert!(!Rule::parse("XREAD").unwrap().is_always_denied());
        assert!(!Rule::parse("FLUSHALL").unwrap().is_always_denied());
        // Of the built-in denials, what the RESP socket runs on a connection of its own may be allowed there.
        for own in [
            "BLPOP",
            "xread block",
            "XREADGROUP BLOCK",
            "SUBSCRIBE",
            "psubscribe",
            "SSUBSCRIBE",
        ] {
            let rule = Rule::parse(own).unwrap();
            assert!(rule.is_always_denied() && rule.runs_on_own_connection(), "{own}");
        }
        for shared in [
            "MULTI",
            "CLIENT REPLY",
            "MONITOR",
            "UNSUBSCRIBE",
            "XREAD",
            "GET",
            "NOSUCH",
        ] {
            assert!(!Rule::parse(shared).unwrap().runs_on_own_connection(), "{shared}");
        }
    }

    #[test]
    fn the_built_in_denials_are_the_command_tables_connection_blocking_and_push_commands() {
        let always = always_denied();
        for expected in [
            "MULTI",
            "SELECT",
            "CLIENT REPLY",
            "BLPOP",
            "WAIT",
            "XREAD BLOCK",
            "SUBSCRIBE",
            "SYNC",
        ] {
            assert!(always.iter().any(|a| a == expected), "{expected} is always denied");
        }
        let unique: std::collections::BTreeSet<&String> = always.iter().collect();
        assert_eq!(unique.len(), always.len(), "no duplicates in {always:?}");
        // Grouped by reason: connection state first, pushes last.
        let at = |name: &str| always.iter().position(|a| a == name).unwrap();
        assert!(
            at("WATCH") < at("BLPOP") && at("XREADGROUP BLOCK") < at("MONITOR"),
            "{always:?}"
        );

        // Each one is refused under the name it is listed by, even with an allow list that names it, and the
        // config's validation knows it cannot be allowed.
        let allow_all = Policy::from_config(&[], Some(&always));
        for rule in &always {
            let mut line: Vec<&str> = rule.split(' ').collect();
            line.extend(["0", "STREAMS", "s", "0"]);
            assert_eq!(allow_all.check(&line).err().map(|d| d.command).as_ref(), Some(rule));
            assert!(Rule::parse(rule).unwrap().is_always_denied(), "{rule}");
        }
        // Nothing else is: reads, writes, admin commands and harmless subcommands of the same containers.
        for line in [
            "GET k",
            "SET k v",
            "FLUSHALL",
            "CLIENT KILL ID 1",
            "CLIENT ID",
            "XREAD STREAMS s 0",
            "PING",
        ] {
            let args: Vec<&str> = line.split(' ').collect();
            assert_eq!(Policy::from_config(&[], None).check(&args), Ok(()), "{line}");
        }
        for rule in [
            "GET",
            "CLIENT",
            "CLIENT KILL",
            "XREAD",
            "XREAD COUNT",
            "FLUSHALL",
            "NOSUCHCOMMAND",
        ] {
            assert!(!Rule::parse(rule).unwrap().is_always_denied(), "{rule}");
        }
    }

    #[test]
    fn binary_and_odd_arguments_never_panic() {
        let p = default_policy();
        let args: [&[u8]; 3] = [b"\xff\xfe", b"\x00", b""];
        assert_eq!(p.check(&args), Ok(()));
        let none: [&[u8]; 0] = [];
        assert_eq!(p.check(&none), Ok(()));
        assert_eq!(denied(&p, "XREAD COUNT"), None);
        assert_eq!(denied(&p, "XREADGROUP GROUP").as_deref(), None);
    }
}
