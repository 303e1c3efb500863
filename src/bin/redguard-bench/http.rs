//! A lean HTTP/1.1 client over one keep-alive Unix-socket connection: one request at a time, a reused
//! buffer, no allocation per request once warm. It only understands what redguard sends back (a
//! `Content-Length` body), so that the figures measure the sidecar and not a general-purpose client.
//!
//! The socket is registered with epoll for both directions, as tokio's `UnixStream` does (and Go's netpoller;
//! a blocking socket is woken alike). Linux then wakes the client each time redguard reads a request from it,
//! a cost it charges to redguard. `--client-read-interest` registers readability only instead, to measure
//! that cost: see BENCHMARKS.md.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;

/// Set once from `--client-read-interest`, before any connection is opened.
pub(crate) static READ_INTEREST_ONLY: AtomicBool = AtomicBool::new(false);

/// The connection's socket, registered for both directions (the default) or for readability only.
enum Stream {
    Both(UnixStream),
    ReadOnly(AsyncFd<std::os::unix::net::UnixStream>),
}

impl Stream {
    async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Both(s) => s.write_all(bytes).await,
            Stream::ReadOnly(fd) => {
                // A request is far smaller than the socket buffer, so the write nearly always completes at
                // once; without write interest, a full buffer is retried after yielding.
                for _ in 0..1_000_000 {
                    match (&mut fd.get_ref()).write(bytes) {
                        Ok(n) if n == bytes.len() => return Ok(()),
                        Ok(n) => bytes = &bytes[n..],
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => tokio::task::yield_now().await,
                        Err(e) => return Err(e),
                    }
                }
                Err(io::Error::new(io::ErrorKind::TimedOut, "the socket stayed full"))
            }
        }
    }

    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Both(s) => s.read(buf).await,
            Stream::ReadOnly(fd) => loop {
                let mut ready = fd.readable().await?;
                let len = buf.len();
                if let Ok(read) = ready.try_io(|fd| (&mut fd.get_ref()).read(buf)) {
                    if matches!(read, Ok(n) if n > 0 && n < len) {
                        ready.clear_ready(); // drained, as tokio's own streams assume
                    }
                    return read;
                }
            },
        }
    }
}

pub(crate) struct HttpConn {
    stream: Stream,
    /// The request being written (head + body), reused.
    out: Vec<u8>,
    /// Bytes read from the socket; the answer of the current request lives at the front.
    buf: Vec<u8>,
    filled: usize,
}

/// An answer: the status and the body (borrowed from the connection's buffer until the next request).
pub(crate) struct Answer<'a> {
    pub status: u16,
    pub body: &'a [u8],
}

impl HttpConn {
    pub(crate) async fn connect(path: &Path) -> io::Result<HttpConn> {
        let stream = UnixStream::connect(path).await?;
        let stream = if READ_INTEREST_ONLY.load(Ordering::Relaxed) {
            let std = stream.into_std()?;
            // SAFETY: the std stream owns its descriptor and the AsyncFd owns the stream until it is dropped.
            Stream::ReadOnly(unsafe { AsyncFd::register_with_interest(std, Interest::READABLE) }?)
        } else {
            Stream::Both(stream)
        };
        Ok(HttpConn {
            stream,
            out: Vec::with_capacity(512),
            buf: vec![0; 8192],
            filled: 0,
        })
    }

    /// Sends `method path` with `body` and reads the whole answer.
    pub(crate) async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<Answer<'_>> {
        self.out.clear();
        self.out.extend_from_slice(method.as_bytes());
        self.out.push(b' ');
        self.out.extend_from_slice(path.as_bytes());
        self.out
            .extend_from_slice(b" HTTP/1.1\r\nHost: redguard\r\nContent-Type: application/json\r\nContent-Length: ");
        push_decimal(&mut self.out, body.len());
        self.out.extend_from_slice(b"\r\n\r\n");
        self.out.extend_from_slice(body);
        self.stream.write_all(&self.out).await?;

        // Read until the head is complete, then until the body is.
        self.filled = 0;
        let head_end = loop {
            if let Some(end) = find_head_end(&self.buf[..self.filled]) {
                break end;
            }
            self.fill().await?;
        };
        let head = &self.buf[..head_end];
        let status = parse_status(head)?;
        let length = content_length(head)?;
        let total = head_end + length;
        if self.buf.len() < total {
            self.buf.resize(total, 0);
        }
        while self.filled < total {
            self.fill().await?;
        }
        if self.filled > total {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bytes after the response"));
        }
        Ok(Answer {
            status,
            body: &self.buf[head_end..total],
        })
    }

    /// Shorthand for `POST path` with a JSON body.
    pub(crate) async fn post(&mut self, path: &str, body: &[u8]) -> io::Result<Answer<'_>> {
        self.request("POST", path, body).await
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.filled == self.buf.len() {
            let grown = self.buf.len() * 2;
            self.buf.resize(grown, 0);
        }
        let n = self.stream.read(&mut self.buf[self.filled..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.filled += n;
        Ok(())
    }
}

fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The index just past `\r\n\r\n`.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn parse_status(head: &[u8]) -> io::Result<u16> {
    // "HTTP/1.1 200 OK"
    let code = head.get(9..12).ok_or_else(|| invalid("short status line"))?;
    std::str::from_utf8(code)
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| invalid("bad status line"))
}

fn content_length(head: &[u8]) -> io::Result<usize> {
    const NAME: &[u8] = b"content-length:";
    for line in head.split(|&b| b == b'\n') {
        if line.len() > NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME) {
            let value = std::str::from_utf8(&line[NAME.len()..]).map_err(|_| invalid("content-length"))?;
            return value.trim().parse().map_err(|_| invalid("content-length"));
        }
    }
    Err(invalid(
        "no content-length (chunked answers are not expected from redguard)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed() {
        let head = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nContent-Length: 42\r\n\r\n";
        assert_eq!(find_head_end(head), Some(head.len()));
        assert_eq!(parse_status(head).unwrap(), 503);
        assert_eq!(content_length(head).unwrap(), 42);
        let mut out = Vec::new();
        push_decimal(&mut out, 0);
        push_decimal(&mut out, 1207);
        assert_eq!(out, b"01207");
    }
}
