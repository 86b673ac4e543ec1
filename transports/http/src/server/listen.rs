//! The HTTP server's accept loop, with slow and idle clients bounded: a connection limit, a
//! deadline for a request's headers, and an idle timeout on every connection (the request-body
//! deadline is the JSON extractor's, `ServerConfig::body_timeout`).

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use converge_net_support::BoundedListener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

/// How long slow and idle clients may hold a connection, and how many connections at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// From when a connection waits for a request (its start, or the end of the last response)
    /// until the request's headers are in; past it the connection is closed. Default 10 s.
    pub header_timeout: Duration,
    /// A connection that neither sends nor receives a byte for this long is closed (an event
    /// stream sends a keepalive every 15 s, so it stays). Default 60 s.
    pub idle_timeout: Duration,
    /// Connections open at once; more wait in the kernel's accept queue. Default 10,000.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// How long shutting down waits for requests in flight (event streams never finish by
/// themselves).
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown` completes, then lets requests in flight finish
/// (for at most [`DRAIN`]).
pub(crate) async fn serve_bounded(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ConnLimits,
) -> io::Result<()> {
    let listener = BoundedListener::new(listener, limits.max_connections, limits.idle_timeout);
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        // The connection holds its place under the limit until it ends.
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(accepted), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::info!("requests still running after the drain period are cut");
    }
    Ok(())
}
