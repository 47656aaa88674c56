//! What every request handler shares: the models being served, the prediction log, the feedback
//! index, metrics and configuration, and the handles background work needs (the mirror queue,
//! the reload lock). It holds data and acts on nothing: [`crate::reload`] and [`crate::shadow`]
//! act on it, [`crate::startup`] builds it, and the API sits above all of them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use axum::http::{HeaderMap, StatusCode, header};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use crate::backend::Backend;
use crate::config::Config;
use crate::error::ApiError;
use crate::feedback::FeedbackIndex;
use crate::metrics::Metrics;
use crate::model::{Columns, ModelSpec};
use crate::prediction_log::PredictionLog;

/// Cheap to clone; handlers receive it through axum's `State`.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

/// A handle that does not keep the state alive, for background tasks that should end with it.
#[derive(Clone)]
pub(crate) struct WeakState(Weak<Inner>);

impl WeakState {
    pub(crate) fn upgrade(&self) -> Option<AppState> {
        self.0.upgrade().map(|inner| AppState { inner })
    }
}

struct Inner {
    /// Read once per request (the handler keeps its `Arc` to the end), so a swap never changes
    /// the model under a request; the old one drains as its last requests finish.
    model: ArcSwap<Backend>,
    shadow: ArcSwapOption<Backend>,
    /// Requests on their way to the shadow, bounded; see [`crate::shadow`].
    mirrors: mpsc::Sender<Mirror>,
    /// Mirrors accepted and not yet finished (predicted and logged, dropped or failed).
    mirrors_in_flight: Arc<AtomicUsize>,
    mirroring: AtomicBool,
    /// One reload at a time (the API and the watch share it).
    reloads: tokio::sync::Mutex<()>,
    /// Why the latest reload failed; cleared by a successful one.
    reload_error: Mutex<Option<String>>,
    runtime: tokio::runtime::Handle,
    config: Config,
    metrics: Metrics,
    registry: Registry,
    ready: AtomicBool,
    log: Option<PredictionLog>,
    feedback: FeedbackIndex,
}

impl AppState {
    /// The state of a server serving `model` (and `shadow`), with the receiving end of its mirror
    /// queue. Nothing runs yet: [`crate::startup`] starts what acts on it.
    pub(crate) fn new(
        config: Config,
        registry: Registry,
        metrics: Metrics,
        model: Backend,
        shadow: Option<Backend>,
        log: Option<PredictionLog>,
        runtime: tokio::runtime::Handle,
    ) -> (AppState, mpsc::Receiver<Mirror>) {
        let feedback =
            FeedbackIndex::new(config.feedback_window, config.stats_window, metrics.clone());
        let (mirrors, mirrored) = mpsc::channel(config.max_queue_size.max(1));
        let state = AppState {
            inner: Arc::new(Inner {
                model: ArcSwap::from_pointee(model),
                shadow: ArcSwapOption::new(shadow.map(Arc::new)),
                mirrors,
                mirrors_in_flight: Arc::new(AtomicUsize::new(0)),
                mirroring: AtomicBool::new(true),
                reloads: tokio::sync::Mutex::new(()),
                reload_error: Mutex::new(None),
                runtime,
                config,
                metrics,
                log,
                feedback,
                registry,
                ready: AtomicBool::new(true),
            }),
        };
        (state, mirrored)
    }

    pub(crate) fn downgrade(&self) -> WeakState {
        WeakState(Arc::downgrade(&self.inner))
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.inner.runtime
    }

    /// The shadow model, when one is loaded.
    pub fn shadow(&self) -> Option<Arc<Backend>> {
        self.inner.shadow.load_full()
    }

    /// Serves `backend` from now on and returns the model it replaces.
    pub(crate) fn swap_primary(&self, backend: Backend) -> Arc<Backend> {
        self.inner.model.swap(Arc::new(backend))
    }

    /// Mirrors to `backend` from now on (none: stop mirroring) and returns the shadow it replaces.
    pub(crate) fn swap_shadow(&self, backend: Option<Backend>) -> Option<Arc<Backend>> {
        self.inner.shadow.swap(backend.map(Arc::new))
    }

