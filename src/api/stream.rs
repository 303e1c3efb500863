//! An API connection that asks epoll to report readability only.
//!
//! Linux wakes every epoll registration of a Unix socket that includes EPOLLOUT whenever the peer reads from it
//! (`unix_write_space`), even when the writer has nothing to write. `tokio::net::UnixStream` always registers
//! for both directions, so every response a client reads used to wake redguard once more for nothing: at
//! concurrency 1 that was most of the difference in context switches per request between redguard and a TCP
//! proxy (see BENCHMARKS.md). [`ReadInterestStream`] registers the socket for reading only and writes without
//! waiting first, as a response nearly always fits in the socket buffer. Only when a write would block does it
//! register a duplicate of the descriptor for writability, and it drops that registration again once the write
//! went through, so a large response still completes without busy-looping.

use std::io::{self, IoSlice, Read, Write};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A non-blocking Unix stream registered for readability; writability is awaited only after a short write.
pub struct ReadInterestStream {
    read: AsyncFd<UnixStream>,
    /// A `dup` of the same socket registered for writability, present only while a write is blocked.
    /// (epoll keys registrations by descriptor, so a second descriptor is the way to add an interest.)
    write: Option<AsyncFd<UnixStream>>,
}

impl ReadInterestStream {
    /// Takes over an accepted tokio stream. Must be called within the runtime.
    pub fn new(stream: tokio::net::UnixStream) -> io::Result<ReadInterestStream> {
        let std = stream.into_std()?; // deregisters from tokio, stays non-blocking
        Ok(ReadInterestStream {
            read: register(std, Interest::READABLE)?,
            write: None,
        })
    }

    /// Writes with `op`, waiting for writability only after the socket said it would block.
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&UnixStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        if self.write.is_none() {
            match op(self.read.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let dup = self.read.get_ref().try_clone()?;
                    self.write = Some(register(dup, Interest::WRITABLE)?);
                }
                done => return Poll::Ready(done),
            }
        }
        let waiting = self.write.as_ref().expect("set above or by an earlier blocked write");
        loop {
            let mut guard = ready!(waiting.poll_write_ready(cx))?;
            if let Ok(done) = guard.try_io(|fd| op(fd.get_ref())) {
                self.write = None;
                return Poll::Ready(done);
            }
        }
    }
}

/// Registers `socket` with the runtime's epoll for `interest`.
fn register(socket: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    // SAFETY: the `UnixStream` owns its descriptor, and the `AsyncFd` owns the `UnixStream` until it is dropped:
    // nothing here closes or replaces the descriptor while it is registered.
    Ok(unsafe { AsyncFd::register_with_interest(socket, interest) }?)
}

impl AsyncRead for ReadInterestStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.read.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let len = unfilled.len();
            if let Ok(result) = guard.try_io(|fd| (&mut fd.get_ref()).read(unfilled)) {
                if matches!(result, Ok(n) if n > 0 && n < len) {
                    // A stream socket that filled less than the buffer has been drained: the next read would
                    // only say WouldBlock, so wait for epoll instead of asking (as tokio's own streams do).
                    guard.clear_ready();
                }
                return Poll::Ready(result.map(|n| buf.advance(n)));
            }
        }
    }
}

impl AsyncWrite for ReadInterestStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, |mut fd| fd.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, |mut fd| fd.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(())) // nothing is buffered here
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.read.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A response far larger than the socket buffer completes while the peer reads slowly: the blocked write
    /// waits for writability instead of failing or spinning, and the bytes arrive whole and in order.
    #[tokio::test]
    async fn a_write_larger_than_the_socket_buffer_completes() {
        let (ours, mut peer) = tokio::net::UnixStream::pair().unwrap();
        let mut ours = ReadInterestStream::new(ours).unwrap();
        let payload: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let expected = payload.clone();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut chunk = vec![0u8; 4096];
            loop {
                let n = peer.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break got;
                }
                got.extend_from_slice(&chunk[..n]);
                tokio::task::yield_now().await;
            }
        });
        ours.write_all(&payload).await.unwrap();
        assert!(
            ours.write.is_none(),
            "the write registration is dropped once the write went through"
        );
        ours.shutdown().await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the bytes arrive whole and in order");
    }

    /// Reads wait for data and see the peer's end of stream.
    #[tokio::test]
    async fn reads_wait_for_data_and_see_the_end() {
        let (ours, mut peer) = tokio::net::UnixStream::pair().unwrap();
        let mut ours = ReadInterestStream::new(ours).unwrap();
        let writer = tokio::spawn(async move {
            tokio::task::yield_now().await;
            peer.write_all(b"ping").await.unwrap();
        });
        let mut got = Vec::new();
        ours.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, b"ping");
    }
}
