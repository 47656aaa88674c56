//! The model card (`model.json`), written by the trainer beside `model.onnx` and read by the
//! prediction server: what the model expects, what it returns, and where it came from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::Latency;
use crate::ensemble::EnsembleCard;
use crate::search::space::{Family, Params, Task};

/// Bumped when a reader would misread an older card.
pub const MODEL_CARD_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub card_version: u32,
    /// Version label the server reports with every prediction.
    pub version: String,
    pub family: Family,
    #[serde(default)]
    pub params: Params,
    /// binary, multiclass or regression (never auto).
    pub task: Task,
    /// The predicted column.
    pub target: String,
    /// Class labels in the order of the probability output; empty for regression.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Raw input columns, in the order of array-style instances.
    pub inputs: Vec<InputColumn>,
    /// Names of the ONNX outputs.
    pub outputs: ModelOutputs,
    /// Validation metrics from training.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_bytes: Option<u64>,
    pub lineage: Lineage,
    /// Set on an ensemble's card: its members and how they were chosen. `family` and `params`
    /// are then those of the heaviest member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<EnsembleCard>,
}

impl ModelCard {
    /// The raw inputs that are categories: what production error is sliced by.
    pub fn categorical_inputs(&self) -> Vec<String> {
        self.inputs
            .iter()
            .filter(|c| c.kind == ColumnKind::Categorical)
            .map(|c| c.name.clone())
            .collect()
    }
}

/// One raw column the model takes: an ONNX input of shape `[N, 1]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputColumn {
    /// The column's name in the training data and in V1 instances.
    pub name: String,
    /// The ONNX input's name (the column name, made safe).
    pub input: String,
    pub kind: ColumnKind,
    /// Whether the model accepts a missing value (null) here.
    #[serde(default)]
    pub nullable: bool,
}

/// How a raw column is typed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// A number; the ONNX input is float32 (NaN for missing).
    Numeric,
    /// A string category; the ONNX input is a string tensor (empty for missing).
    Categorical,
    /// true/false; the ONNX input is float32 0/1.
    Boolean,
}

impl ColumnKind {
    /// The name as written in model cards and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnKind::Numeric => "numeric",
            ColumnKind::Categorical => "categorical",
            ColumnKind::Boolean => "boolean",
        }
    }
}

/// The spellings a boolean cell may take, in the words error messages and docs use. The trainer
/// reads a CSV cell with [`boolean_from_text`] and the server every route's JSON cell with
/// [`boolean_from_text`] and [`boolean_from_number`], so what a user's own table holds is what
/// the served model accepts.
pub const BOOLEAN_SPELLINGS: &str = "true or false, the numbers 1 or 0 (1.0 or 0.0 too), or the \
    strings \"true\", \"false\", \"yes\", \"no\", \"1\", \"0\" (any case, 1.0 or 0.0 too)";

/// A boolean written as a number: exactly 1 or 0 (so 1.0 and -0.0 too); anything else is not a
/// boolean, rather than "non-zero is true", so a numeric column sent by mistake is refused.
pub fn boolean_from_number(value: f64) -> Option<bool> {
    if value == 1.0 {
        Some(true)
    } else if value == 0.0 {
        Some(false)
    } else {
        None
    }
}

/// A boolean written as text: true/false and yes/no in any case, or a number that
/// [`boolean_from_number`] accepts ("1", "0.0"); surrounding whitespace is ignored, as in a CSV
/// cell.
pub fn boolean_from_text(text: &str) -> Option<bool> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("yes") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") || text.eq_ignore_ascii_case("no") {
        Some(false)
    } else {
        text.parse::<f64>().ok().and_then(boolean_from_number)
    }
}

/// The ONNX outputs' names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelOutputs {
    /// Predicted label (class index into `classes`, int64) or regression value (float32).
    pub label: String,
    /// Class probabilities, float32 `[N, classes]`; absent for regression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probabilities: Option<String>,
}

/// Where the model came from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<String>,
    pub dataset_uri: String,
    /// sha256 of the dataset bytes, hex.
    pub dataset_digest: String,
    pub dataset_rows: u64,
    pub trainer_version: String,
    /// RFC 3339.
    pub created_at: String,
    /// Retraining generation of the study (0: an original study).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u32,
    /// The studies this one retrained, nearest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_studies: Vec<String>,
    /// Labelled production rows (prediction log joined with feedback) among `dataset_rows`;
    /// `dataset_digest` then covers them too.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub production_rows: u64,
}

fn is_zero<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table_of_boolean_spellings() {
        for text in [
            "true", "TRUE", " True ", "yes", "YES", "1", "1.0", "1.00", "1e0",
        ] {
            assert_eq!(boolean_from_text(text), Some(true), "{text:?}");
        }
        for text in ["false", "False", "no", "No", "0", "0.0", "-0", " 0 "] {
            assert_eq!(boolean_from_text(text), Some(false), "{text:?}");
        }
        for text in [
            "", "2", "0.5", "-1", "t", "f", "y", "on", "nan", "inf", "null", "truee",
        ] {
            assert_eq!(boolean_from_text(text), None, "{text:?}");
        }
        assert_eq!(boolean_from_number(1.0), Some(true));
        assert_eq!(boolean_from_number(-0.0), Some(false));
        for number in [2.0, 0.5, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(boolean_from_number(number), None, "{number}");
        }
    }
}
