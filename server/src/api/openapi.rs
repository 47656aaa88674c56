//! The OpenAPI document, generated from the handlers' annotations.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{feedback, lineage, production, repository, v1, v2};
use crate::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "flywheel-server",
        description = "Serves a Flywheel model over KServe V1 and the Open Inference Protocol (V2), takes feedback, and hot-reloads new versions."
    ),
    paths(
        v1::list_models,
        v1::model_status,
        v1::predict,
        feedback::feedback,
        feedback::stats,
        lineage::lineage,
        production::production,
        v2::server_metadata,
        v2::live,
        v2::ready,
        v2::model_metadata,
        v2::model_version_metadata,
        v2::model_ready,
        v2::model_version_ready,
        v2::infer,
        v2::infer_version,
        repository::load,
        repository::index,
        repository::index_post,
        super::metrics_text,
        document,
    ),
    components(schemas(
        ErrorBody,
        super::Values,
        v1::ModelList,
        v1::ModelStatus,
        v1::PredictRequest,
        v1::PredictResponse,
        feedback::FeedbackItem,
        feedback::FeedbackRequest,
        feedback::FeedbackResponse,
        feedback::VersionStats,
        feedback::StatsResponse,
        lineage::VersionLineage,
        lineage::LineageResponse,
        v2::ServerMetadata,
        v2::Live,
        v2::Ready,
        v2::ModelReady,
        v2::TensorMetadata,
        v2::ModelMetadata,
        v2::RequestInput,
        v2::RequestOutput,
        v2::InferRequest,
        v2::ResponseOutput,
        v2::InferResponse,
        v2::InferParameters,
        repository::LoadParameters,
        repository::LoadRequest,
        repository::LoadResponse,
        repository::IndexEntry,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "v1", description = "KServe V1 protocol"),
        (name = "v2", description = "Open Inference Protocol (KServe V2)"),
        (name = "feedback", description = "Actual outcomes joined with predictions; online metrics"),
        (name = "repository", description = "Model repository extension: hot reload and the loaded models"),
        (name = "operations", description = "Metrics and this document")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document as JSON, rendered once.
pub fn json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    })
}

#[utoipa::path(
    get,
    path = "/api-doc/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This OpenAPI document", content_type = "application/json"))
)]
pub async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json()).into_response()
}
