//! The model repository extension of the Open Inference Protocol, as Triton and KServe shape it:
//! `POST /v2/repository/models/{name}/load` (hot reload) and `GET|POST /v2/repository/index`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::OptionalJsonBody;
use crate::backend::Backend;
use crate::error::{ApiError, ErrorBody};
use crate::reload::{self, MODEL_DIR_FIELD, ReloadRequest, SHADOW_DIR_FIELD};
use crate::state::AppState;

/// Where to load from; every field is optional.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct LoadParameters {
    /// Folder (path or `file://` URI) holding the new version's model.onnx and model.json;
    /// absent: reload from the current folder (unless only `shadow_model_dir` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_dir: Option<String>,
    /// Folder of a shadow model to load in place of the current one; "" removes the shadow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_model_dir: Option<String>,
}

/// The body of a load request; it may be left out entirely.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct LoadRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<LoadParameters>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoadResponse {
    pub name: String,
    /// The primary's version now.
    pub version: String,
    /// The primary's version before the load (the same when only the shadow changed).
    pub previous_version: String,
    /// The shadow's version now, when a shadow is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_version: Option<String>,
    /// The shadow version this load replaced or removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_shadow_version: Option<String>,
}

/// One loaded model.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    /// READY, or UNAVAILABLE while shutting down.
    pub state: String,
    /// `primary` (answers clients) or `shadow` (mirrored requests, logged only).
    pub role: String,
    /// Why the latest load failed (the primary's entry only); the listed version still serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The parameters of a load request, with each mistake named by its field.
fn parse(body: Option<&Value>) -> Result<ReloadRequest, ApiError> {
    let mut request = ReloadRequest::default();
    let object = match body {
        None | Some(Value::Null) => return Ok(request),
        Some(Value::Object(object)) => object,
        Some(_) => {
            return Err(ApiError::field(
                "body",
                "expected an object {\"parameters\": {\"model_dir\": ...}} or no body",
            ));
        }
    };
    if let Some(key) = object.keys().find(|k| *k != "parameters") {
        return Err(ApiError::field(
            key.clone(),
            "unknown field; a load request takes only \"parameters\"",
        ));
    }
    let parameters = match object.get("parameters") {
        None | Some(Value::Null) => return Ok(request),
        Some(Value::Object(parameters)) => parameters,
        Some(_) => {
            return Err(ApiError::field(
                "parameters",
                "expected an object with model_dir and/or shadow_model_dir",
            ));
        }
    };
    for (key, value) in parameters {
        match (key.as_str(), value) {
            ("model_dir", Value::String(dir)) if !dir.trim().is_empty() => {
                request.model_dir = Some(dir.clone());
            }
            ("model_dir", _) => {
                return Err(ApiError::field(
                    MODEL_DIR_FIELD,
                    "expected a non-empty string: a folder or file:// URI holding model.onnx and model.json",
                ));
            }
            ("shadow_model_dir", Value::String(dir)) => {
                request.shadow_model_dir = Some(dir.trim().to_string());
            }
            ("shadow_model_dir", _) => {
                return Err(ApiError::field(
                    SHADOW_DIR_FIELD,
                    "expected a string: a folder or file:// URI holding model.onnx and model.json, or \"\" to remove the shadow",
                ));
            }
            (other, _) => {
                return Err(ApiError::field(
                    format!("parameters.{other}"),
                    "unknown parameter; expected model_dir or shadow_model_dir",
                ));
            }
        }
    }
    Ok(request)
}

#[utoipa::path(
    post,
    path = "/v2/repository/models/{name}/load",
    tag = "repository",
    params(("name" = String, Path, description = "Model name")),
    request_body(content = LoadRequest, description = "Optional: without a body the model is reloaded from its current folder"),
    responses(
        (status = 200, description = "The new version is serving; the one it replaced has drained", body = LoadResponse),
        (status = 400, description = "Invalid parameters, an unsupported URI, or no model.json / model.onnx in the folder; `field` names the parameter. The old version keeps serving", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 422, description = "The folder holds a model that cannot be served (invalid card, card and graph disagree, failed warm-up, shadow not comparable); `field` names the parameter. The old version keeps serving", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody)
    ),
    security((), ("bearer" = []))
)]
pub async fn load(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<OptionalJsonBody, ApiError>,
) -> Result<Json<LoadResponse>, ApiError> {
    state.authorize(&headers)?;
    state.model(&name)?;
    let OptionalJsonBody(body) = body?;
    let request = parse(body.as_ref())?;
    let reloaded = reload::reload(&state, request).await?;
    Ok(Json(LoadResponse {
        name: reloaded.name,
        version: reloaded.version,
        previous_version: reloaded.previous_version,
        shadow_version: reloaded.shadow_version,
        previous_shadow_version: reloaded.previous_shadow_version,
    }))
}

fn entry(state: &AppState, backend: &Backend, reason: Option<String>) -> IndexEntry {
    let spec = backend.spec();
    IndexEntry {
        name: spec.name.clone(),
        version: spec.card.version.clone(),
        state: if state.is_ready() {
            "READY"
        } else {
            "UNAVAILABLE"
        }
        .into(),
        role: backend.role().as_str().into(),
        reason,
    }
}

fn entries(state: &AppState) -> Vec<IndexEntry> {
    let mut entries = vec![entry(state, &state.current(), state.reload_error())];
    if let Some(shadow) = state.shadow() {
        entries.push(entry(state, &shadow, None));
    }
    entries
}

#[utoipa::path(
    get,
    path = "/v2/repository/index",
    tag = "repository",
    responses((status = 200, description = "The loaded models: the primary, then the shadow if any", body = Vec<IndexEntry>))
)]
pub async fn index(State(state): State<AppState>) -> Json<Vec<IndexEntry>> {
    Json(entries(&state))
}

/// Triton's clients ask with POST (and an optional `{"ready": bool}` body, ignored here: every
/// listed model is loaded).
#[utoipa::path(
    post,
    path = "/v2/repository/index",
    tag = "repository",
    responses((status = 200, description = "The loaded models, as for GET", body = Vec<IndexEntry>))
)]
pub async fn index_post(State(state): State<AppState>) -> Json<Vec<IndexEntry>> {
    Json(entries(&state))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn load_parameters() {
        assert_eq!(parse(None).unwrap(), ReloadRequest::default());
        assert_eq!(parse(Some(&json!({}))).unwrap(), ReloadRequest::default());
        assert_eq!(
            parse(Some(&json!({"parameters": {"model_dir": "file:///m/v2"}}))).unwrap(),
            ReloadRequest {
                model_dir: Some("file:///m/v2".into()),
                shadow_model_dir: None
            }
        );
        assert_eq!(
            parse(Some(&json!({"parameters": {"shadow_model_dir": ""}}))).unwrap(),
            ReloadRequest {
                model_dir: None,
                shadow_model_dir: Some(String::new())
            }
        );
        let field = |body: Value| parse(Some(&body)).unwrap_err().body.field.unwrap();
        assert_eq!(field(json!([])), "body");
        assert_eq!(field(json!({"model_dir": "x"})), "model_dir");
        assert_eq!(field(json!({"parameters": "x"})), "parameters");
        assert_eq!(
            field(json!({"parameters": {"model_dir": ""}})),
            "parameters.model_dir"
        );
        assert_eq!(
            field(json!({"parameters": {"shadow_model_dir": 3}})),
            "parameters.shadow_model_dir"
        );
        assert_eq!(
            field(json!({"parameters": {"config": "{}"}})),
            "parameters.config"
        );
    }
}
