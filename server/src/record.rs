//! Recording predictions: every row the primary answers and every row the shadow predicts on
//! mirrored traffic goes to the prediction log (when it is on) and to the feedback index, where
//! feedback later finds it. Used by the API handlers and the shadow alike, so it sits below both.

use std::collections::BTreeMap;

use flywheel_core::model_card::ColumnKind;
use serde_json::{Map, Value};

use crate::backend::Role;
use crate::error::ApiError;
use crate::feedback::Predicted;
use crate::model::{ColumnData, Columns, LabelOutput, Labels, ModelSpec, Predictions};
use crate::prediction_log::{Record, now, push_line};
use crate::state::AppState;

/// A column of output values, serialized at its own precision (float32 values print as the
/// shortest float32 text, without digits added by widening to f64).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Values {
    Labels(Vec<String>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
}

impl Values {
    pub fn datatype(&self) -> &'static str {
        match self {
            Values::Labels(_) => "BYTES",
            Values::Fp32(_) => "FP32",
            Values::Fp64(_) => "FP64",
        }
    }
}

/// The predicted labels or values of `predictions`.
pub(crate) fn prediction_values(spec: &ModelSpec, predictions: &Predictions) -> Values {
    match &predictions.labels {
        Labels::Class(indices) => Values::Labels(
            indices
                .iter()
                .map(|&i| spec.card.classes.get(i).cloned().unwrap_or_default())
                .collect(),
        ),
        Labels::Value(values) => match spec.label {
            LabelOutput::Value(ort::value::TensorElementType::Float64) => {
                Values::Fp64(values.clone())
            }
            _ => Values::Fp32(values.iter().map(|&v| v as f32).collect()),
        },
    }
}

/// The rows of `columns` as JSON objects keyed by raw column name, for the log; only built when
/// the log is on.
pub(crate) fn row_inputs(
    state: &AppState,
    spec: &ModelSpec,
    columns: &Columns,
) -> Option<Vec<Map<String, Value>>> {
    state.log()?;
    let mut rows = vec![Map::new(); columns.rows];
    for (column, data) in spec.card.inputs.iter().zip(&columns.data) {
        match data {
            ColumnData::F32(values) => {
                for (row, &v) in rows.iter_mut().zip(values) {
                    let value = if v.is_nan() {
                        Value::Null
                    } else if column.kind == ColumnKind::Boolean {
                        Value::Bool(v != 0.0)
                    } else {
                        number(v)
                    };
                    row.insert(column.name.clone(), value);
                }
            }
            ColumnData::Str(values) => {
                for (row, v) in rows.iter_mut().zip(values) {
                    let value = if v.is_empty() {
                        Value::Null
                    } else {
                        Value::String(v.clone())
                    };
                    row.insert(column.name.clone(), value);
                }
            }
        }
    }
    Some(rows)
}

/// A float32 as the shortest decimal that reads back as it, not its widened f64 digits.
fn number(v: f32) -> Value {
    let shortest = v.to_string().parse::<f64>().unwrap_or(f64::from(v));
    serde_json::Number::from_f64(shortest).map_or(Value::Null, Value::Number)
}

/// Logs the predictions of `spec` in `role` (when the log is on; fsynced before returning) and
/// remembers them for feedback. `inputs` comes from [`row_inputs`].
pub(crate) async fn record_predictions(
    state: &AppState,
    spec: &ModelSpec,
    role: Role,
    inputs: Option<Vec<Map<String, Value>>>,
    predictions: &Predictions,
    ids: &[String],
) -> Result<(), ApiError> {
    let version = &spec.card.version;
    if let (Some(log), Some(inputs)) = (state.log(), inputs) {
        let time = now();
        let values = prediction_values(spec, predictions);
        let mut lines = Vec::with_capacity(256 * ids.len());
        for (row, (id, inputs)) in ids.iter().zip(inputs).enumerate() {
            let prediction = match &values {
                Values::Labels(v) => v.get(row).map_or(Value::Null, |l| Value::String(l.clone())),
                Values::Fp32(v) => v.get(row).map_or(Value::Null, |&x| number(x)),
                Values::Fp64(v) => v.get(row).map_or(Value::Null, |&x| Value::from(x)),
            };
            let probabilities = predictions.row_probabilities(row).map(|p| {
                spec.card
                    .classes
                    .iter()
                    .map(String::as_str)
                    .zip(p.iter().copied())
                    .collect::<BTreeMap<_, _>>()
            });
            push_line(
                &mut lines,
                &Record::Prediction {
                    request_id: id,
                    time: &time,
                    model: &spec.name,
                    model_version: version,
                    inputs,
                    prediction,
                    probabilities,
                    shadow: role == Role::Shadow,
                },
            );
        }
        log.append(lines).await.map_err(ApiError::internal)?;
    }
    let predicted: Vec<Predicted> = match &predictions.labels {
        Labels::Class(indices) => indices.iter().map(|&i| Predicted::Class(i)).collect(),
        Labels::Value(values) => values.iter().map(|&v| Predicted::Value(v)).collect(),
    };
    let rows = ids.iter().cloned().zip(predicted);
    match role {
        Role::Primary => state.feedback().record(version, &spec.card.classes, rows),
        Role::Shadow => state
            .feedback()
            .record_shadow(version, &spec.card.classes, rows),
    }
    Ok(())
}
