//! Reading client requests off the RESP socket: the two forms a Redis server accepts, and nothing else.
//!
//! A request is either an array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what every client library
//! sends) or an inline command (`GET k\r\n`, what a person types into `nc`). Like Redis's own reader
//! (`processMultibulkBuffer`), this one accepts no other frame in a request: a nested array, an integer or a
//! simple string where a bulk string belongs is a protocol error, so no depth limit is needed.
//!
//! Memory stays bounded by what has arrived, never by what a header announces: the reader keeps the
//! positions of the arguments read so far (one pair per argument that arrived) and reserves nothing for an
//! announced count or length; a bulk longer than `max_arg_bytes`, a request whose bytes exceed
//! `max_request_bytes` (checked as soon as a header makes it certain) or an inline line longer than
//! [`MAX_INLINE_BYTES`] is refused before its bytes are waited for. A request that arrives in pieces is
//! resumed where the last piece ended ([`Reader`] keeps its place), so reading a long request costs time in
//! proportion to its length, whatever the pieces.
//!
//! The errors read like Redis's own (`Protocol error: invalid bulk length`): after one, the connection answers
//! it and closes, as Redis does, because the stream can no longer be split into requests.
//!
//! Why a reader of its own rather than a crate's decoder: the decoders at hand read replies, not requests, and
//! fail the bad input this socket must survive. `redis-protocol` 6.0.0 (`resp2::decode::decode_range`) aborts
//! the whole process with a stack overflow on arrays nested 10,000 deep (tried in a release build; a client can
//! send a million), reads no inline command, and its `complete` decoder parses a request from its start again
//! with every piece that arrives. redis-rs's `parse_redis_value` reads no inline command either and takes any
//! frame type as an argument. This reader is Redis's request grammar and nothing more, in about 250 lines;
//! `redis-protocol` stays as the oracle the tests and the property test check it against
//! (`parse_tests.rs`), and `fuzz/fuzz_targets/resp_reader.rs` fuzzes it.

use std::ops::Range;

/// The longest inline command line, as Redis's `PROTO_INLINE_MAX_SIZE` (64 KiB).
pub const MAX_INLINE_BYTES: usize = 64 * 1024;

/// The most digits a length header may have before its line end (`*` or `$`, a sign, 19 digits): a longer line
/// cannot be a valid header, and waiting for its end would let a client fill memory with one header.
const MAX_HEADER_BYTES: usize = 32;

/// The most arguments a vector kept for reuse from one request (or batch) to the next may have room for. More
/// is let go rather than kept for the connection's life; 1,024 is more than a batch of ordinary commands holds
/// at `api.max_pipeline_commands`'s default.
pub const KEPT_ARGS: usize = 1024;

/// Limits of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest argument (`api.max_value_bytes`).
    pub max_arg_bytes: usize,
    /// The most bytes one request may take on the wire (`api.max_body_bytes`).
    pub max_request_bytes: usize,
}

/// Why the bytes cannot be read as requests. The text is the reply's, after `ERR Protocol error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid multibulk length")]
    ArrayLength,
    #[error("invalid bulk length")]
    BulkLength,
    #[error("expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    #[error("bulk of {0} bytes exceeds api.max_value_bytes ({1})")]
    ArgTooLong(u64, usize),
    #[error("request exceeds api.max_body_bytes ({0})")]
    RequestTooLong(usize),
    #[error("too big inline request")]
    InlineTooLong,
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("bulk string not terminated by CRLF")]
    MissingCrlf,
}

/// One complete request: the byte ranges of its arguments (the command name first) within the buffer it was
/// read from, and how many bytes of that buffer it took. An empty argument list is an empty line or `*0`,
/// which Redis ignores.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    pub args: Vec<Range<usize>>,
    pub len: usize,
}

/// Where the reader is inside a request that has not fully arrived.
#[derive(Debug, Default)]
enum Partial {
    /// Nothing read yet: the next byte starts a request.
    #[default]
    Start,
    /// Inside `*<count>`: `args` are read, `left` more to come; `pos` is where the next argument's header starts.
    Array { left: u64, pos: usize },
}

/// Reads requests from the front of a buffer, keeping its place across calls while a request is incomplete.
/// The caller appends bytes to the buffer as they arrive, calls [`Reader::next`] until it returns `Ok(None)`,
/// and after each complete request drops that request's bytes from the buffer's front.
#[derive(Debug)]
pub struct Reader {
    limits: Limits,
    partial: Partial,
    args: Vec<Range<usize>>,
}