    /// Held while a reload loads and swaps models.
    pub(crate) async fn lock_reloads(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.reloads.lock().await
    }

    /// Why the latest reload failed, if it did.
    pub fn reload_error(&self) -> Option<String> {
        self.inner
            .reload_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_reload_error(&self, error: Option<String>) {
        *self
            .inner
            .reload_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }

    /// A copy of `columns` for the shadow, taken before the primary consumes them; `None` (and
    /// no copy) when there is no shadow to mirror to.
    pub(crate) fn mirror_copy(&self, columns: &Columns) -> Option<Columns> {
        let mirroring =
            self.inner.mirroring.load(Ordering::Relaxed) && self.inner.shadow.load().is_some();
        mirroring.then(|| columns.clone())
    }

    /// Hands a request the primary has answered to the shadow. Never waits: when the mirror
    /// queue is full the copy is dropped and counted.
    pub(crate) fn mirror(&self, primary: Arc<ModelSpec>, columns: Columns, ids: Vec<String>) {
        let mirror = Mirror {
            primary,
            columns,
            ids,
            _in_flight: InFlight::start(&self.inner.mirrors_in_flight),
        };
        match self.inner.mirrors.try_send(mirror) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.inner.metrics.shadow_dropped.inc();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Stops mirroring and waits (at most `timeout`) for mirrored requests to be predicted and
    /// logged, so that shutdown closes the log after them.
    pub(crate) async fn drain_mirrors(&self, timeout: Duration) {
        self.inner.mirroring.store(false, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + timeout;
        while self.inner.mirrors_in_flight.load(Ordering::Acquire) > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    pending = self.inner.mirrors_in_flight.load(Ordering::Acquire),
                    "shadow predictions still pending at shutdown; they are not logged"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The prediction log, when `--log-dir` is set.
    pub fn log(&self) -> Option<&PredictionLog> {
        self.inner.log.as_ref()
    }

    pub fn feedback(&self) -> &FeedbackIndex {
        &self.inner.feedback
    }

    /// The model being served now.
    pub fn current(&self) -> Arc<Backend> {
        self.inner.model.load_full()
    }

    /// The model served under `name`, or a 404 naming the models there are.
    pub fn model(&self, name: &str) -> Result<Arc<Backend>, ApiError> {
        let current = self.current();
        if current.spec().name == name {
            Ok(current)
        } else {
            Err(ApiError::not_found(format!(
                "unknown model '{name}'; this server serves '{}'",
                current.spec().name
            ))
            .at("model_name"))
        }
    }

    /// Like [`AppState::model`], also checking the version in the path.
    pub fn model_version(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Arc<Backend>, ApiError> {
        let model = self.model(name)?;
        match version {
            Some(version) if version != model.spec().card.version => {
                Err(ApiError::not_found(format!(
                    "unknown version '{version}' of model '{name}'; it serves version '{}'",
                    model.spec().card.version
                ))
                .at("model_version"))
            }
            _ => Ok(model),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Relaxed)
    }

    /// Marks the server unready so that load balancers stop sending traffic before shutdown.
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Relaxed);
    }

    /// Checks the bearer token of a predict or infer request, when one is configured.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.inner.config.auth_token else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid bearer token").at("authorization"),
            ),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing bearer token: send 'Authorization: Bearer <token>'",
            )
            .at("authorization")),
        }
    }
}

/// A request the primary answered, on its way to the shadow.
pub(crate) struct Mirror {
    /// The primary that answered: the columns follow its card's input order.
    pub primary: Arc<ModelSpec>,
    pub columns: Columns,
    /// The request ids the primary returned, one per row.
    pub ids: Vec<String>,
    pub _in_flight: InFlight,
}

/// Counts a mirror from acceptance until it is logged, dropped or failed, so that shutdown can
/// wait for it.
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub(crate) fn start(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::AcqRel);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Compares without an early exit, so response time does not leak how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        let y = b.get(i % b.len().max(1)).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
