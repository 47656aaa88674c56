//! `GET /v1/models/{name}/production`: the labelled production rows in the prediction-log
//! archive (every replica's, every run's), as of a cut — the numbers the operator records in
//! the retraining study it starts, and where the serving version erred most.
//!
//! The servers answer this rather than the operator reading the archive itself: they already
//! hold the store credentials and the mount, and know which inputs are categorical.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use flywheel_core::feedback::{self, LogRecord, ProductionSummary};
use flywheel_core::search::space::Task;
use flywheel_store::{Location, Store};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
pub struct ProductionQuery {
    /// Leave out records logged after this time (RFC 3339), e.g. `2026-11-30T10:00:00Z`.
    pub until: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/models/{name}/production",
    tag = "v1",
    params(("name" = String, Path, description = "Model name"), ProductionQuery),
    responses(
        (status = 200, description = "Labelled production rows in the archive and the serving version's error slices", body = Object),
        (status = 400, description = "until is not an RFC 3339 time", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 409, description = "The server archives no prediction log (no --log-archive-uri)", body = ErrorBody),
        (status = 503, description = "The archive could not be read", body = ErrorBody)
    )
)]
pub async fn production(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<ProductionQuery>,
) -> Result<Json<ProductionSummary>, ApiError> {
    let model = state.model(&name)?;
    let until = query
        .until
        .as_deref()
        .map(|text| {
            text.parse::<jiff::Timestamp>().map_err(|e| {
                ApiError::field(
                    "until",
                    format!("until {text:?} is not an RFC 3339 time ({e}); write e.g. 2026-11-30T10:00:00Z"),
                )
            })
        })
        .transpose()?;
    let Some(archive) = state.config().log_archive_uri.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "this server archives no prediction log; start it with --log-dir and --log-archive-uri",
        ));
    };
    let records = read_archive(&archive).await?;
    let spec = model.spec();
    let card = &spec.card;
    let records = feedback::logged_until(records, until);
    Ok(Json(feedback::summarize_production(
        &records,
        &spec.name,
        &card.version,
        &card.categorical_inputs(),
        card.task == Task::Regression,
        until.map(|t| t.to_string()),
    )))
}

/// Every record of the archive's segments, in name order (by run, then sequence).
async fn read_archive(uri: &str) -> Result<Vec<LogRecord>, ApiError> {
    let unavailable = |e: flywheel_store::StoreError| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("failed to read the prediction log archive {uri}: {e}"),
        )
    };
    let location = Location::parse(uri).map_err(unavailable)?;
    let segments = Store::from_env()
        .read_matching(&location, ".jsonl")
        .await
        .map_err(unavailable)?;
    Ok(segments
        .iter()
        .flat_map(|bytes| feedback::parse_log(&String::from_utf8_lossy(bytes)).0)
        .collect())
}
