//! The commands redguard answers itself on the RESP socket, never forwarded: what client libraries send when
//! they connect or check the server (HELLO, AUTH, CLIENT SETNAME/GETNAME/SETINFO/ID, SELECT, PING, ECHO, QUIT,
//! RESET, INFO, COMMAND). These concern the client's connection to redguard, which is not a connection to Redis:
//! the upstream connections are shared by every client and hold the real credentials and database.
//!
//! `AUTH` (and `HELLO .. AUTH`) is accepted with any credentials: the sidecar holds Redis's real ones, and
//! access to the socket is controlled by its file mode, group and `listen.allowed_uids`, as on the JSON socket.
//! `SELECT` accepts the database `redis.url` names and refuses any other (one shared connection pool cannot
//! serve two databases).

use super::encode::{Out, Proto};
use super::Resp;
use super::Session;
use crate::commands::{self, Keys, Kind};
use crate::op::Bytes;

/// The Redis version redguard reports (`HELLO`, `INFO`): clients check it for features, and the command
/// table follows Redis 7.
pub(super) const REDIS_VERSION: &str = "7.2.0";

/// What the connection does after a local command's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum After {
    Continue,
    Close,
    /// The client subscribed: the connection enters subscribed mode ([`super::pubsub`]).
    Subscribe,
}