impl Reader {
    pub fn new(limits: Limits) -> Reader {
        Reader {
            limits,
            partial: Partial::Start,
            args: Vec::new(),
        }
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Takes back a finished request's argument list, so that the next request reuses its allocation rather
    /// than making one (a request's list is handed out by value, and every command has one). A list with room
    /// for more than [`KEPT_ARGS`] arguments is let go, so that one long command does not make its connection
    /// hold that memory for as long as it stays open.
    pub fn give_back(&mut self, mut args: Vec<Range<usize>>) {
        if self.args.is_empty() && args.capacity() <= KEPT_ARGS {
            args.clear();
            self.args = args;
        }
    }

    /// Whether part of a request has been read (a client that stops here is holding a half-sent frame).
    pub fn in_request(&self, buf: &[u8]) -> bool {
        !buf.is_empty() || matches!(self.partial, Partial::Array { .. })
    }

    /// The next complete request at the front of `buf`, `Ok(None)` when more bytes are needed.
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<Request>, ProtocolError> {
        let (mut left, mut pos) = match self.partial {
            Partial::Array { left, pos } => (left, pos),
            Partial::Start => match buf.first() {
                None => return Ok(None),
                Some(b'*') => {
                    let Some((count, end)) = header(buf, 0)? else {
                        return Ok(None);
                    };
                    // `*-1` and `*0` are no request; Redis skips them.
                    let count = u64::try_from(count).unwrap_or(0);
                    // Each argument takes at least 6 bytes (`$0\r\n\r\n`): a count that cannot fit is refused now.
                    if count.saturating_mul(6).saturating_add(end as u64) > self.limits.max_request_bytes as u64 {
                        return Err(ProtocolError::RequestTooLong(self.limits.max_request_bytes));
                    }
                    (count, end)
                }
                Some(_) => return self.inline(buf),
            },
        };
        while left > 0 {
            let Some(&kind) = buf.get(pos) else {
                return Ok(self.wait(left, pos));
            };
            if kind != b'$' {
                return Err(ProtocolError::ExpectedBulk(kind));
            }
            let Some((len, start)) = header(buf, pos)? else {
                return Ok(self.wait(left, pos));
            };
            let len = u64::try_from(len).map_err(|_| ProtocolError::BulkLength)?;
            if len > self.limits.max_arg_bytes as u64 {
                return Err(ProtocolError::ArgTooLong(len, self.limits.max_arg_bytes));
            }
            let end = start + len as usize;
            if end as u64 + 2 + (left - 1) * 6 > self.limits.max_request_bytes as u64 {
                return Err(ProtocolError::RequestTooLong(self.limits.max_request_bytes));
            }
            if buf.len() < end + 2 {
                return Ok(self.wait(left, pos));
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError::MissingCrlf);
            }
            self.args.push(start..end);
            pos = end + 2;
            left -= 1;
        }
        self.partial = Partial::Start;
        Ok(Some(Request {
            args: std::mem::take(&mut self.args),
            len: pos,
        }))
    }

    fn wait(&mut self, left: u64, pos: usize) -> Option<Request> {
        self.partial = Partial::Array { left, pos };
        None
    }

    /// An inline command: words separated by spaces, with Redis's quoting (`"a b"`, `'c'`, `\n` in double quotes).
    fn inline(&mut self, buf: &[u8]) -> Result<Option<Request>, ProtocolError> {
        let Some(nl) = buf.iter().take(MAX_INLINE_BYTES + 1).position(|&b| b == b'\n') else {
            return if buf.len() > MAX_INLINE_BYTES {
                Err(ProtocolError::InlineTooLong)
            } else {
                Ok(None)
            };
        };
        let line_end = if nl > 0 && buf[nl - 1] == b'\r' { nl - 1 } else { nl };
        let args = split_inline(&buf[..line_end])?;
        Ok(Some(Request { args, len: nl + 1 }))
    }
}

/// Reads the `*<n>\r\n` or `$<n>\r\n` header at `at`: its number and where the bytes after it start; `None`
/// while its line end has not arrived.
fn header(buf: &[u8], at: usize) -> Result<Option<(i64, usize)>, ProtocolError> {
    let error = if buf[at] == b'*' {
        ProtocolError::ArrayLength
    } else {
        ProtocolError::BulkLength
    };
    let rest = &buf[at + 1..];
    let Some(cr) = rest.iter().take(MAX_HEADER_BYTES).position(|&b| b == b'\r') else {
        return if rest.len() >= MAX_HEADER_BYTES {
            Err(error)
        } else {
            Ok(None)
        };
    };
    match rest.get(cr + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(error),
    }
    let n = decimal(&rest[..cr]).ok_or(error.clone())?;
    if n < -1 || (n == -1 && error == ProtocolError::BulkLength) {
        return Err(error);
    }
    Ok(Some((n, at + 1 + cr + 2)))
}

/// A header's number as Redis's `string2ll` reads it: `0`, or an optional `-` and decimal digits not starting
/// with `0` (no `+`, no spaces, no `-0`), within `i64`. Read by hand: every request has one of these per
/// argument, and going through `str` cost a UTF-8 check and a generic parse each time.
fn decimal(digits: &[u8]) -> Option<i64> {
    if digits == b"0" {
        return Some(0);
    }
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.first().is_none_or(|&d| d == b'0') {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if negative { -n } else { n })
}

/// Splits an inline line into argument ranges, as Redis's `sdssplitargs` does for the quoting forms clients
/// type. Escapes inside double quotes would change the bytes; the ranges cannot express that, so a line using
/// them is refused as unbalanced rather than read wrong (a client library never sends inline commands).
fn split_inline(line: &[u8]) -> Result<Vec<Range<usize>>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b' ' | b'\t' => i += 1,
            quote @ (b'"' | b'\'') => {
                let start = i + 1;
                let close = line[start..]
                    .iter()
                    .position(|&b| b == quote || (quote == b'"' && b == b'\\'))
                    .map(|p| start + p)
                    .filter(|&p| line[p] == quote)
                    .ok_or(ProtocolError::UnbalancedQuotes)?;
                // A closing quote must be followed by a space or the end, as Redis requires.
                if line.get(close + 1).is_some_and(|b| !matches!(b, b' ' | b'\t')) {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                args.push(start..close);
                i = close + 1;
            }
            _ => {
                let start = i;
                while i < line.len() && !matches!(line[i], b' ' | b'\t') {
                    i += 1;
                }
                args.push(start..i);
            }
        }
    }
    Ok(args)
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
