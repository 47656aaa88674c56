//! Open Inference Protocol (KServe V2) over REST.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use flywheel_core::model_card::ColumnKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;

use utoipa::ToSchema;

use super::{RawJsonBody, ServedVersion, Values, new_id, parse_json, prediction_values};
use crate::backend::Role;
use crate::error::{ApiError, ErrorBody};
use crate::input;
use crate::model::{Columns, LabelOutput, ModelSpec, Predictions};
use crate::state::AppState;
use ort::value::TensorElementType;

/// Output tensor names.
pub const PREDICTIONS: &str = "predictions";
pub const PROBABILITIES: &str = "probabilities";

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ServerMetadata {
    pub name: String,
    pub version: String,
    pub extensions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Live {
    pub live: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    pub ready: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelReady {
    pub name: String,
    pub ready: bool,
}

/// A tensor's name, datatype and shape; -1 marks a variable dimension.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    /// One input per raw column, shape [-1, 1] (shape [N] is accepted too).
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

/// One input tensor; `data` is flat row-major or nested. A null element is a missing value
/// where the column allows one (an extension: JSON has no NaN).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RequestInput {
    pub name: String,
    pub shape: Vec<u64>,
    /// BOOL, INT32, INT64, FP32, FP64 or BYTES.
    pub datatype: String,
    #[schema(value_type = Vec<Object>)]
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RequestOutput {
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InferRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    pub inputs: Vec<RequestInput>,
    /// Outputs to return; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<RequestOutput>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResponseOutput {
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub datatype: &'static str,
    /// Row-major, flat.
    pub data: Values,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    /// The request's id, or a fresh one.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<InferParameters>,
    pub outputs: Vec<ResponseOutput>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InferParameters {
    /// One id per row for feedback: `id` itself for a single row, `{id}/{row}` otherwise.
    pub request_ids: Vec<String>,
}

#[utoipa::path(
    get,
    path = "/v2",
    tag = "v2",
    responses((status = 200, description = "Server metadata", body = ServerMetadata))
)]
pub async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: "flywheel-server".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: vec!["model_repository".into()],
    })
}

#[utoipa::path(
    get,
    path = "/v2/health/live",
    tag = "v2",
    responses((status = 200, description = "The process is up", body = Live))
)]
pub async fn live() -> Json<Live> {
    Json(Live { live: true })
}

#[utoipa::path(
    get,
    path = "/v2/health/ready",
    tag = "v2",
    responses(
        (status = 200, description = "Ready to serve", body = Ready),
        (status = 503, description = "Not ready (starting or shutting down)", body = Ready)
    )
)]
pub async fn ready(State(state): State<AppState>) -> Response {
    let ready = state.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Ready { ready })).into_response()
}

fn metadata(spec: &ModelSpec) -> ModelMetadata {
    let inputs = spec
        .card
        .inputs
        .iter()
        .map(|c| TensorMetadata {
            name: c.name.clone(),
            datatype: match c.kind {
                ColumnKind::Numeric => "FP32",
                ColumnKind::Boolean => "BOOL",
                ColumnKind::Categorical => "BYTES",
            }
            .into(),
            shape: vec![-1, 1],
        })
        .collect();
    let mut outputs = vec![TensorMetadata {
        name: PREDICTIONS.into(),
        datatype: match spec.label {
            LabelOutput::ClassIndex | LabelOutput::ClassName => "BYTES",
            LabelOutput::Value(TensorElementType::Float64) => "FP64",
            LabelOutput::Value(_) => "FP32",
        }
        .into(),
        shape: vec![-1],
    }];
    if spec.is_classifier() {
        outputs.push(TensorMetadata {
            name: PROBABILITIES.into(),
            datatype: "FP32".into(),
            shape: vec![-1, i64::try_from(spec.card.classes.len()).unwrap_or(-1)],
        });
    }
    ModelMetadata {
        name: spec.name.clone(),
        versions: vec![spec.card.version.clone()],
        platform: "onnxruntime_onnx".into(),
        inputs,
        outputs,
    }
}

