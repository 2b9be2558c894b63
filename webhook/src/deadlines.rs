//! Read deadlines of one HTTP/1.1 connection, kept the way Go's `net/http` keeps them: an
//! *idle* deadline while the connection waits for the first byte of its next request, and a
//! *header* deadline from that byte until the end of the request head.
//!
//! Why not hyper's own `header_read_timeout`: hyper starts that timer whenever it waits for a
//! request head, including on an idle keep-alive connection, so every connection idle for
//! longer than the header deadline (10 s) was closed. A client reusing such a connection just
//! as it closes can lose a request; the API server keeps idle webhook connections for 90 s.
//!
//! The wrapper only watches bytes: a request head ends at the first blank line
//! (`\r\n\r\n`), and the connection is idle again once the server writes (its answer). While
//! a request is being answered no deadline applies here; the body has its own deadline in
//! [`crate::server`].
//!
//! # Security
//!
//! Bytes come from an untrusted client; they are only compared with `\r` and `\n`, never
//! stored. A client that sends a head slowly is cut off at the header deadline whatever it
//! sends, and a connection that sends nothing at all is closed at the idle deadline.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Where the connection is in its request cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request: the idle deadline runs.
    Idle,
    /// Reading a request head; `matched` bytes of `\r\n\r\n` seen so far.
    Head { matched: u8 },
    /// Head complete: the request is being read and answered.
    Request,
}

/// An I/O stream with an idle deadline and a request-head deadline (see the module docs).
pub struct Http1Deadlines<IO> {
    io: IO,
    phase: Phase,
    deadline: Pin<Box<Sleep>>,
    idle: Duration,
    header: Duration,
}

impl<IO> Http1Deadlines<IO> {
    /// Wraps a fresh connection (idle until its first request starts).
    pub fn new(io: IO, idle: Duration, header: Duration) -> Self {
        Self {
            io,
            phase: Phase::Idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            idle,
            header,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    fn on_read(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            let matched = match self.phase {
                Phase::Request => return,
                Phase::Idle => {
                    self.deadline.as_mut().reset(Instant::now() + self.header);
                    0
                }
                Phase::Head { matched } => matched,
            };
            let expected = if matched % 2 == 0 { b'\r' } else { b'\n' };
            self.phase = if byte == expected {
                if matched == 3 {
                    Phase::Request
                } else {
                    Phase::Head {
                        matched: matched + 1,
                    }
                }
            } else {
                Phase::Head {
                    matched: u8::from(byte == b'\r'),
                }
            };
        }
    }

    fn on_write(&mut self) {
        if self.phase == Phase::Request {
            self.phase = Phase::Idle;
            self.deadline.as_mut().reset(Instant::now() + self.idle);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Http1Deadlines<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.on_read(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                if this.phase != Phase::Request && this.deadline.as_mut().poll(cx).is_ready() {
                    let what = if this.phase == Phase::Idle {
                        "idle connection timed out"
                    } else {
                        "request head not read in time"
                    };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                }
                Poll::Pending
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Http1Deadlines<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.on_write();
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.on_write();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    const IDLE: Duration = Duration::from_millis(400);
    const HEADER: Duration = Duration::from_millis(150);

    fn pair() -> (
        Http1Deadlines<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
    ) {
        let (server, client) = tokio::io::duplex(4096);
        (Http1Deadlines::new(server, IDLE, HEADER), client)
    }

    async fn read_error(server: &mut Http1Deadlines<tokio::io::DuplexStream>) -> io::Error {
        let mut buf = [0u8; 64];
        loop {
            match server.read(&mut buf).await {
                Ok(0) => panic!("end of stream instead of a deadline"),
                Ok(_) => {}
                Err(error) => return error,
            }
        }
    }

    #[test]
    fn on_read_finds_the_blank_line_across_reads_and_false_starts() {
        let (server, _client) = tokio::io::duplex(16);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let _guard = runtime.enter();
        let mut wrapped = Http1Deadlines::new(server, IDLE, HEADER);
        for chunk in [
            &b"POST / HTTP/1.1\r\nHost: x\r"[..],
            b"\n\r\r\n",
            b"x: y\r\n\r",
        ] {
            wrapped.on_read(chunk);
            assert!(matches!(wrapped.phase, Phase::Head { .. }), "{chunk:?}");
        }
        wrapped.on_read(b"\nbody");
        assert_eq!(wrapped.phase, Phase::Request);
        wrapped.on_write();
        assert_eq!(wrapped.phase, Phase::Idle);
    }

    #[tokio::test]
    async fn idle_connection_is_closed_at_the_idle_deadline_not_the_header_one() {
        let (mut server, _client) = pair();
        let started = Instant::now();
        let error = read_error(&mut server).await;
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(error.to_string().contains("idle"), "{error}");
        assert!(started.elapsed() >= IDLE, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn slow_head_is_cut_at_the_header_deadline() {
        let (mut server, mut client) = pair();
        client
            .write_all(b"POST /pods HTTP/1.1\r\n")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let started = Instant::now();
        let error = read_error(&mut server).await;
        assert!(error.to_string().contains("head"), "{error}");
        let waited = started.elapsed();
        assert!(
            waited >= HEADER - Duration::from_millis(20) && waited < IDLE,
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn answered_request_waits_idle_again_and_no_deadline_while_answering() {
        let (mut server, mut client) = pair();
        client
            .write_all(b"POST /pods HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut buf = [0u8; 64];
        let read = server
            .read(&mut buf)
            .await
            .unwrap_or_else(|e| panic!("read: {e}"));
        assert!(read > 0);
        assert_eq!(server.phase, Phase::Request);
        // Answering takes longer than both deadlines: nothing times out meanwhile.
        let pending = tokio::time::timeout(IDLE * 2, server.read(&mut buf)).await;
        assert!(
            pending.is_err(),
            "a read while answering ended: {pending:?}"
        );
        server
            .write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        assert_eq!(server.phase, Phase::Idle);
        let started = Instant::now();
        let error = read_error(&mut server).await;
        assert!(error.to_string().contains("idle"), "{error}");
        assert!(started.elapsed() >= IDLE - Duration::from_millis(20));
    }
}
