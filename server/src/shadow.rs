//! The shadow model: a candidate version that sees a copy of every request the primary answered,
//! off the hot path, and whose predictions go to the prediction log (with the primary's request
//! ids, marked `"shadow": true`) and the feedback index, never to a client.
//!
//! A handler copies the request's columns only when a shadow is loaded and, after the primary's
//! response is ready, offers the copy to a bounded queue without waiting. One dispatcher task
//! adapts the columns to the shadow's inputs and queues them on the shadow's own inference
//! threads, again without waiting; a task per mirrored request then logs the result. Wherever a
//! queue is full the copy is dropped and counted (`flywheel_server_shadow_dropped_total`), so a
//! slow or saturated shadow costs the primary nothing but the copy.

use std::sync::Arc;

use flywheel_core::model_card::ColumnKind;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::backend::{Backend, Pending, PredictError, Role};
use crate::error::Error;
use crate::model::{ColumnData, Columns, ModelSpec};
use crate::state::{AppState, InFlight, Mirror, WeakState};

/// Checks that `shadow` can be fed the primary's requests and scored on the same feedback.
pub fn check_pair(primary: &ModelSpec, shadow: &ModelSpec) -> Result<(), Error> {
    let mismatch = |message: String| Error::ShadowMismatch {
        primary: primary.card.version.clone(),
        shadow: shadow.card.version.clone(),
        message,
    };
    if primary.card.version == shadow.card.version {
        return Err(mismatch(
            "both have the same version, so their predictions and stats could not be told apart \
             (to promote the shadow, load it as model_dir with shadow_model_dir \"\")"
                .into(),
        ));
    }
    if primary.is_classifier() != shadow.is_classifier() {
        let task = |spec: &ModelSpec| {
            if spec.is_classifier() {
                "a classifier"
            } else {
                "a regression model"
            }
        };
        return Err(mismatch(format!(
            "the primary is {} and the shadow {}; feedback cannot score both",
            task(primary),
            task(shadow)
        )));
    }
    plan(primary, shadow).map(|_| ()).map_err(mismatch)
}

/// Where each of the shadow's inputs comes from.
enum Source {
    /// The primary's column at this index (same name, same kind).
    Primary(usize),
    /// A column the primary does not take; the shadow accepts it missing.
    Missing(ColumnKind),
}

/// Matches the shadow's input columns to the primary's by name.
fn plan(primary: &ModelSpec, shadow: &ModelSpec) -> Result<Vec<Source>, String> {
    shadow
        .card
        .inputs
        .iter()
        .map(|column| {
            match primary
                .card
                .inputs
                .iter()
                .position(|p| p.name == column.name)
            {
                Some(i) => {
                    let theirs = primary.card.inputs.get(i).map(|p| p.kind);
                    if theirs == Some(column.kind) {
                        Ok(Source::Primary(i))
                    } else {
                        Err(format!(
                            "column '{}' is {} for the shadow but {} for the primary",
                            column.name,
                            column.kind.as_str(),
                            theirs.map_or("absent", ColumnKind::as_str)
                        ))
                    }
                }
                None if column.nullable => Ok(Source::Missing(column.kind)),
                None => Err(format!(
                    "the shadow needs column '{}', which the primary's requests do not carry \
                     (and it does not accept it missing)",
                    column.name
                )),
            }
        })
        .collect()
}

