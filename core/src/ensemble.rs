//! Ensembles of finished trials: the predictions each trial leaves for ensemble selection
//! (`predictions.json`) and what an ensemble's model card records about its members. Both cross
//! processes (a trial writes them, the ensemble command and the runners read them).

use serde::{Deserialize, Serialize};

use crate::api::{Direction, Latency};
use crate::search::space::Family;

/// The member-predictions file a trial writes beside its model.
pub const PREDICTIONS_FILE: &str = "predictions.json";
/// Bumped when a reader would misread an older file.
pub const PREDICTIONS_VERSION: u32 = 1;

/// A trial's predictions on rows it did not train on, so an ensemble can be selected from the
/// finished trials without retraining any of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberPredictions {
    pub version: u32,
    /// Whose predictions: the trial's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<String>,
    pub kind: PredictionKind,
    /// 0-based data-row indices in the dataset file (header excluded), ascending.
    pub rows: Vec<u64>,
    /// The true target per row: the class index into `classes`, or the value.
    pub targets: Vec<f64>,
    /// Class labels in the order of each row's probabilities; empty for regression.
    #[serde(default)]
    pub classes: Vec<String>,
    /// One array per row: the class probabilities, or `[value]` for regression.
    pub predictions: Vec<Vec<f64>>,
}

impl MemberPredictions {
    /// The width every row of `predictions` must have.
    pub fn width(&self) -> usize {
        self.classes.len().max(1)
    }

    /// Why the document is inconsistent, if it is.
    pub fn check(&self) -> Result<(), String> {
        let n = self.rows.len();
        if self.targets.len() != n || self.predictions.len() != n {
            return Err(format!(
                "{n} rows but {} targets and {} predictions",
                self.targets.len(),
                self.predictions.len()
            ));
        }
        if let Some((row, p)) = self
            .predictions
            .iter()
            .enumerate()
            .find(|(_, p)| p.len() != self.width())
        {
            return Err(format!(
                "row {row} has {} predictions, expected {}",
                p.len(),
                self.width()
            ));
        }
        if !self.rows.is_sorted_by(|a, b| a < b) {
            return Err("rows are not strictly ascending".into());
        }
        Ok(())
    }
}

/// Where a trial's member predictions come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionKind {
    /// The holdout split's rows, predicted by the model trained on the rest.
    Holdout,
    /// Every row, each predicted by the fold model that did not train on it (`--folds`).
    OutOfFold,
}

/// What an ensemble's model card records: its members for lineage, and how it was chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnsembleCard {
    /// The members, heaviest first; weights sum to 1.
    pub members: Vec<EnsembleMember>,
    /// The metric the selection optimised.
    pub metric: String,
    /// The rows the selection scored on (`holdout` or `out_of_fold`), and how many.
    pub evaluated_on: PredictionKind,
    pub rows: u64,
    /// The ensemble's metric on those rows.
    pub score: f64,
    /// The best single member on the same rows, for the promotion decision.
    pub best_single: String,
    pub best_single_score: f64,
}

/// One member of an ensemble.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnsembleMember {
    /// The trial that trained it (its model card's version).
    pub trial: String,
    pub family: Family,
    /// The weight of its probabilities (values) in the average.
    pub weight: f64,
}

/// Limits the ensemble must meet to replace the best single model.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ceilings {
    pub latency_p99_micros: Option<u64>,
    pub model_bytes: Option<u64>,
}