/// Whether redguard answers `args` itself (see the module docs); CLIENT and COMMAND only for the subcommands
/// a client uses to set up or look around.
pub(super) fn is_local(args: &[Bytes<'_>]) -> bool {
    let name = args[0].as_ref();
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    let sub_is = |subs: &[&str]| match args.get(1) {
        Some(sub) => subs.iter().any(|s| sub.eq_ignore_ascii_case(s.as_bytes())),
        None => false,
    };
    match name.len() {
        4 if is("PING") || is("ECHO") || is("QUIT") || is("AUTH") || is("INFO") => true,
        5 if is("RESET") || is("HELLO") => true,
        6 if is("SELECT") => true,
        6 if is("CLIENT") => sub_is(&["SETNAME", "GETNAME", "SETINFO", "ID"]),
        7 if is("COMMAND") => args.len() == 1 || sub_is(&["COUNT", "DOCS", "INFO", "LIST"]),
        _ => false,
    }
}

/// Answers a local command (one [`is_local`] accepted).
pub(super) fn answer(resp: &Resp, session: &mut Session, args: &[Bytes<'_>], out: &mut Out) -> After {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    let n = args.len();
    let wrong_arity = |out: &mut Out| {
        out.error(
            "ERR",
            &format!("wrong number of arguments for '{}' command", name.to_ascii_lowercase()),
        )
    };
    match name.as_str() {
        "PING" => match n {
            1 => out.simple("PONG"),
            2 => out.bulk(&args[1]),
            _ => wrong_arity(out),
        },
        "ECHO" if n == 2 => out.bulk(&args[1]),
        "QUIT" => {
            out.ok();
            return After::Close;
        }
        "RESET" => {
            session.reset(out);
            out.simple("RESET");
        }
        "AUTH" if n == 2 || n == 3 => out.ok(),
        "HELLO" => hello(session, args, out),
        "SELECT" if n == 2 => select(resp, &args[1], out),
        "CLIENT" => client(session, args, out),
        "INFO" => info(resp, out),
        "COMMAND" => command(args, out),
        _ => wrong_arity(out),
    }
    After::Continue
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`: switches the protocol and describes the server.
fn hello(session: &mut Session, args: &[Bytes<'_>], out: &mut Out) {
    let mut proto = out.proto;
    if let Some(version) = args.get(1) {
        proto = match version.as_ref() {
            b"2" => Proto::Resp2,
            b"3" => Proto::Resp3,
            _ if std::str::from_utf8(version)
                .ok()
                .and_then(|v| v.parse::<i64>().ok())
                .is_none() =>
            {
                return out.error("ERR", "Protocol version is not an integer or out of range");
            }
            _ => return out.error("NOPROTO", "sorry, this protocol version is not supported."),
        };
    }
    let mut i = 2;
    let mut name = None;
    while i < args.len() {
        let opt = &args[i];
        if opt.eq_ignore_ascii_case(b"AUTH") && i + 2 < args.len() {
            i += 3;
        } else if opt.eq_ignore_ascii_case(b"SETNAME") && i + 1 < args.len() {
            name = Some(args[i + 1].to_vec());
            i += 2;
        } else {
            return out.error(
                "ERR",
                &format!("Syntax error in HELLO option '{}'", String::from_utf8_lossy(opt)),
            );
        }
    }
    if let Some(name) = name {
        if let Err(e) = valid_name(&name) {
            return out.error("ERR", e);
        }
        session.name = Some(name);
    }
    out.proto = proto;
    out.map(7);
    out.bulk(b"server");
    out.bulk(b"redis");
    out.bulk(b"version");
    out.bulk(REDIS_VERSION.as_bytes());
    out.bulk(b"proto");
    out.int(if proto == Proto::Resp3 { 3 } else { 2 });
    out.bulk(b"id");
    out.int(session.id as i64);
    out.bulk(b"mode");
    // The socket looks like one standalone Redis whatever is behind it: redguard routes keys to shards.
    out.bulk(b"standalone");
    out.bulk(b"role");
    out.bulk(b"master");
    out.bulk(b"modules");
    out.array(0);
}

fn select(resp: &Resp, db: &[u8], out: &mut Out) {
    match std::str::from_utf8(db).ok().and_then(|d| d.parse::<i64>().ok()) {
        None => out.error("ERR", "value is not an integer or out of range"),
        Some(d) if d == resp.db => out.ok(),
        Some(d) => out.error(
            "ERR",
            &format!(
                "redguard serves database {} only (the one redis.url names); SELECT {d} refused",
                resp.db
            ),
        ),
    }
}

fn client(session: &mut Session, args: &[Bytes<'_>], out: &mut Out) {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_uppercase();
    match (sub.as_str(), args.len()) {
        ("SETNAME", 3) => match valid_name(&args[2]) {
            Ok(()) => {
                session.name = (!args[2].is_empty()).then(|| args[2].to_vec());
                out.ok();
            }
            Err(e) => out.error("ERR", e),
        },
        ("GETNAME", 2) => match &session.name {
            Some(name) => out.bulk(name),
            None => out.nil(),
        },
        // LIB-NAME and LIB-VER: recorded by Redis for CLIENT LIST, which these connections are not in.
        ("SETINFO", 4) => out.ok(),
        ("ID", 2) => out.int(session.id as i64),
        _ => out.error(
            "ERR",
            &format!(
                "unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
                sub.to_ascii_lowercase()
            ),
        ),
    }
}

/// Redis's rule for client names: printable, no spaces.
fn valid_name(name: &[u8]) -> Result<(), &'static str> {
    if name.iter().all(|&b| (b'!'..=b'~').contains(&b)) {
        Ok(())
    } else {
        Err("Client names cannot contain spaces, newlines or special characters.")
    }
}

/// `INFO`: the server section a client checks (`redis_version`, `loading:0`, which some wait for), and the
/// breaker's state. Sections are not filtered: every section given is this one.
fn info(resp: &Resp, out: &mut Out) {
    let state = resp.client.breaker().state();
    let text = format!(
        "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nredguard_version:{}\r\n\
         process_id:{}\r\n\r\n# Persistence\r\nloading:0\r\nasync_loading:0\r\n\r\n# Replication\r\n\
         role:master\r\n\r\n# Redguard\r\ncircuit_state:{}\r\n",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        state.as_str(),
    );
    out.bulk(text.as_bytes());
}

/// `COMMAND`, `COMMAND COUNT|INFO|LIST|DOCS`, from the command table: names, flags (readonly, write, admin)
/// and key positions where the table has them as a range. Arity is given as -1 (variadic): the table does not
/// keep it, and Redis checks it anyway.
fn command(args: &[Bytes<'_>], out: &mut Out) {
    let rows = commands::all();
    let sub = args.get(1).map(|s| String::from_utf8_lossy(s).to_ascii_uppercase());
    match sub.as_deref() {
        None => {
            out.array(rows.len());
            rows.iter().for_each(|row| command_entry(row, out));
        }
        Some("COUNT") => out.int(rows.len() as i64),
        Some("LIST") => {
            out.array(rows.len());
            rows.iter()
                .for_each(|row| out.bulk(row.name.to_ascii_lowercase().as_bytes()));
        }
        Some("INFO") => {
            let names = &args[2..];
            out.array(names.len());
            for name in names {
                match commands::find(name) {
                    Some(row) => command_entry(row, out),
                    None => out.nil(),
                }
            }
        }
        // No documentation is kept; an empty answer tells redis-cli to go without hints.
        _ => out.map(0),
    }
}

fn command_entry(row: &commands::Command, out: &mut Out) {
    out.array(6);
    out.bulk(row.name.to_ascii_lowercase().as_bytes());
    out.int(-1);
    let flag = match row.kind {
        Kind::Read => Some("readonly"),
        Kind::Write => Some("write"),
        Kind::Admin => Some("admin"),
        Kind::Connection => None,
    };
    out.array(usize::from(flag.is_some()));
    if let Some(flag) = flag {
        out.simple(flag);
    }
    let (first, last, step) = match row.keys {
        Keys::Range { first, last, step } => (i64::from(first), i64::from(last), i64::from(step)),
        _ => (0, 0, 0),
    };
    out.int(first);
    out.int(last);
    out.int(step);
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::resp::test_args as args;

    #[test]
    fn only_the_handshake_and_introspection_commands_are_local() {
        for line in [
            "ping",
            "PING hi",
            "echo x",
            "QUIT",
            "reset",
            "AUTH p",
            "hello 3",
            "SELECT 0",
            "INFO",
            "client setname a",
            "CLIENT ID",
            "COMMAND",
            "command docs",
            "COMMAND COUNT",
        ] {
            assert!(is_local(&args(line)), "{line}");
        }
        for line in [
            "GET k",
            "CLIENT LIST",
            "CLIENT KILL x",
            "COMMAND GETKEYS GET k",
            "PINGX",
            "SELECTX 1",
        ] {
            assert!(!is_local(&args(line)), "{line}");
        }
    }

    #[test]
    fn client_names_follow_redis_s_rule() {
        assert!(valid_name(b"worker-1").is_ok());
        assert!(valid_name(b"a b").is_err());
        assert!(valid_name(b"a\nb").is_err());
    }
}
