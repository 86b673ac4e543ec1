//! Connection plumbing both server transports share: a listener that holds at most a number of
//! connections at once, and a stream that fails once neither side has moved a byte for a while.
//! No converge dependency.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// A listener that accepts a connection only while fewer than its limit are open; past it, new
/// ones wait in the kernel's accept queue.
pub struct BoundedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    idle: Duration,
}

impl BoundedListener {
    /// At most `max_connections` open at once (at least one), each closed after `idle` without
    /// a byte either way.
    pub fn new(listener: TcpListener, max_connections: usize, idle: Duration) -> BoundedListener {
        BoundedListener { listener, permits: Arc::new(Semaphore::new(max_connections.max(1))), idle }
    }

    /// The next connection, once one of the limit's places is free. An accept that fails (out
    /// of file descriptors and the like) is logged and tried again after a moment.
    pub async fn accept(&self) -> Conn {
        // The semaphore is never closed, so acquiring only waits.
        let permit = loop {
            if let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await {
                break permit;
            }
        };
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    // Small answers go out at once, not after the peer's delayed ACK.
                    let _ = stream.set_nodelay(true);
                    return Conn { io: Idle::new(stream, self.idle), _permit: permit };
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// An accepted connection: it holds its place under the limit until dropped, and fails with
/// `TimedOut` once idle too long.
pub struct Conn {
    io: Idle,
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    /// The TCP stream underneath (for its addresses).
    pub fn tcp(&self) -> &TcpStream {
        &self.io.inner
    }
}

/// A TCP stream that fails with `TimedOut` once neither side has moved a byte for `idle`.
struct Idle {
    inner: TcpStream,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl Idle {
    fn new(inner: TcpStream, idle: Duration) -> Idle {
        Idle { inner, idle, deadline: Box::pin(tokio::time::sleep(idle)) }
    }

    fn moved(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    /// A write's result, noting that bytes moved.
    fn wrote(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.moved();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.pending(cx),
        }
    }

    /// `Pending` from the stream: an error instead if the connection has been idle too long.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle connection"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let io = &mut self.io;
        let before = buf.filled().len();
        match Pin::new(&mut io.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    io.moved();
                }
                Poll::Ready(r)
            }
            Poll::Pending => io.pending(cx),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let io = &mut self.io;
        let polled = Pin::new(&mut io.inner).poll_write(cx, data);
        io.wrote(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let io = &mut self.io;
        let polled = Pin::new(&mut io.inner).poll_write_vectored(cx, bufs);
        io.wrote(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_silent_connection_is_closed_and_frees_its_place() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bounded = BoundedListener::new(listener, 1, Duration::from_millis(200));
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut conn = bounded.accept().await;
        let mut second = TcpStream::connect(addr).await.unwrap();
        // The one place is taken: the second waits in the accept queue.
        assert!(tokio::time::timeout(Duration::from_millis(100), bounded.accept()).await.is_err());
        let mut buf = [0u8; 1];
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(conn);
        let mut next =
            tokio::time::timeout(Duration::from_secs(2), bounded.accept()).await.expect("the place came free");
        second.write_all(b"x").await.unwrap();
        assert_eq!(next.read(&mut buf).await.unwrap(), 1);
    }
}