#[utoipa::path(
    get,
    path = "/v2/models/{name}",
    tag = "v2",
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 200, description = "Model metadata", body = ModelMetadata),
        (status = 404, description = "Unknown model", body = ErrorBody)
    )
)]
pub async fn model_metadata(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelMetadata>, ApiError> {
    Ok(Json(metadata(state.model(&name)?.spec())))
}

#[utoipa::path(
    get,
    path = "/v2/models/{name}/versions/{version}",
    tag = "v2",
    params(
        ("name" = String, Path, description = "Model name"),
        ("version" = String, Path, description = "Model version")
    ),
    responses(
        (status = 200, description = "Model metadata", body = ModelMetadata),
        (status = 404, description = "Unknown model or version", body = ErrorBody)
    )
)]
pub async fn model_version_metadata(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ModelMetadata>, ApiError> {
    Ok(Json(metadata(
        state.model_version(&name, Some(&version))?.spec(),
    )))
}

fn model_ready_response(
    state: &AppState,
    name: &str,
    version: Option<&str>,
) -> Result<Response, ApiError> {
    let model = state.model_version(name, version)?;
    let ready = state.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((
        status,
        Json(ModelReady {
            name: model.spec().name.clone(),
            ready,
        }),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/v2/models/{name}/ready",
    tag = "v2",
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 200, description = "Model ready", body = ModelReady),
        (status = 404, description = "Unknown model", body = ErrorBody)
    )
)]
pub async fn model_ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    model_ready_response(&state, &name, None)
}

#[utoipa::path(
    get,
    path = "/v2/models/{name}/versions/{version}/ready",
    tag = "v2",
    params(
        ("name" = String, Path, description = "Model name"),
        ("version" = String, Path, description = "Model version")
    ),
    responses(
        (status = 200, description = "Model ready", body = ModelReady),
        (status = 404, description = "Unknown model or version", body = ErrorBody)
    )
)]
pub async fn model_version_ready(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    model_ready_response(&state, &name, Some(&version))
}

#[utoipa::path(
    post,
    path = "/v2/models/{name}/infer",
    tag = "v2",
    params(("name" = String, Path, description = "Model name")),
    request_body = InferRequest,
    responses(
        (status = 200, description = "Inference result", body = InferResponse),
        (status = 400, description = "Invalid request; `field` names the culprit", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 413, description = "Body larger than --max-body-bytes", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 429, description = "Inference queue full; see Retry-After", body = ErrorBody),
        (status = 500, description = "The prediction log could not be written", body = ErrorBody),
        (status = 504, description = "Inference timed out", body = ErrorBody)
    ),
    security((), ("bearer" = []))
)]
pub async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<RawJsonBody, ApiError>,
) -> Result<(Extension<ServedVersion>, Json<InferResponse>), ApiError> {
    infer_inner(state, &name, None, &headers, body).await
}

#[utoipa::path(
    post,
    path = "/v2/models/{name}/versions/{version}/infer",
    tag = "v2",
    params(
        ("name" = String, Path, description = "Model name"),
        ("version" = String, Path, description = "Model version")
    ),
    request_body = InferRequest,
    responses(
        (status = 200, description = "Inference result", body = InferResponse),
        (status = 400, description = "Invalid request; `field` names the culprit", body = ErrorBody),
        (status = 404, description = "Unknown model or version", body = ErrorBody)
    ),
    security((), ("bearer" = []))
)]
pub async fn infer_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<RawJsonBody, ApiError>,
) -> Result<(Extension<ServedVersion>, Json<InferResponse>), ApiError> {
    infer_inner(state, &name, Some(&version), &headers, body).await
}

async fn infer_inner(
    state: AppState,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<RawJsonBody, ApiError>,
) -> Result<(Extension<ServedVersion>, Json<InferResponse>), ApiError> {
    state.authorize(headers)?;
    let model = state.model_version(name, version)?;
    let RawJsonBody(body) = body?;
    let spec = model.spec();
    let Checked {
        columns,
        id,
        wanted,
    } = parse(spec, &body, state.config().max_instances)?;
    let rows = columns.rows;
    let inputs = crate::record::row_inputs(&state, spec, &columns);
    let mirror = state.mirror_copy(&columns);
    let predictions = super::run(&state, &model, columns).await?;
    let request_ids = row_ids(&id, rows);
    crate::record::record_predictions(
        &state,
        spec,
        Role::Primary,
        inputs,
        &predictions,
        &request_ids,
    )
    .await?;
    let request_ids = match mirror {
        Some(columns) => {
            state.mirror(spec.clone(), columns, request_ids.clone());
            request_ids
        }
        None => request_ids,
    };
    Ok((
        Extension(ServedVersion(spec.card.version.clone())),
        Json(InferResponse {
            model_name: spec.name.clone(),
            model_version: spec.card.version.clone(),
            id,
            parameters: Some(InferParameters { request_ids }),
            outputs: outputs(spec, predictions, rows, &wanted),
        }),
    ))
}