/// The primary's columns rearranged for the shadow's inputs.
fn adapt(primary: &ModelSpec, shadow: &ModelSpec, columns: Columns) -> Result<Columns, String> {
    let same = primary.card.inputs.len() == shadow.card.inputs.len()
        && primary
            .card
            .inputs
            .iter()
            .zip(&shadow.card.inputs)
            .all(|(p, s)| p.name == s.name && p.kind == s.kind);
    if same {
        return Ok(columns);
    }
    let plan = plan(primary, shadow)?;
    let rows = columns.rows;
    let mut taken: Vec<Option<ColumnData>> = columns.data.into_iter().map(Some).collect();
    let data = plan
        .into_iter()
        .map(|source| match source {
            Source::Primary(i) => taken
                .get_mut(i)
                .and_then(Option::take)
                .ok_or_else(|| "the primary's columns do not match its card".to_string()),
            Source::Missing(ColumnKind::Categorical) => {
                Ok(ColumnData::Str(vec![String::new(); rows]))
            }
            Source::Missing(_) => Ok(ColumnData::F32(vec![f32::NAN; rows])),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Columns { rows, data })
}

/// Feeds mirrored requests to the shadow until the state is gone.
pub(crate) async fn dispatch(state: WeakState, mut mirrors: mpsc::Receiver<Mirror>) {
    while let Some(mirror) = mirrors.recv().await {
        let Some(state) = state.upgrade() else { return };
        // Removed since the request was answered, or promoted to primary meanwhile (a reload
        // swaps the two one after the other): either way there is nothing to compare.
        let Some(shadow) = state.shadow() else {
            continue;
        };
        if shadow.spec().card.version == mirror.primary.card.version {
            continue;
        }
        let Mirror {
            primary,
            columns,
            ids,
            _in_flight,
        } = mirror;
        let columns = match adapt(&primary, shadow.spec(), columns) {
            Ok(columns) => columns,
            Err(message) => {
                // Only possible between the two swaps of a reload; check_pair refuses the rest.
                tracing::warn!(error = %message, "request not mirrored to the shadow");
                state.metrics().shadow_failures.inc();
                continue;
            }
        };
        let inputs = crate::record::row_inputs(&state, shadow.spec(), &columns);
        match shadow.submit(columns) {
            Ok(pending) => {
                tokio::spawn(complete(state, shadow, pending, ids, inputs, _in_flight));
            }
            Err(PredictError::QueueFull) => {
                state.metrics().shadow_dropped.inc();
            }
            Err(_) => {
                state.metrics().shadow_failures.inc();
            }
        }
    }
}

/// Waits for the shadow's prediction and logs it under the primary's request ids.
async fn complete(
    state: AppState,
    shadow: Arc<Backend>,
    pending: Pending,
    ids: Vec<String>,
    inputs: Option<Vec<Map<String, Value>>>,
    _in_flight: InFlight,
) {
    let timeout = state.config().request_timeout();
    let predictions = match tokio::time::timeout(timeout, pending.wait()).await {
        Ok(Ok(predictions)) => predictions,
        Ok(Err(error)) => {
            tracing::warn!(?error, version = %shadow.spec().card.version, "shadow inference failed");
            state.metrics().shadow_failures.inc();
            return;
        }
        Err(_) => {
            tracing::debug!(version = %shadow.spec().card.version, "shadow inference timed out");
            state.metrics().shadow_failures.inc();
            return;
        }
    };
    let recorded = crate::record::record_predictions(
        &state,
        shadow.spec(),
        Role::Shadow,
        inputs,
        &predictions,
        &ids,
    )
    .await;
    if let Err(error) = recorded {
        tracing::warn!(error = %error.body.error, "shadow predictions not logged");
        state.metrics().shadow_failures.inc();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use crate::model::ProbabilityOutput;
    use crate::model::test_spec as spec;

    #[test]
    fn shadow_columns_follow_the_shadow_card() {
        let primary = spec("p", &[("a", "numeric", false), ("b", "categorical", false)]);
        // Reordered, plus a nullable column the primary lacks.
        let shadow = spec(
            "s",
            &[
                ("b", "categorical", false),
                ("c", "numeric", true),
                ("a", "numeric", false),
            ],
        );
        check_pair(&primary, &shadow).unwrap();
        let columns = Columns {
            rows: 2,
            data: vec![
                ColumnData::F32(vec![1.0, 2.0]),
                ColumnData::Str(vec!["x".into(), "y".into()]),
            ],
        };
        let adapted = adapt(&primary, &shadow, columns.clone()).unwrap();
        assert_eq!(adapted.rows, 2);
        assert_eq!(
            adapted.data[0],
            ColumnData::Str(vec!["x".into(), "y".into()])
        );
        assert!(matches!(&adapted.data[1], ColumnData::F32(v) if v.iter().all(|x| x.is_nan())));
        assert_eq!(adapted.data[2], ColumnData::F32(vec![1.0, 2.0]));
        // The same layout passes through untouched.
        let twin = spec("t", &[("a", "numeric", false), ("b", "categorical", false)]);
        assert_eq!(adapt(&primary, &twin, columns.clone()).unwrap(), columns);
    }

    #[test]
    fn incomparable_shadows_are_refused() {
        let primary = spec("p", &[("a", "numeric", false)]);
        let error = |shadow: &ModelSpec| check_pair(&primary, shadow).unwrap_err().to_string();
        assert!(error(&spec("p", &[("a", "numeric", false)])).contains("same version"));
        assert!(
            error(&spec("s", &[("a", "categorical", false)]))
                .contains("column 'a' is categorical for the shadow but numeric for the primary")
        );
        assert!(error(&spec("s", &[("z", "numeric", false)])).contains("needs column 'z'"));
        let mut regression = spec("s", &[("a", "numeric", false)]);
        regression.probabilities = ProbabilityOutput::None;
        assert!(error(&regression).contains("a regression model"));
    }
}
