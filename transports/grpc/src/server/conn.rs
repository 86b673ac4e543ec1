//! The gRPC server's connections: at most a number open at once, each closed once idle (HTTP/2
//! keepalive pings every 15 s keep a quiet stream busy; a peer that never sends its preface is
//! not).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use converge_net_support::{BoundedListener, Conn};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How many connections the gRPC server holds at once, and how long one may stay silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// A connection that neither sends nor receives a byte for this long is closed. Default 60 s.
    pub idle_timeout: Duration,
    /// Connections open at once; more wait in the kernel's accept queue. Default 10,000.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits { idle_timeout: Duration::from_secs(60), max_connections: 10_000 }
    }
}

/// An accepted connection as tonic takes it.
pub(crate) struct GrpcConn(Conn);

impl Connected for GrpcConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.tcp().connect_info()
    }
}

impl AsyncRead for GrpcConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// The connections `listener` accepts under `limits`, as a stream for tonic; the task that
/// accepts them ends when the stream is dropped (or the returned handle aborted).
pub(crate) fn incoming(
    listener: tokio::net::TcpListener,
    limits: ConnLimits,
) -> (ReceiverStream<io::Result<GrpcConn>>, tokio::task::JoinHandle<()>) {
    let bounded = BoundedListener::new(listener, limits.max_connections, limits.idle_timeout);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let accepting = tokio::spawn(async move {
        loop {
            let conn = bounded.accept().await;
            if tx.send(Ok(GrpcConn(conn))).await.is_err() {
                break;
            }
        }
    });
    (ReceiverStream::new(rx), accepting)
}