/// An infer request, checked.
struct Checked {
    columns: Columns,
    /// The request's id, or a fresh one.
    id: String,
    wanted: Vec<&'static str>,
}

/// Parses and checks an infer body: typed fields first ([`input::fast_tensors`]); anything the
/// fast path refuses goes through the `Value`-based reference path, which names the field at
/// fault.
fn parse(spec: &ModelSpec, body: &[u8], max_instances: usize) -> Result<Checked, ApiError> {
    if let Some(fast) = input::fast_tensors(spec, body, max_instances) {
        let all = all_outputs(spec);
        let wanted = match &fast.outputs {
            None => Some(all.to_vec()),
            Some(names) => names
                .iter()
                .map(|name| all.iter().find(|o| **o == name.as_ref()).copied())
                .collect(),
        };
        if let Some(wanted) = wanted {
            return Ok(Checked {
                columns: fast.columns,
                id: fast.id.map_or_else(new_id, Cow::into_owned),
                wanted,
            });
        }
    }
    let body = parse_json(body)?;
    let columns = input::from_tensors(spec, &body, max_instances)?;
    let wanted = requested_outputs(spec, &body)?;
    let id = match body.get("id") {
        Some(Value::String(id)) => id.clone(),
        None | Some(Value::Null) => new_id(),
        Some(_) => return Err(ApiError::field("id", "expected a string")),
    };
    Ok(Checked {
        columns,
        id,
        wanted,
    })
}

/// Feedback ids of a request's rows: the request id for a single row, `{id}/{row}` otherwise.
fn row_ids(id: &str, rows: usize) -> Vec<String> {
    if rows == 1 {
        vec![id.to_string()]
    } else {
        (0..rows).map(|row| format!("{id}/{row}")).collect()
    }
}

/// The model's output tensors.
fn all_outputs(spec: &ModelSpec) -> &'static [&'static str] {
    if spec.is_classifier() {
        &[PREDICTIONS, PROBABILITIES]
    } else {
        &[PREDICTIONS]
    }
}

/// The names in the request's `outputs`, checked; all outputs when absent.
fn requested_outputs(spec: &ModelSpec, body: &Value) -> Result<Vec<&'static str>, ApiError> {
    let all = all_outputs(spec);
    let requested = match body.get("outputs") {
        None | Some(Value::Null) => return Ok(all.to_vec()),
        Some(Value::Array(requested)) => requested,
        Some(_) => {
            return Err(ApiError::field(
                "outputs",
                "expected an array of {\"name\": ...} objects",
            ));
        }
    };
    let mut wanted = Vec::new();
    for (i, output) in requested.iter().enumerate() {
        let name = output.get("name").and_then(Value::as_str);
        match all.iter().find(|o| Some(**o) == name) {
            Some(o) => wanted.push(*o),
            None => {
                return Err(ApiError::field(
                    format!("outputs[{i}].name"),
                    format!(
                        "unknown output {}; the model has [{}]",
                        output.get("name").unwrap_or(&Value::Null),
                        all.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(wanted)
}

fn outputs(
    spec: &ModelSpec,
    predictions: Predictions,
    rows: usize,
    wanted: &[&str],
) -> Vec<ResponseOutput> {
    let mut out = Vec::new();
    if wanted.contains(&PREDICTIONS) {
        let data = prediction_values(spec, &predictions);
        out.push(ResponseOutput {
            name: PREDICTIONS,
            shape: vec![rows],
            datatype: data.datatype(),
            data,
        });
    }
    if wanted.contains(&PROBABILITIES) && spec.is_classifier() {
        out.push(ResponseOutput {
            name: PROBABILITIES,
            shape: vec![rows, predictions.classes],
            datatype: "FP32",
            data: Values::Fp32(predictions.probabilities),
        });
    }
    out
}