/// Whether the ensemble replaces the best single model: it must score strictly better than the
/// best single member on the rows it was selected on, and meet the latency and size ceilings.
/// `Err` says why not, for the leaderboard and the study status.
pub fn promote(
    card: &EnsembleCard,
    direction: Direction,
    latency: Option<Latency>,
    model_bytes: Option<u64>,
    ceilings: Ceilings,
) -> Result<String, String> {
    let (score, single) = (card.score, card.best_single_score);
    let better = match direction {
        Direction::Maximize => score > single,
        Direction::Minimize => score < single,
    };
    if !better || !score.is_finite() {
        return Err(format!(
            "not better than the best single model {} ({} {score:.6} vs {single:.6})",
            card.best_single, card.metric
        ));
    }
    if let Some(ceiling) = ceilings.latency_p99_micros {
        match latency {
            Some(l) if l.p99_micros <= ceiling as f64 => {}
            Some(l) => {
                return Err(format!(
                    "p99 latency {:.0} µs over the ceiling of {ceiling} µs",
                    l.p99_micros
                ));
            }
            None => return Err("no latency measured, and a latency ceiling is set".into()),
        }
    }
    if let (Some(ceiling), Some(bytes)) = (ceilings.model_bytes, model_bytes)
        && bytes > ceiling
    {
        return Err(format!(
            "{bytes} bytes over constraints.maxModelBytes of {ceiling}"
        ));
    }
    Ok(format!(
        "{} {score:.6} beats the best single model {} ({single:.6}) on {} {:?} rows",
        card.metric, card.best_single, card.rows, card.evaluated_on
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(score: f64) -> EnsembleCard {
        EnsembleCard {
            members: vec![
                EnsembleMember {
                    trial: "s-1".into(),
                    family: Family::GradientBoosting,
                    weight: 0.6,
                },
                EnsembleMember {
                    trial: "s-4".into(),
                    family: Family::Mlp,
                    weight: 0.4,
                },
            ],
            metric: "log_loss".into(),
            evaluated_on: PredictionKind::Holdout,
            rows: 100,
            score,
            best_single: "s-1".into(),
            best_single_score: 0.30,
        }
    }

    fn latency(p99: f64) -> Option<Latency> {
        Some(Latency {
            p50_micros: p99 / 2.0,
            p99_micros: p99,
        })
    }

    #[test]
    fn promotion_needs_a_better_score_within_the_ceilings() {
        let none = Ceilings::default();
        let min = Direction::Minimize;
        assert!(promote(&card(0.25), min, latency(90.0), Some(10), none).is_ok());
        let equal = promote(&card(0.30), min, latency(90.0), Some(10), none).unwrap_err();
        assert!(
            equal.contains("not better than the best single model s-1"),
            "{equal}"
        );
        assert!(promote(&card(0.25), Direction::Maximize, None, None, none).is_err());
        assert!(promote(&card(f64::NAN), min, None, None, none).is_err());
        let slow = Ceilings {
            latency_p99_micros: Some(80),
            model_bytes: None,
        };
        let err = promote(&card(0.25), min, latency(90.0), Some(10), slow).unwrap_err();
        assert!(err.contains("over the ceiling of 80"), "{err}");
        assert!(promote(&card(0.25), min, latency(80.0), Some(10), slow).is_ok());
        assert!(promote(&card(0.25), min, None, Some(10), slow).is_err());
        let small = Ceilings {
            latency_p99_micros: None,
            model_bytes: Some(5),
        };
        let err = promote(&card(0.25), min, latency(90.0), Some(10), small).unwrap_err();
        assert!(err.contains("maxModelBytes"), "{err}");
    }

    fn document() -> MemberPredictions {
        MemberPredictions {
            version: PREDICTIONS_VERSION,
            trial: Some("t-0".into()),
            kind: PredictionKind::Holdout,
            rows: vec![1, 4],
            targets: vec![0.0, 1.0],
            classes: vec!["a".into(), "b".into()],
            predictions: vec![vec![0.9, 0.1], vec![0.2, 0.8]],
        }
    }

    #[test]
    fn a_consistent_document_passes_and_round_trips() {
        let doc = document();
        assert_eq!(doc.check(), Ok(()));
        let json = serde_json::to_string(&doc).unwrap();
        assert!(json.contains(r#""kind":"holdout""#), "{json}");
        assert_eq!(
            serde_json::from_str::<MemberPredictions>(&json).unwrap(),
            doc
        );
    }

    #[test]
    fn inconsistent_documents_are_named() {
        let mut doc = document();
        doc.predictions[1] = vec![1.0];
        assert!(doc.check().unwrap_err().contains("row 1 has 1"));
        let mut doc = document();
        doc.targets.pop();
        assert!(doc.check().unwrap_err().contains("1 targets"));
        let mut doc = document();
        doc.rows = vec![4, 1];
        assert!(doc.check().unwrap_err().contains("ascending"));
    }
}
