//! Feedback and online stats: `POST /v1/models/{name}/feedback`, `GET /v1/models/{name}/stats`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use flywheel_core::feedback::PairedStats;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::JsonBody;
use crate::backend::Role;
use crate::error::{ApiError, ErrorBody};
use crate::feedback::{Actual, Outcome};
use crate::model::ModelSpec;
use crate::prediction_log::{Record, now, push_line};
use crate::state::AppState;

/// One piece of feedback: the actual outcome of a prediction.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FeedbackItem {
    /// An id from `request_ids` (V1) or `parameters.request_ids` (V2).
    pub request_id: String,
    /// A class label of the model (classifiers) or a number (regression).
    #[schema(value_type = Object)]
    pub actual: Value,
}

/// Either one item (`{"request_id", "actual"}`) or many (`{"feedback": [...]}`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum FeedbackRequest {
    One(FeedbackItem),
    Many { feedback: Vec<FeedbackItem> },
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FeedbackResponse {
    /// Items joined with their prediction, duplicates included.
    pub accepted: usize,
    /// Ids with no prediction in the window (never made, or evicted); logged all the same.
    pub unknown: Vec<String>,
    /// Ids that already had feedback; the latest replaced it.
    pub duplicate: Vec<String>,
}

/// Online metrics of one model version.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionStats {
    pub model_version: String,
    /// `primary` or `shadow` for the versions loaded now; absent for earlier ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Rows predicted since start.
    pub predictions: u64,
    /// Predictions that received feedback since start.
    pub labelled: u64,
    /// Labelled predictions the metrics cover (the last `--stats-window`).
    pub window: usize,
    /// Classifiers: share of correct predictions in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Regression: root mean squared error in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    /// Regression: mean absolute error in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// The loaded shadow: its predictions paired with the primary's on the same labelled
    /// requests since it was loaded (`serving_version`, `samples`, `both_right`,
    /// `only_serving`, `only_candidate`, `neither_right`, and for regression `absolute_errors`
    /// as `[primary, shadow]` pairs): the evidence of the shadow gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub paired: Option<PairedStats>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatsResponse {
    pub model: String,
    pub versions: Vec<VersionStats>,
}

