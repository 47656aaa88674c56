//! Starting a server: load the models, build the [`AppState`], then start the machinery that acts
//! on it — the shadow's mirror dispatcher and, when asked for, the folder watch. Kept apart from
//! the state so that the state depends on neither.

use prometheus_client::registry::Registry;

use crate::backend::{Backend, LoadSpec, Role};
use crate::config::Config;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::prediction_log::PredictionLog;
use crate::state::AppState;
use crate::{reload, shadow};

impl AppState {
    /// Loads the model of `config` (and its shadow, if any), starts their inference threads and
    /// the background tasks (shadow mirroring, the folder watch). Needs a tokio runtime.
    pub fn load(config: Config) -> Result<AppState, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| Error::Spawn {
            what: "the server's background tasks",
            source: std::io::Error::other(e),
        })?;
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let backend = Backend::load(&config, metrics.clone())?;
        tracing::info!(
            model = %backend.spec().name,
            version = %backend.spec().card.version,
            threads = config.inference_threads,
            "model loaded"
        );
        let shadow = match &config.shadow_model_dir {
            Some(dir) => {
                let load = LoadSpec {
                    dir: crate::source::resolve(dir)?,
                    name: backend.spec().name.clone(),
                    role: Role::Shadow,
                };
                let shadow = Backend::open(&config, &load, metrics.clone(), &runtime)?;
                shadow::check_pair(backend.spec(), shadow.spec())?;
                tracing::info!(
                    version = %shadow.spec().card.version,
                    threads = config.shadow_inference_threads,
                    "shadow model loaded"
                );
                Some(shadow)
            }
            None => None,
        };
        let log = match &config.log_dir {
            Some(dir) => {
                let log = PredictionLog::open(dir, config.log_segment_bytes)?;
                if config.log_segment_seconds > 0 {
                    log.rotate_every(std::time::Duration::from_secs(config.log_segment_seconds))?;
                }
                Some(log)
            }
            None => None,
        };
        let (state, mirrored) = AppState::new(
            config,
            registry,
            metrics,
            backend,
            shadow,
            log,
            runtime.clone(),
        );
        runtime.spawn(shadow::dispatch(state.downgrade(), mirrored));
        if let Some(interval) = state.config().watch_interval() {
            tracing::info!(
                seconds = interval.as_secs(),
                "watching the model folder for new versions"
            );
            runtime.spawn(reload::watch(state.downgrade(), interval));
        }
        Ok(state)
    }
}
