//! What every request handler shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use axum::http::{HeaderMap, StatusCode, header};
use prometheus_client::registry::Registry;

use crate::backend::Backend;
use crate::config::Config;
use crate::error::{ApiError, Error};
use crate::feedback::FeedbackIndex;
use crate::metrics::Metrics;
use crate::prediction_log::PredictionLog;

/// Cheap to clone; handlers receive it through axum's `State`.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    // Swapped whole by the hot-reload slice; a shadow model will sit beside it.
    model: ArcSwap<Backend>,
    config: Config,
    metrics: Metrics,
    registry: Registry,
    ready: AtomicBool,
    log: Option<PredictionLog>,
    feedback: FeedbackIndex,
}

impl AppState {
    /// Loads the model of `config` and starts its inference threads. Needs a tokio runtime.
    pub fn load(config: Config) -> Result<AppState, Error> {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let backend = Backend::load(&config, metrics.clone())?;
        tracing::info!(
            model = %backend.spec().name,
            version = %backend.spec().card.version,
            threads = config.inference_threads,
            "model loaded"
        );
        let log = match &config.log_dir {
            Some(dir) => Some(PredictionLog::open(dir, config.log_segment_bytes)?),
            None => None,
        };
        let feedback =
            FeedbackIndex::new(config.feedback_window, config.stats_window, metrics.clone());
        Ok(AppState {
            inner: Arc::new(Inner {
                model: ArcSwap::from_pointee(backend),
                config,
                metrics,
                log,
                feedback,
                registry,
                ready: AtomicBool::new(true),
            }),
        })
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
