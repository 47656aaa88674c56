//! Hot reload: load a new model version beside the serving one, warm it up, swap it in
//! atomically, then let the old one drain. Triggered by the repository API
//! (`POST /v2/repository/models/{name}/load`) or by the folder watch (`--watch-interval-seconds`).
//!
//! Why no request fails: a handler reads the serving model once and keeps its `Arc` until it has
//! answered, and a model's queue and inference threads live as long as any `Arc` to it. So
//! requests that began before the swap finish on the old version, requests after it go to the
//! new one, and the old threads stop when its last request is done. A model that fails to load
//! or warm up is never swapped in; the old one keeps serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;

use crate::backend::{Backend, LoadSpec, Role};
use crate::error::{ApiError, Error};
use crate::shadow;
use crate::source::{self, Fingerprint};
use crate::state::{AppState, WeakState};

pub const MODEL_DIR_FIELD: &str = "parameters.model_dir";
pub const SHADOW_DIR_FIELD: &str = "parameters.shadow_model_dir";

/// What to load. The default reloads the primary from the folder it was loaded from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReloadRequest {
    /// A new folder (path or file:// URI) for the primary.
    pub model_dir: Option<String>,
    /// A folder for the shadow; `Some("")` removes the shadow. Given alone, only the shadow
    /// changes.
    pub shadow_model_dir: Option<String>,
}

/// What a reload changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Reloaded {
    pub name: String,
    pub version: String,
    pub previous_version: String,
    /// The shadow's version after the reload, if one is loaded.
    pub shadow_version: Option<String>,
    /// The shadow version this reload replaced or removed.
    pub previous_shadow_version: Option<String>,
}

/// Loads, warms up and swaps in what `request` names, then drains what it replaced. The work runs
/// in its own task, so a client that hangs up cannot leave a reload half done.
pub async fn reload(state: &AppState, request: ReloadRequest) -> Result<Reloaded, ApiError> {
    let task_state = state.clone();
    state
        .runtime()
        .spawn(async move { reload_now(&task_state, request).await })
        .await
        .map_err(|e| ApiError::internal(format!("the reload task failed: {e}")))?
}

async fn reload_now(state: &AppState, request: ReloadRequest) -> Result<Reloaded, ApiError> {
    let _one_at_a_time = state.lock_reloads().await;
    if !state.is_ready() {
        return Err(ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            )
        });
    }
    let result = load_and_swap(state, request).await;
    state.metrics().reload(result.is_ok());
    match &result {
        Ok(reloaded) => {
            state.set_reload_error(None);
            tracing::info!(
                model = %reloaded.name,
                version = %reloaded.version,
                previous_version = %reloaded.previous_version,
                shadow_version = reloaded.shadow_version.as_deref().unwrap_or("-"),
                "model reloaded"
            );
        }
        Err(error) => {
            state.set_reload_error(Some(error.body.error.clone()));
            tracing::warn!(error = %error.body.error, "reload failed; the serving model is unchanged");
        }
    }
    result
}

async fn load_and_swap(state: &AppState, request: ReloadRequest) -> Result<Reloaded, ApiError> {
    let current = state.current();
    let name = current.spec().name.clone();
    // s3:// sources are downloaded into the cache; the folders now serving stay there.
    // A new primary's folder is kept too while the shadow's is fetched: neither is loaded yet.
    let cache = state.config().model_cache_dir.clone();
    let mut keep: Vec<PathBuf> = vec![current.dir().to_path_buf()];
    keep.extend(state.shadow().map(|b| b.dir().to_path_buf()));
    let primary_dir = match &request.model_dir {
        Some(uri) => Some(
            source::locate(uri, &cache, &refs(&keep))
                .await
                .map_err(|e| load_error(&e, MODEL_DIR_FIELD))?,
        ),
        // A plain reload goes back to the source: the bucket, for a cached copy.
        None if request.shadow_model_dir.is_none() => Some(
            source::refresh(current.dir(), &cache, &refs(&keep))
                .await
                .map_err(|e| load_error(&e, MODEL_DIR_FIELD))?,
        ),
        None => None,
    };
    keep.extend(primary_dir.clone());
    let shadow_dir: Option<Option<PathBuf>> = match request.shadow_model_dir.as_deref() {
        None => None,
        Some("") => Some(None),
        Some(uri) => Some(Some(
            source::locate(uri, &cache, &refs(&keep))
                .await
                .map_err(|e| load_error(&e, SHADOW_DIR_FIELD))?,
        )),
    };

    let primary = match primary_dir {
        Some(dir) => Some(
            load(state, dir, name.clone(), Role::Primary)
                .await
                .map_err(|e| load_error(&e, MODEL_DIR_FIELD))?,
        ),
        None => None,
    };
    let shadow = match shadow_dir {
        Some(Some(dir)) => Some(Some(
            load(state, dir, name.clone(), Role::Shadow)
                .await
                .map_err(|e| load_error(&e, SHADOW_DIR_FIELD))?,
        )),
        Some(None) => Some(None),
        None => None,
    };

    // The pair that will serve must make sense together before anything is swapped.
    let current_shadow = state.shadow();
    let primary_spec = primary
        .as_ref()
        .map_or_else(|| current.spec().clone(), |b| b.spec().clone());
    let shadow_spec = match &shadow {
        Some(next) => next.as_ref().map(|b| b.spec().clone()),
        None => current_shadow.as_ref().map(|b| b.spec().clone()),
    };
    if let Some(shadow_spec) = &shadow_spec {
        let field = if shadow.is_some() {
            SHADOW_DIR_FIELD
        } else {
            MODEL_DIR_FIELD
        };
        shadow::check_pair(&primary_spec, shadow_spec).map_err(|e| load_error(&e, field))?;
    }
    drop(current_shadow);

    let previous_version = current.spec().card.version.clone();
    drop(current);
    let replaced = primary.map(|backend| state.swap_primary(backend));
    let replaced_shadow = shadow.and_then(|next| state.swap_shadow(next));
    let previous_shadow_version = replaced_shadow
        .as_ref()
        .map(|b| b.spec().card.version.clone());
    let timeout = state.config().request_timeout() + Duration::from_secs(1);
    if let Some(old) = replaced {
        drain(old, timeout).await;
    }
    if let Some(old) = replaced_shadow {
        drain(old, timeout).await;
    }
    Ok(Reloaded {
        name,
        version: primary_spec.card.version.clone(),
        previous_version,
        shadow_version: shadow_spec.map(|s| s.card.version.clone()),
        previous_shadow_version,
    })
}

