//! KServe V1 protocol: `/v1/models`, `/v1/models/{name}`, `/v1/models/{name}:predict`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{JsonBody, ServedVersion, Values, prediction_values};
use crate::backend::Role;
use crate::error::{ApiError, ErrorBody};
use crate::input;
use crate::model::{ModelSpec, Predictions};
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// Names of the models served.
    pub models: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelStatus {
    pub name: String,
    pub ready: bool,
    /// Version label reported with every prediction.
    pub version: String,
}

/// A batch of rows, each an object keyed by raw column name (null for a missing value) or an
/// array of values in the model's input order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PredictRequest {
    #[schema(value_type = Vec<Object>)]
    pub instances: Vec<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PredictResponse {
    /// One per instance: the class label (classifiers) or the predicted value (regression).
    pub predictions: Values,
    /// Classifiers only: one `{class: probability}` object per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probabilities: Option<Vec<BTreeMap<String, f32>>>,
    pub model_version: String,
    /// One id per instance, for correlating later feedback with the prediction.
    pub request_ids: Vec<String>,
}

#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "v1",
    responses((status = 200, description = "Models served", body = ModelList))
)]
pub async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        models: vec![state.current().spec().name.clone()],
    })
}

/// `GET /v1/models/{name}`; axum cannot mix a capture and a literal within one segment, so the
/// segment is captured whole and split here.
#[utoipa::path(
    get,
    path = "/v1/models/{name}",
    tag = "v1",
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 200, description = "Model status", body = ModelStatus),
        (status = 404, description = "Unknown model", body = ErrorBody)
    )
)]
pub async fn model_status(
    State(state): State<AppState>,
    Path(name_action): Path<String>,
) -> Result<Json<ModelStatus>, ApiError> {
    if name_action.contains(':') {
        return Err(ApiError::not_found(format!(
            "'{name_action}' is not a model; POST to /v1/models/{{name}}:predict to predict"
        )));
    }
    let model = state.model(&name_action)?;
    Ok(Json(ModelStatus {
        name: model.spec().name.clone(),
        ready: state.is_ready(),
        version: model.spec().card.version.clone(),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/models/{name}:predict",
    tag = "v1",
    params(("name" = String, Path, description = "Model name")),
    request_body = PredictRequest,
    responses(
        (status = 200, description = "Predictions", body = PredictResponse),
        (status = 400, description = "Invalid request; `field` names the culprit", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 413, description = "Body larger than --max-body-bytes", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 429, description = "Inference queue full; see Retry-After", body = ErrorBody),
        (status = 500, description = "The prediction log could not be written", body = ErrorBody),
        (status = 504, description = "Prediction timed out", body = ErrorBody)
    ),
    security((), ("bearer" = []))
)]
pub async fn predict(
    State(state): State<AppState>,
    Path(name_action): Path<String>,
    headers: HeaderMap,
    body: Result<JsonBody, ApiError>,
) -> Result<(Extension<ServedVersion>, Json<PredictResponse>), ApiError> {
    let Some((name, action)) = name_action.rsplit_once(':') else {
        return Err(ApiError::not_found(format!(
            "POST /v1/models/{name_action}:predict to predict with '{name_action}'"
        )));
    };
    if action != "predict" {
        return Err(ApiError::not_found(format!(
            "unknown action ':{action}'; this server supports ':predict'"
        )));
    }
    state.authorize(&headers)?;
    let model = state.model(name)?;
    let JsonBody(body) = body?;
    let columns = input::from_instances(model.spec(), &body, state.config().max_instances)?;
    let rows = columns.rows;
    let spec = model.spec();
    let inputs = crate::record::row_inputs(&state, spec, &columns);
    let mirror = state.mirror_copy(&columns);
    let predictions = super::run(&state, &model, columns).await?;
    let response = response(spec, &predictions, rows);
    crate::record::record_predictions(
        &state,
        spec,
        Role::Primary,
        inputs,
        &predictions,
        &response.request_ids,
    )
    .await?;
    if let Some(columns) = mirror {
        state.mirror(spec.clone(), columns, response.request_ids.clone());
    }
    Ok((
        Extension(ServedVersion(spec.card.version.clone())),
        Json(response),
    ))
}

fn response(spec: &ModelSpec, predictions: &Predictions, rows: usize) -> PredictResponse {
    let classes = &spec.card.classes;
    let probabilities = spec.is_classifier().then(|| {
        (0..rows)
            .map(|row| {
                let p = predictions.row_probabilities(row).unwrap_or(&[]);
                classes.iter().cloned().zip(p.iter().copied()).collect()
            })
            .collect()
    });
    PredictResponse {
        predictions: prediction_values(spec, predictions),
        probabilities,
        model_version: spec.card.version.clone(),
        request_ids: (0..rows).map(|_| super::new_id()).collect(),
    }
}
