//! `flywheel-server`: serves a Flywheel model (model.onnx + model.json) over KServe V1 and the
//! Open Inference Protocol, with dynamic batching on dedicated ONNX Runtime threads.
//! See docs/server.md.
#![forbid(unsafe_code)]

pub mod api;
pub mod backend;
pub mod config;
pub mod error;
pub mod feedback;
pub mod input;
pub mod metrics;
pub mod model;
pub mod prediction_log;
mod record;
pub mod reload;
pub mod shadow;
pub mod source;
// Layers, each using only those below it: `state` holds the models, log, feedback index and the
// handles of background work; `record`, `reload` and `shadow` act on it; `startup` builds it and
// starts them; `api` sits on top.
mod startup;
pub mod state;

use std::future::Future;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

pub use crate::config::Config;
pub use crate::error::{ApiError, Error};
pub use crate::state::AppState;

/// Serves `state` on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    // Closed log segments go to the artifact store from now on (and those left by an earlier
    // run, once).
    if let (Some(log), Some(uri)) = (state.log(), state.config().log_archive_uri.as_deref()) {
        log.archive_to(uri).await?;
    }
    let app = api::router(state.clone());
    let unready = state.clone();
    // Responses are small and latency-bound: never hold a segment back for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "failed to set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Probes see "not ready" while in-flight requests finish.
            unready.set_ready(false);
            tracing::info!("shutting down: draining in-flight requests");
        })
        .await
        .map_err(Error::Serve)?;
    // Shadow predictions of answered requests are logged before the log closes (bounded: they
    // are best effort).
    state.drain_mirrors(state.config().request_timeout()).await;
    // Every acknowledged record is already on disk; this writes anything still queued, stops
    // the writer and, with --log-archive-uri, uploads the last segment (bounded wait).
    if let Some(log) = state.log() {
        log.close().await;
    }
    Ok(())
}

/// Completes on SIGTERM (Kubernetes) or Ctrl-C.
/// Resolves once the process `pid` has exited (Linux `/proc`); never resolves for `None`.
pub async fn parent_exit(pid: Option<u32>) {
    let Some(pid) = pid else {
        return std::future::pending().await;
    };
    let path = std::path::PathBuf::from(format!("/proc/{pid}"));
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tick.tick().await;
        if !path.exists() {
            tracing::info!(pid, "parent process exited; shutting down");
            return;
        }
    }
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