/// Checks `actual` against the model: a known class label, or a finite number.
fn actual(spec: &ModelSpec, value: &Value, field: &str) -> Result<Actual, ApiError> {
    if spec.is_classifier() {
        let classes = &spec.card.classes;
        // Labels are strings on the wire, but a numeric target's classes ("0", "1") may come
        // back as numbers or booleans.
        let text = match value {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        text.and_then(|t| classes.iter().find(|c| **c == t).cloned())
            .map(Actual::Class)
            .ok_or_else(|| {
                ApiError::field(
                    field,
                    format!(
                        "unknown class {value}; the model's classes are [{}]",
                        classes.join(", ")
                    ),
                )
            })
    } else {
        value
            .as_f64()
            .filter(|v| v.is_finite())
            .map(Actual::Value)
            .ok_or_else(|| {
                ApiError::field(
                    field,
                    format!("expected a finite number (the actual value), got {value}"),
                )
            })
    }
}

/// The items of a feedback body, each with the field prefix errors name.
fn items(body: &Value, max: usize) -> Result<Vec<(String, &Value, String)>, ApiError> {
    let Some(object) = body.as_object() else {
        return Err(ApiError::field(
            "body",
            "expected {\"request_id\": ..., \"actual\": ...} or {\"feedback\": [...]}",
        ));
    };
    let list: Vec<(&Value, String)> = match object.get("feedback") {
        Some(Value::Array(list)) => {
            if list.is_empty() {
                return Err(ApiError::field("feedback", "expected at least one item"));
            }
            if list.len() > max {
                return Err(ApiError::field(
                    "feedback",
                    format!(
                        "{} items; at most {max} per request (--max-instances)",
                        list.len()
                    ),
                ));
            }
            list.iter()
                .enumerate()
                .map(|(i, item)| (item, format!("feedback[{i}].")))
                .collect()
        }
        Some(_) => {
            return Err(ApiError::field(
                "feedback",
                "expected an array of {\"request_id\", \"actual\"} objects",
            ));
        }
        None => vec![(body, String::new())],
    };
    list.into_iter()
        .map(|(item, prefix)| {
            let id = match item.get("request_id") {
                Some(Value::String(id)) if !id.is_empty() => id.clone(),
                Some(_) => {
                    return Err(ApiError::field(
                        format!("{prefix}request_id"),
                        "expected a non-empty string",
                    ));
                }
                None => {
                    return Err(ApiError::field(
                        format!("{prefix}request_id"),
                        "missing; send the id a prediction returned",
                    ));
                }
            };
            let actual = item.get("actual").ok_or_else(|| {
                ApiError::field(
                    format!("{prefix}actual"),
                    "missing; send the actual outcome",
                )
            })?;
            Ok((id, actual, prefix))
        })
        .collect()
}

#[utoipa::path(
    post,
    path = "/v1/models/{name}/feedback",
    tag = "feedback",
    params(("name" = String, Path, description = "Model name")),
    request_body = FeedbackRequest,
    responses(
        (status = 200, description = "Feedback joined; unknown ids are listed, not refused", body = FeedbackResponse),
        (status = 400, description = "Invalid feedback (e.g. an unknown class); `field` names it", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 500, description = "The prediction log could not be written", body = ErrorBody)
    ),
    security((), ("bearer" = []))
)]
pub async fn feedback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<JsonBody, ApiError>,
) -> Result<Json<FeedbackResponse>, ApiError> {
    state.authorize(&headers)?;
    let model = state.model(&name)?;
    let JsonBody(body) = body?;
    let spec = model.spec();
    let items = items(&body, state.config().max_instances)?;
    // Validate everything first, so a bad item leaves no partial effect.
    let actuals = items
        .iter()
        .map(|(_, value, prefix)| actual(spec, value, &format!("{prefix}actual")))
        .collect::<Result<Vec<_>, _>>()?;
    let index = state.feedback();
    if let Some(log) = state.log() {
        let time = now();
        let mut lines = Vec::with_capacity(128 * items.len());
        for (id, value, _) in &items {
            let version = index.version_of(id);
            push_line(
                &mut lines,
                &Record::Feedback {
                    request_id: id,
                    time: &time,
                    model: &spec.name,
                    model_version: version.as_deref(),
                    actual: value,
                },
            );
        }
        log.append(lines).await.map_err(ApiError::internal)?;
    }
    let mut response = FeedbackResponse {
        accepted: 0,
        unknown: Vec::new(),
        duplicate: Vec::new(),
    };
    for ((id, _, _), actual) in items.into_iter().zip(actuals) {
        match index.label(&id, actual, &spec.card.version) {
            Outcome::Accepted => response.accepted += 1,
            Outcome::Duplicate => {
                response.accepted += 1;
                response.duplicate.push(id);
            }
            Outcome::Unknown => response.unknown.push(id),
        }
    }
    Ok(Json(response))
}

#[utoipa::path(
    get,
    path = "/v1/models/{name}/stats",
    tag = "feedback",
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 200, description = "Predictions, feedback and online metrics per model version, the shadow's included", body = StatsResponse),
        (status = 404, description = "Unknown model", body = ErrorBody)
    )
)]
pub async fn stats(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<StatsResponse>, ApiError> {
    let model = state.model(&name)?;
    let spec = model.spec();
    let shadow = state.shadow();
    let mut loaded = vec![(spec.card.version.clone(), Role::Primary)];
    if let Some(shadow) = &shadow {
        loaded.push((shadow.spec().card.version.clone(), Role::Shadow));
    }
    let role_of = |version: &str| {
        loaded
            .iter()
            .find(|(v, _)| v == version)
            .map(|(_, role)| role.as_str().to_string())
    };
    let mut versions: Vec<VersionStats> = state
        .feedback()
        .summaries()
        .into_iter()
        .map(|s| VersionStats {
            role: role_of(&s.model_version),
            model_version: s.model_version,
            predictions: s.predictions,
            labelled: s.labelled,
            window: s.window,
            accuracy: s.accuracy,
            rmse: s.rmse,
            mae: s.mae,
            paired: None,
        })
        .collect();
    // The loaded versions are listed even before their first prediction.
    for (version, role) in &loaded {
        if !versions.iter().any(|v| v.model_version == *version) {
            versions.push(VersionStats {
                model_version: version.clone(),
                role: Some(role.as_str().to_string()),
                predictions: 0,
                labelled: 0,
                window: 0,
                accuracy: None,
                rmse: None,
                mae: None,
                paired: None,
            });
        }
    }
    if let Some(shadow) = &shadow {
        let shadow_version = &shadow.spec().card.version;
        let paired = state.feedback().paired(&spec.card.version, shadow_version);
        if let Some(stats) = versions
            .iter_mut()
            .find(|v| v.model_version == *shadow_version)
        {
            stats.paired = paired;
        }
    }
    Ok(Json(StatsResponse {
        model: spec.name.clone(),
        versions,
    }))
}
