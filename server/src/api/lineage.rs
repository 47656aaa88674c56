//! `GET /v1/models/{name}/lineage`: where the served model (and its shadow) came from, from
//! their model cards — so every prediction's `model_version` can be traced to the trial, the
//! hyper-parameters, the data and the studies behind it.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use flywheel_core::model_card::ModelCard;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// One model version's origin.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionLineage {
    /// The version every prediction of this model reports.
    pub version: String,
    /// primary (answers requests) or shadow (mirrored traffic only).
    pub role: String,
    /// Model family (e.g. gradient_boosting).
    pub family: String,
    /// Hyper-parameter values the trial used.
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    /// Validation metrics from training.
    pub metrics: BTreeMap<String, f64>,
    /// The study that produced the model.
    pub study: Option<String>,
    /// The trial that produced the model.
    pub trial: Option<String>,
    /// Retraining generation of the study (0: an original study).
    pub generation: u32,
    /// The studies that study retrained, nearest first.
    pub parent_studies: Vec<String>,
    /// The training table.
    pub dataset_uri: String,
    /// sha256 of the training table.
    pub dataset_digest: String,
    /// Rows of the training table.
    pub dataset_rows: u64,
    /// Trainer version that built the model.
    pub trainer_version: String,
    /// When the model was built (RFC 3339).
    pub created_at: String,
}

/// The lineage of the served model and, when one is loaded, of its shadow.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineageResponse {
    pub name: String,
    pub model: VersionLineage,
    pub shadow: Option<VersionLineage>,
}

fn version_lineage(card: &ModelCard, role: &str) -> VersionLineage {
    VersionLineage {
        version: card.version.clone(),
        role: role.into(),
        family: card.family.to_string(),
        params: serde_json::to_value(&card.params).unwrap_or_default(),
        metrics: card.metrics.clone(),
        study: card.lineage.study.clone(),
        trial: card.lineage.trial.clone(),
        generation: card.lineage.generation,
        parent_studies: card.lineage.parent_studies.clone(),
        dataset_uri: card.lineage.dataset_uri.clone(),
        dataset_digest: card.lineage.dataset_digest.clone(),
        dataset_rows: card.lineage.dataset_rows,
        trainer_version: card.lineage.trainer_version.clone(),
        created_at: card.lineage.created_at.clone(),
    }
}

#[utoipa::path(
    get,
    path = "/v1/models/{name}/lineage",
    tag = "v1",
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 200, description = "Where the served model and its shadow came from", body = LineageResponse),
        (status = 404, description = "Unknown model", body = ErrorBody)
    )
)]
pub async fn lineage(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<LineageResponse>, ApiError> {
    let model = state.model(&name)?;
    let spec = model.spec();
    Ok(Json(LineageResponse {
        name: spec.name.clone(),
        model: version_lineage(&spec.card, "primary"),
        shadow: state
            .shadow()
            .map(|shadow| version_lineage(&shadow.spec().card, "shadow")),
    }))
}