fn refs(paths: &[PathBuf]) -> Vec<&std::path::Path> {
    paths.iter().map(PathBuf::as_path).collect()
}

/// Loads a model off the async workers (reading and optimizing a graph blocks).
async fn load(state: &AppState, dir: PathBuf, name: String, role: Role) -> Result<Backend, Error> {
    let task_state = state.clone();
    let runtime = state.runtime().clone();
    tokio::task::spawn_blocking(move || {
        let load = LoadSpec { dir, name, role };
        Backend::open(
            task_state.config(),
            &load,
            task_state.metrics().clone(),
            &runtime,
        )
    })
    .await
    .map_err(|e| Error::Spawn {
        what: "the model loader",
        source: std::io::Error::other(e.to_string()),
    })?
}

/// Waits (at most `timeout`) until the requests still holding `old` have finished; its inference
/// threads stop when the last handle goes.
async fn drain(old: Arc<Backend>, timeout: Duration) {
    let version = old.spec().card.version.clone();
    let role = old.role().as_str();
    let deadline = tokio::time::Instant::now() + timeout;
    while Arc::strong_count(&old) > 1 {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                %version,
                role,
                "replaced model still has requests in flight; it stops when they finish"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tracing::info!(%version, role, "replaced model drained");
}

/// The answer for a model that could not be loaded: the client's mistake (no such folder, an
/// unsupported URI) is 400, a model that is there but not servable is 422, the rest 500. `field`
/// names the parameter that pointed at the model.
pub fn load_error(error: &Error, field: &str) -> ApiError {
    let status = match error {
        Error::Read { .. } => StatusCode::BAD_REQUEST,
        Error::Card { .. }
        | Error::Incompatible { .. }
        | Error::Ort { .. }
        | Error::Output(_)
        | Error::WarmUp { .. }
        | Error::ShadowMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Error::OrtLoad { .. }
        | Error::Spawn { .. }
        | Error::Log { .. }
        | Error::Bind { .. }
        | Error::Serve(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, error.to_string()).at(field)
}

/// Polls the primary's folder every `interval` and reloads it when its fingerprint changes.
///
/// Polling is deliberate: model folders live on PVCs, NFS mounts and object stores, where inotify
/// sees nothing or is unreliable; reading one small card and stating one file (or two HEAD
/// requests for an `s3://` source) per interval costs next to nothing.
pub(crate) async fn watch(state: WeakState, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; the model was just loaded.
    ticker.tick().await;
    // A change seen once, waiting to be seen unchanged one interval later: files are copied in
    // one after the other, so acting on the first sight would load a half-written version.
    let mut pending: Option<Fingerprint> = None;
    // The fingerprint of a version that failed to load: not retried until the folder changes.
    let mut failed: Option<Fingerprint> = None;
    loop {
        ticker.tick().await;
        let Some(state) = state.upgrade() else { return };
        if !state.is_ready() {
            return;
        }
        let current = state.current();
        let dir = current.dir().to_path_buf();
        let loaded = current.fingerprint().cloned();
        drop(current);
        // Local files, or the source objects' stamps for a model downloaded from a bucket.
        let seen = match Fingerprint::poll(&dir).await {
            Ok(seen) => seen,
            Err(error) => {
                // Mid-copy, or the volume or the bucket is briefly away: look again next time.
                tracing::debug!(%error, "model folder not readable; checking again later");
                continue;
            }
        };
        if loaded.as_ref() == Some(&seen) || failed.as_ref() == Some(&seen) {
            pending = None;
            continue;
        }
        if pending.as_ref() != Some(&seen) {
            pending = Some(seen);
            continue;
        }
        pending = None;
        tracing::info!("model folder changed; reloading");
        match reload(&state, ReloadRequest::default()).await {
            Ok(_) => failed = None,
            // reload_now has logged and counted it.
            Err(_) => failed = Some(seen),
        }
    }
}
