//! Writing replies onto the RESP socket, in the protocol version the connection chose (RESP2 until `HELLO 3`).
//!
//! Replies are appended to the connection's output buffer, which is written once per batch of requests: no
//! allocation per reply beyond the buffer's growth. Redis's replies pass through as redis-rs parsed them; in
//! RESP2 the RESP3-only types take their RESP2 form, as Redis itself gives them to a RESP2 client (a map as
//! a flat array of keys and values, a double as a bulk string, a boolean as 1 or 0, a null as a null bulk).

use redis::Value;

/// The most an output buffer keeps between batches (see [`Out::written`]).
pub const KEPT_BYTES: usize = 64 * 1024;

/// The protocol version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Resp2,
    Resp3,
}

/// An output buffer of one connection, and the protocol its replies are written in.
#[derive(Debug)]
pub struct Out {
    pub buf: Vec<u8>,
    pub proto: Proto,
}

impl Default for Out {
    fn default() -> Out {
        Out::new()
    }
}

impl Out {
    pub fn new() -> Out {
        Out {
            buf: Vec::with_capacity(4096),
            proto: Proto::Resp2,
        }
    }

    /// Empties the buffer once its replies are written, and gives back the memory a large reply grew it to, so
    /// an idle connection holds [`KEPT_BYTES`] at most, not its largest reply ever.
    pub fn written(&mut self) {
        if self.buf.capacity() > KEPT_BYTES {
            self.buf = Vec::with_capacity(4096);
        } else {
            self.buf.clear();
        }
    }

    fn line(&mut self, kind: u8, text: &[u8]) {
        self.buf.push(kind);
        self.buf.extend_from_slice(text);
        self.buf.extend_from_slice(b"\r\n");
    }

    fn number(&mut self, kind: u8, n: i64) {
        self.buf.push(kind);
        let mut digits = itoa::Buffer::new();
        self.buf.extend_from_slice(digits.format(n).as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }

    pub fn simple(&mut self, text: &str) {
        self.line(b'+', clean(text).as_bytes());
    }

    /// An error reply: `code` is its first word (`ERR`, `WRONGTYPE`, `CIRCUITOPEN` ...), clients tell errors
    /// apart by it. Line breaks in the text become spaces: they would end the reply early.
    pub fn error(&mut self, code: &str, text: &str) {
        self.buf.push(b'-');
        self.buf.extend_from_slice(code.as_bytes());
        if !text.is_empty() {
            self.buf.push(b' ');
            self.buf.extend_from_slice(clean(text).as_bytes());
        }
        self.buf.extend_from_slice(b"\r\n");
    }

    /// An error Redis gave, already in `CODE detail` form.
    pub fn redis_error(&mut self, message: &str) {
        self.line(b'-', clean(message).as_bytes());
    }

    pub fn int(&mut self, n: i64) {
        self.number(b':', n);
    }

    pub fn bulk(&mut self, bytes: &[u8]) {
        self.number(b'$', bytes.len() as i64);
        self.buf.extend_from_slice(bytes);
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn nil(&mut self) {
        match self.proto {
            Proto::Resp2 => self.buf.extend_from_slice(b"$-1\r\n"),
            Proto::Resp3 => self.buf.extend_from_slice(b"_\r\n"),
        }
    }

    pub fn array(&mut self, len: usize) {
        self.number(b'*', len as i64);
    }

    /// An out-of-band message of `len` elements (pub/sub): RESP3's push, RESP2's array.
    pub fn push(&mut self, len: usize) {
        match self.proto {
            Proto::Resp2 => self.number(b'*', len as i64),
            Proto::Resp3 => self.number(b'>', len as i64),
        }
    }

    /// A map of `len` pairs: RESP3's map, RESP2's flat array of twice as many elements.
    pub fn map(&mut self, len: usize) {
        match self.proto {
            Proto::Resp2 => self.number(b'*', 2 * len as i64),
            Proto::Resp3 => self.number(b'%', len as i64),
        }
    }

    fn double(&mut self, d: f64) {
        let text = if d.is_infinite() {
            if d > 0.0 { "inf" } else { "-inf" }.to_owned()
        } else if d.is_nan() {
            "nan".to_owned()
        } else {
            // The shortest text that reads back as the same double, as Redis writes it ("3", not "3.0").
            d.to_string()
        };
        match self.proto {
            Proto::Resp2 => self.bulk(text.as_bytes()),
            Proto::Resp3 => self.line(b',', text.as_bytes()),
        }
    }

    /// Redis's reply, as redis-rs read it.
    pub fn value(&mut self, v: &Value) {
        match v {
            Value::Nil => self.nil(),
            Value::Int(n) => self.int(*n),
            Value::BulkString(b) => self.bulk(b),
            Value::Array(items) => {
                self.array(items.len());
                items.iter().for_each(|i| self.value(i));
            }
            Value::SimpleString(s) => self.simple(s),
            Value::Okay => self.ok(),
            Value::Map(pairs) => {
                self.map(pairs.len());
                for (k, v) in pairs {
                    self.value(k);
                    self.value(v);
                }
            }
            Value::Attribute { data, .. } => self.value(data),
            Value::Set(items) => {
                match self.proto {
                    Proto::Resp2 => self.array(items.len()),
                    Proto::Resp3 => self.number(b'~', items.len() as i64),
                }
                items.iter().for_each(|i| self.value(i));
            }
            Value::Double(d) => self.double(*d),
            Value::Boolean(b) => match self.proto {
                Proto::Resp2 => self.int(i64::from(*b)),
                Proto::Resp3 => self.line(b'#', if *b { b"t" } else { b"f" }),
            },
            Value::VerbatimString { text, .. } => self.bulk(text.as_bytes()),
            // The digits as Redis sent them (redis-rs keeps them as bytes without its `num-bigint` feature).
            Value::BigNumber(digits) => match self.proto {
                Proto::Resp2 => self.bulk(digits),
                Proto::Resp3 => self.line(b'(', digits),
            },
            Value::Push { data, .. } => {
                self.array(data.len());
                data.iter().for_each(|i| self.value(i));
            }
            Value::ServerError(e) => self.redis_error(&crate::backend::server_error_message(e)),
            // `Value` is non-exhaustive: a type added to redis-rs later is not silently dropped.
            #[allow(unreachable_patterns)]
            other => self.error("ERR", &format!("redguard cannot relay this reply: {other:?}")),
        }
    }
}

/// Text for a line reply: CR and LF would end it early.
fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\r', '\n']) {
        text.replace(['\r', '\n'], " ").into()
    } else {
        text.into()
    }
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
