//! JSON bodies for the answers hyper writes on its own.
//!
//! hyper answers a request it cannot parse by itself (a malformed request line or header: 400; a header block
//! larger than its read buffer: 431; a request target too long: 414), with an empty body, and closes the
//! connection; the error reaches our code only after the answer is on the wire, and hyper has no hook to shape
//! it. [`JsonErrors`] wraps a connection's stream and writes the documented JSON error in place of that answer,
//! so every error on the socket has the same shape. It recognises the answer by its head: one of those
//! statuses with `content-length: 0`, which no route writes (every [`ApiError`] carries its JSON body). Every
//! other write passes through untouched, after a comparison of its first bytes.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ApiError;

/// A connection's stream, with hyper's bodiless error answers replaced by JSON ones.
pub(crate) struct JsonErrors<S> {
    inner: S,
    /// The header-block limit named in a 431's message.
    max_header_bytes: usize,
    /// A replacement answer and how much of it is written. hyper was told its own answer was written whole, so
    /// this is written before anything else and before a flush or shutdown completes.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> JsonErrors<S> {
    pub(crate) fn new(inner: S, max_header_bytes: usize) -> Self {
        JsonErrors {
            inner,
            max_header_bytes,
            pending: None,
        }
    }
}

/// The error hyper's head stands for, if `head` is one of hyper's own bodiless error answers.
fn hyper_error(head: &[u8], max_header_bytes: usize) -> Option<ApiError> {
    let error = match head.get(..13)? {
        b"HTTP/1.1 400 " => ApiError::BadRequest("the request is not valid HTTP/1.1 (request line or header)".into()),
        b"HTTP/1.1 431 " => ApiError::HeadersTooLarge(max_header_bytes),
        b"HTTP/1.1 414 " => ApiError::UriTooLong,
        _ => return None,
    };
    let bodiless = head.ends_with(b"\r\n\r\n") && head.windows(21).any(|w| w == b"\r\ncontent-length: 0\r\n");
    bodiless.then_some(error)
}

/// The whole answer for `error`: head and JSON body; the connection closes after it, as hyper's would.
fn answer(error: &ApiError) -> Vec<u8> {
    let body = error.to_json();
    let status = error.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

impl<S: AsyncWrite + Unpin> JsonErrors<S> {
    /// Writes what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.pending {
            if *done == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `head` in place of hyper's answer if it is one; true if it was.
    fn replaced(&mut self, head: &[u8], cx: &mut Context<'_>) -> io::Result<bool> {
        let Some(error) = hyper_error(head, self.max_header_bytes) else {
            return Ok(false);
        };
        self.pending = Some((answer(&error), 0));
        // What does not go out now goes out on the flush hyper does next.
        if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
            return Err(e);
        }
        Ok(true)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrors<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrors<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if this.replaced(buf, cx)? {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        // hyper's error answer is a head alone, so it comes as the only buffer.
        if let [head] = bufs {
            if this.replaced(head, cx)? {
                return Poll::Ready(Ok(head.len()));
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_error_heads_are_recognised() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(hyper_error(head, 100), Some(ApiError::HeadersTooLarge(100)));
        let bad = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(hyper_error(bad, 100).map(|e| e.code()), Some("bad_request"));
        // Our own 400s carry their body; a 200 is never touched.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 60\r\n\r\n";
        assert_eq!(hyper_error(ours, 100), None);
        assert_eq!(hyper_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", 100), None);
        assert_eq!(hyper_error(b"{\"result\":1}", 100), None);
    }

    #[test]
    fn the_replacement_is_a_complete_json_answer() {
        let out = String::from_utf8(answer(&ApiError::HeadersTooLarge(16384))).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "headers_too_large");
    }
}
