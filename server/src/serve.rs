//! Serving a router on a listener: HTTP/1.1 with keep-alive, `TCP_NODELAY`, a timeout on
//! slow request heads, and graceful shutdown (stop accepting, let in-flight requests
//! finish within a grace period, then return).
//!
//! axum's own `serve` does not expose hyper's header-read timeout, so this is the same
//! accept loop written out with hyper-util, plus that timeout.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Connection policy.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Longest time a client may take to send a request head (slowloris protection); the
    /// body is covered by `[limits] request_timeout`.
    pub header_read_timeout: Duration,
    /// How long in-flight requests get to finish after the shutdown signal.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions { header_read_timeout: Duration::from_secs(10), shutdown_grace: Duration::from_secs(30) }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then drains: no new connections,
/// idle keep-alive connections closed, requests in flight finished (up to
/// [`ServeOptions::shutdown_grace`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(opts.header_read_timeout).keep_alive(true);
    let service =
        app.into_service::<axum::body::Body>().map_request(|req: Request<Incoming>| req.map(axum::body::Body::new));
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection: {e}");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing requests in flight");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(opts.shutdown_grace) => tracing::warn!("shutdown grace period over; closing anyway"),
    }
    Ok(())
}
