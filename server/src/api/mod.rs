//! The HTTP API: KServe V1, Open Inference Protocol V2, metrics and the OpenAPI document.

pub mod feedback;
pub mod lineage;
pub mod openapi;
pub mod production;
pub mod repository;
pub mod v1;
pub mod v2;

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use serde_json::Value;

use crate::backend::{Backend, PredictError};
use crate::error::ApiError;
use crate::metrics::{self, RequestLabels};
use crate::model::{Columns, Predictions};
use crate::state::AppState;

pub use crate::record::Values;
pub(crate) use crate::record::prediction_values;

/// Every route of the server.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config().max_body_bytes;
    Router::new()
        .route("/v1/models", get(v1::list_models))
        .route(
            "/v1/models/{name_action}",
            get(v1::model_status).post(v1::predict),
        )
        // The capture is named like the one above: the router refuses two names for one segment.
        .route(
            "/v1/models/{name_action}/feedback",
            axum::routing::post(feedback::feedback),
        )
        .route("/v1/models/{name_action}/stats", get(feedback::stats))
        .route("/v1/models/{name_action}/lineage", get(lineage::lineage))
        .route(
            "/v1/models/{name_action}/production",
            get(production::production),
        )
        .route("/v2", get(v2::server_metadata))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::ready))
        .route("/v2/models/{name}", get(v2::model_metadata))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(v2::model_version_metadata),
        )
        .route("/v2/models/{name}/ready", get(v2::model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(v2::model_version_ready),
        )
        .route("/v2/models/{name}/infer", axum::routing::post(v2::infer))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            axum::routing::post(v2::infer_version),
        )
        .route(
            "/v2/repository/index",
            get(repository::index).post(repository::index_post),
        )
        .route(
            "/v2/repository/models/{name}/load",
            axum::routing::post(repository::load),
        )
        .route("/metrics", get(metrics_text))
        .route("/api-doc/openapi.json", get(openapi::document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /api-doc/openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

/// The model version that answered a request, set by prediction handlers: a request that began
/// before a reload is labelled with the version that served it, not the one serving at its end.
#[derive(Clone, Debug)]
pub struct ServedVersion(pub String);

/// Records latency and outcome of every request by route template.
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    let model_version = match response.extensions().get::<ServedVersion>() {
        Some(ServedVersion(version)) => version.clone(),
        None => state.current().spec().card.version.clone(),
    };
    let labels = RequestLabels {
        method,
        route,
        code: response.status().as_u16(),
        model_version,
    };
    let metrics = state.metrics();
    metrics
        .request_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    metrics.requests.get_or_create(&labels).inc();
    response
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus metrics (OpenMetrics text)", body = String))
)]
pub async fn metrics_text(State(state): State<AppState>) -> Response {
    let mut text = String::new();
    if encode(&mut text, state.registry()).is_err() {
        return ApiError::internal("failed to encode metrics").into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        )],
        text,
    )
        .into_response()
}

/// A JSON request body: checks the content type and the size limit, and parses into a
/// `serde_json::Value` so that validation can name the exact field at fault.
pub struct JsonBody(pub Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<JsonBody, ApiError> {
        let bytes = body_bytes(request, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A JSON request body, checked for content type and size but not parsed yet: V2 infer parses
/// it into typed fields first and builds a [`Value`] only when that fast path refuses it.
pub struct RawJsonBody(pub Bytes);

impl FromRequest<AppState> for RawJsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<RawJsonBody, ApiError> {
        body_bytes(request, state).await.map(RawJsonBody)
    }
}

/// Like [`JsonBody`], for routes where the body may be left out: an empty body is `None`.
pub struct OptionalJsonBody(pub Option<Value>);

impl FromRequest<AppState> for OptionalJsonBody {
    type Rejection = ApiError;

    async fn from_request(
        request: Request,
        state: &AppState,
    ) -> Result<OptionalJsonBody, ApiError> {
        let bytes = body_bytes(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        parse_json(&bytes).map(|value| OptionalJsonBody(Some(value)))
    }
}

/// The body of `request`, after checking its content type (a missing one is accepted) and size.
async fn body_bytes(request: Request, state: &AppState) -> Result<Bytes, ApiError> {
    if let Some(content_type) = request.headers().get(header::CONTENT_TYPE) {
        let essence = content_type
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let json = essence == "application/json"
            || (essence.starts_with("application/") && essence.ends_with("+json"));
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("expected content-type application/json, got '{essence}'"),
            )
            .at("content-type"));
        }
    }
    let limit = state.config().max_body_bytes;
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            let status = rejection.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("request body is larger than {limit} bytes (--max-body-bytes)")
            } else {
                format!("failed to read the request body: {}", rejection.body_text())
            };
            ApiError::new(status, message).at("body")
        })
}

pub(crate) fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::field(
            "body",
            format!("invalid JSON: {e} (NaN and Infinity are not JSON)"),
        )
    })
}

/// A fresh request id: a random UUID (v4) in its hyphenated form.
pub(crate) fn new_id() -> String {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut text)
        .to_owned()
}

/// Runs `columns` through `backend` within the request timeout, mapping failures to answers.
pub(crate) async fn run(
    state: &AppState,
    backend: &Backend,
    columns: Columns,
) -> Result<Predictions, ApiError> {
    let timeout = state.config().request_timeout();
    match tokio::time::timeout(timeout, backend.predict(columns)).await {
        Ok(Ok(predictions)) => Ok(predictions),
        Ok(Err(PredictError::QueueFull)) => Err(ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "the inference queue is full; retry after a moment",
            )
        }),
        Ok(Err(PredictError::Closed)) => Err(ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            )
        }),
        Ok(Err(PredictError::Failed(message))) => {
            Err(ApiError::internal(format!("inference failed: {message}")))
        }
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "prediction took longer than {} ms (--request-timeout-ms)",
                timeout.as_millis()
            ),
        )),
    }
}
