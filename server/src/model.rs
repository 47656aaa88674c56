//! A model as the server sees it: the card, checked against the ONNX graph once at load, and the
//! conversion between column batches and ONNX Runtime values.

use std::borrow::Cow;
use std::ops::Range;
use std::path::{Path, PathBuf};

use flywheel_core::model_card::{ColumnKind, MODEL_CARD_VERSION, ModelCard};
use flywheel_core::search::space::Task;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynMapValueType, Outlet, Tensor, TensorElementType, ValueType};

use crate::error::Error;

pub const MODEL_FILE: &str = "model.onnx";
pub const CARD_FILE: &str = "model.json";

/// A model folder's card, checked, plus what the server derived from the ONNX graph.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    /// The name clients address the model by.
    pub name: String,
    pub card: ModelCard,
    pub onnx_path: PathBuf,
    pub label: LabelOutput,
    pub probabilities: ProbabilityOutput,
}

/// How the ONNX label output encodes a prediction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelOutput {
    /// int64 index into `card.classes`.
    ClassIndex,
    /// The class label itself, as a string.
    ClassName,
    /// A regression value (float or double).
    Value(TensorElementType),
}

/// How the ONNX probability output is shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbabilityOutput {
    /// Regression: no probabilities.
    None,
    /// float32 `[N, classes]`.
    Tensor,
    /// skl2onnx's ZipMap: a sequence of one map per row, keyed by class index or label.
    ZipMap { string_keys: bool },
}

impl ModelSpec {
    /// Reads `model.json` from `dir`; the ONNX graph is checked later by [`ModelSpec::check`].
    pub fn read_card(dir: &Path) -> Result<ModelCard, Error> {
        let path = dir.join(CARD_FILE);
        let bytes = std::fs::read(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Card { path, source })
    }

    /// Checks the card against the graph's inputs and outputs so that a mismatch fails at start
    /// rather than on the first request.
    pub fn check(
        name: String,
        card: ModelCard,
        onnx_path: PathBuf,
        inputs: &[Outlet],
        outputs: &[Outlet],
    ) -> Result<ModelSpec, Error> {
        let bad = |message: String| Error::Incompatible {
            model: name.clone(),
            message,
        };
        if card.card_version != MODEL_CARD_VERSION {
            return Err(bad(format!(
                "card_version is {}, this server reads version {MODEL_CARD_VERSION}",
                card.card_version
            )));
        }
        let classifier = match card.task {
            Task::Binary | Task::Multiclass => true,
            Task::Regression => false,
            Task::Auto => {
                return Err(bad(
                    "task must be binary, multiclass or regression, not auto".into(),
                ));
            }
        };
        if classifier && card.classes.is_empty() {
            return Err(bad("a classifier's card must list its classes".into()));
        }
        if card.inputs.is_empty() {
            return Err(bad("the card lists no inputs".into()));
        }
        for column in &card.inputs {
            let Some(outlet) = inputs.iter().find(|o| o.name() == column.input) else {
                return Err(bad(format!(
                    "column '{}' maps to ONNX input '{}', which the graph does not have",
                    column.name, column.input
                )));
            };
            let want = match column.kind {
                ColumnKind::Numeric | ColumnKind::Boolean => TensorElementType::Float32,
                ColumnKind::Categorical => TensorElementType::String,
            };
            match outlet.dtype() {
                ValueType::Tensor { ty, .. } if *ty == want => {}
                other => {
                    return Err(bad(format!(
                        "ONNX input '{}' is {other}, but column '{}' is {:?} and needs a {want} tensor",
                        column.input, column.name, column.kind
                    )));
                }
            }
        }
        if let Some(extra) = inputs
            .iter()
            .find(|o| !card.inputs.iter().any(|c| c.input == o.name()))
        {
            return Err(bad(format!(
                "the graph takes input '{}', which the card does not list",
                extra.name()
            )));
        }

        let output = |name: &str| {
            outputs.iter().find(|o| o.name() == name).ok_or_else(|| {
                bad(format!(
                    "the graph has no output '{name}' named in the card"
                ))
            })
        };
        let label = match (classifier, output(&card.outputs.label)?.dtype()) {
            (
                true,
                ValueType::Tensor {
                    ty: TensorElementType::Int64,
                    ..
                },
            ) => LabelOutput::ClassIndex,
            (
                true,
                ValueType::Tensor {
                    ty: TensorElementType::String,
                    ..
                },
            ) => LabelOutput::ClassName,
            (
                false,
                ValueType::Tensor {
                    ty: ty @ (TensorElementType::Float32 | TensorElementType::Float64),
                    ..
                },
            ) => LabelOutput::Value(*ty),
            (_, other) => {
                return Err(bad(format!(
                    "label output '{}' is {other}; expected int64 or string (classifier) or float (regression)",
                    card.outputs.label
                )));
            }
        };
        let probabilities = match (&card.outputs.probabilities, classifier) {
            (None, false) => ProbabilityOutput::None,
            (None, true) => {
                return Err(bad(
                    "a classifier's card must name its probabilities output".into(),
                ));
            }
            (Some(name), false) => {
                return Err(bad(format!(
                    "a regression model has no probabilities, but the card names '{name}'"
                )));
            }
            (Some(name), true) => match output(name)?.dtype() {
                ValueType::Tensor {
                    ty: TensorElementType::Float32,
                    ..
                } => ProbabilityOutput::Tensor,
                ValueType::Sequence(inner) => match inner.as_ref() {
                    ValueType::Map {
                        key: TensorElementType::Int64,
                        value: TensorElementType::Float32,
                    } => ProbabilityOutput::ZipMap { string_keys: false },
                    ValueType::Map {
                        key: TensorElementType::String,
                        value: TensorElementType::Float32,
                    } => ProbabilityOutput::ZipMap { string_keys: true },
                    other => {
                        return Err(bad(format!(
                            "probabilities output '{name}' is a sequence of {other}; expected float32 [N, classes] \
                             (export with skl2onnx option zipmap=False) or a ZipMap of float32"
                        )));
                    }
                },
                other => {
                    return Err(bad(format!(
                        "probabilities output '{name}' is {other}; expected float32 [N, classes]"
                    )));
                }
            },
        };
        Ok(ModelSpec {
            name,
            card,
            onnx_path,
            label,
            probabilities,
        })
    }

    pub fn is_classifier(&self) -> bool {
        !matches!(self.probabilities, ProbabilityOutput::None)
    }
}

/// One column of a batch, in the card's input order.
#[derive(Clone, Debug, PartialEq)]
pub enum ColumnData {
    /// Numeric and boolean columns; NaN is a missing value.
    F32(Vec<f32>),
    /// Categorical columns; "" is a missing value.
    Str(Vec<String>),
}

impl ColumnData {
    fn append(&mut self, other: ColumnData) {
        match (self, other) {
            (ColumnData::F32(a), ColumnData::F32(b)) => a.extend(b),
            (ColumnData::Str(a), ColumnData::Str(b)) => a.extend(b),
            // Columns come from one model's plan, so kinds always line up.
            _ => {}
        }
    }
}

/// Rows to predict, stored column by column so that each becomes one `[N, 1]` tensor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Columns {
    pub rows: usize,
    pub data: Vec<ColumnData>,
}

impl Columns {
    /// Appends `other`'s rows; both must come from the same model.
    pub fn append(&mut self, other: Columns) {
        self.rows += other.rows;
        for (mine, theirs) in self.data.iter_mut().zip(other.data) {
            mine.append(theirs);
        }
    }

    /// The rows of `parts` (all of one model) in order, in one batch; `None` without parts.
    /// Sized up front: appending a batcher's requests one by one regrows every column several
    /// times per batch.
    pub fn concat(parts: impl IntoIterator<Item = Columns>) -> Option<Columns> {
        let parts: Vec<Columns> = parts.into_iter().collect();
        let rows = parts.iter().map(|part| part.rows).sum();
        let first = parts.first()?;
        let mut merged = Columns {
            rows: 0,
            data: first
                .data
                .iter()
                .map(|column| match column {
                    ColumnData::F32(_) => ColumnData::F32(Vec::with_capacity(rows)),
                    ColumnData::Str(_) => ColumnData::Str(Vec::with_capacity(rows)),
                })
                .collect(),
        };
        for part in parts {
            merged.append(part);
        }
        Some(merged)
    }
}

/// One row of default values, in the card's input order: 0 for numeric and boolean columns, ""
/// (the missing category) for categorical ones. Used to warm a session up.
pub fn default_row(spec: &ModelSpec) -> Columns {
    Columns {
        rows: 1,
        data: spec
            .card
            .inputs
            .iter()
            .map(|column| match column.kind {
                ColumnKind::Categorical => ColumnData::Str(vec![String::new()]),
                ColumnKind::Numeric | ColumnKind::Boolean => ColumnData::F32(vec![0.0]),
            })
            .collect(),
    }
}

/// What the model returned for a batch of rows.
#[derive(Clone, Debug, PartialEq)]
pub enum Labels {
    /// Indices into `card.classes`.
    Class(Vec<usize>),
    Value(Vec<f64>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Predictions {
    pub labels: Labels,
    /// Row-major `[rows, classes]`; empty for regression.
    pub probabilities: Vec<f32>,
    pub classes: usize,
}

impl Predictions {
    pub fn len(&self) -> usize {
        match &self.labels {
            Labels::Class(v) => v.len(),
            Labels::Value(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The predictions of rows `range`, for handing a merged batch back to its requests.
    pub fn slice(&self, range: Range<usize>) -> Predictions {
        let labels = match &self.labels {
            Labels::Class(v) => Labels::Class(v[range.clone()].to_vec()),
            Labels::Value(v) => Labels::Value(v[range.clone()].to_vec()),
        };
        let probabilities = if self.probabilities.is_empty() {
            Vec::new()
        } else {
            self.probabilities[range.start * self.classes..range.end * self.classes].to_vec()
        };
        Predictions {
            labels,
            probabilities,
            classes: self.classes,
        }
    }

    /// One row's class probabilities.
    pub fn row_probabilities(&self, row: usize) -> Option<&[f32]> {
        if self.probabilities.is_empty() {
            return None;
        }
        self.probabilities
            .get(row * self.classes..(row + 1) * self.classes)
    }
}

/// Runs `columns` through `session`. Blocking: call it from an inference thread only.
pub fn run(
    spec: &ModelSpec,
    session: &mut Session,
    columns: Columns,
) -> Result<Predictions, Error> {
    let rows = columns.rows;
    let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
        Vec::with_capacity(columns.data.len());
    for (column, data) in spec.card.inputs.iter().zip(columns.data) {
        let value: SessionInputValue<'_> = match data {
            ColumnData::F32(v) => Tensor::from_array(([rows, 1], v))
                .map_err(Error::ort("build an input tensor"))?
                .into(),
            ColumnData::Str(v) => Tensor::from_string_array(([rows, 1], v.as_slice()))
                .map_err(Error::ort("build a string input tensor"))?
                .into(),
        };
        inputs.push((Cow::Borrowed(column.input.as_str()), value));
    }
    let outputs = session.run(inputs).map_err(Error::ort("run the model"))?;

    let card = &spec.card;
    let label_value = outputs
        .get(&card.outputs.label)
        .ok_or_else(|| Error::Output(format!("no output '{}'", card.outputs.label)))?;
    let labels = match spec.label {
        LabelOutput::ClassIndex => {
            let (_, data) = label_value
                .try_extract_tensor::<i64>()
                .map_err(Error::ort("read the label output"))?;
            let indices = data
                .iter()
                .map(|&i| {
                    usize::try_from(i)
                        .ok()
                        .filter(|&i| i < card.classes.len())
                        .ok_or_else(|| {
                            Error::Output(format!("class index {i} is outside the card's classes"))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Labels::Class(indices)
        }
        LabelOutput::ClassName => {
            let (_, names) = label_value
                .try_extract_strings()
                .map_err(Error::ort("read the label output"))?;
            let indices = names
                .iter()
                .map(|name| {
                    card.classes.iter().position(|c| c == name).ok_or_else(|| {
                        Error::Output(format!("label '{name}' is not one of the card's classes"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Labels::Class(indices)
        }
        LabelOutput::Value(TensorElementType::Float64) => {
            let (_, data) = label_value
                .try_extract_tensor::<f64>()
                .map_err(Error::ort("read the regression output"))?;
            Labels::Value(data.to_vec())
        }
        LabelOutput::Value(_) => {
            let (_, data) = label_value
                .try_extract_tensor::<f32>()
                .map_err(Error::ort("read the regression output"))?;
            Labels::Value(data.iter().map(|&v| f64::from(v)).collect())
        }
    };

    let classes = card.classes.len();
    let probabilities = match (spec.probabilities, &card.outputs.probabilities) {
        (ProbabilityOutput::None, _) | (_, None) => Vec::new(),
        (kind, Some(name)) => {
            let value = outputs
                .get(name)
                .ok_or_else(|| Error::Output(format!("no output '{name}'")))?;
            match kind {
                ProbabilityOutput::ZipMap { string_keys } => {
                    let maps = value
                        .try_extract_sequence::<DynMapValueType>()
                        .map_err(Error::ort("read the ZipMap probabilities"))?;
                    let mut flat = vec![0.0f32; maps.len() * classes];
                    for (row, map) in maps.iter().enumerate() {
                        let pairs: Vec<(usize, f32)> = if string_keys {
                            map.try_extract_key_values::<String, f32>()
                                .map_err(Error::ort("read a ZipMap row"))?
                                .into_iter()
                                .filter_map(|(k, p)| {
                                    card.classes.iter().position(|c| *c == k).map(|i| (i, p))
                                })
                                .collect()
                        } else {
                            map.try_extract_key_values::<i64, f32>()
                                .map_err(Error::ort("read a ZipMap row"))?
                                .into_iter()
                                .filter_map(|(k, p)| {
                                    usize::try_from(k)
                                        .ok()
                                        .filter(|&i| i < classes)
                                        .map(|i| (i, p))
                                })
                                .collect()
                        };
                        for (i, p) in pairs {
                            flat[row * classes + i] = p;
                        }
                    }
                    flat
                }
                _ => {
                    let (shape, data) = value
                        .try_extract_tensor::<f32>()
                        .map_err(Error::ort("read the probabilities output"))?;
                    if data.len() != rows * classes {
                        return Err(Error::Output(format!(
                            "probabilities have shape {shape:?}, expected [{rows}, {classes}]"
                        )));
                    }
                    data.to_vec()
                }
            }
        }
    };
    let predictions = Predictions {
        labels,
        probabilities,
        classes,
    };
    if predictions.len() != rows {
        return Err(Error::Output(format!(
            "the model returned {} labels for {rows} rows",
            predictions.len()
        )));
    }
    if !predictions.probabilities.is_empty() && predictions.probabilities.len() != rows * classes {
        return Err(Error::Output(format!(
            "the model returned {} probability rows for {rows} rows",
            predictions.probabilities.len() / classes.max(1)
        )));
    }
    Ok(predictions)
}

/// A classifier spec for unit tests, with `inputs` as (name, kind, nullable).
#[cfg(test)]
pub fn test_spec(version: &str, inputs: &[(&str, &str, bool)]) -> ModelSpec {
    let inputs: Vec<serde_json::Value> = inputs
        .iter()
        .map(|(name, kind, nullable)| {
            serde_json::json!({"name": name, "input": name, "kind": kind, "nullable": nullable})
        })
        .collect();
    let card = serde_json::from_value(serde_json::json!({
        "card_version": 1, "version": version, "family": "logistic", "task": "binary",
        "target": "y", "classes": ["no", "yes"], "inputs": inputs,
        "outputs": {"label": "label", "probabilities": "probabilities"},
        "lineage": {"dataset_uri": "file://d.csv", "dataset_digest": "0", "dataset_rows": 1,
                    "trainer_version": "test", "created_at": "2026-01-01T00:00:00Z"}
    }))
    .unwrap();
    ModelSpec {
        name: "m".into(),
        card,
        onnx_path: "model.onnx".into(),
        label: LabelOutput::ClassIndex,
        probabilities: ProbabilityOutput::Tensor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_columns_and_split_predictions_line_up() {
        let mut a = Columns {
            rows: 2,
            data: vec![
                ColumnData::F32(vec![1.0, 2.0]),
                ColumnData::Str(vec!["a".into(), "b".into()]),
            ],
        };
        let b = Columns {
            rows: 1,
            data: vec![
                ColumnData::F32(vec![3.0]),
                ColumnData::Str(vec![String::new()]),
            ],
        };
        let concat = Columns::concat([a.clone(), b.clone()]);
        a.append(b);
        assert_eq!(concat.as_ref(), Some(&a));
        assert_eq!(Columns::concat(std::iter::empty()), None);
        assert_eq!(a.rows, 3);
        assert_eq!(a.data[0], ColumnData::F32(vec![1.0, 2.0, 3.0]));
        assert_eq!(
            a.data[1],
            ColumnData::Str(vec!["a".into(), "b".into(), String::new()])
        );

        let merged = Predictions {
            labels: Labels::Class(vec![0, 1, 2]),
            probabilities: vec![0.9, 0.1, 0.2, 0.8, 0.5, 0.5],
            classes: 2,
        };
        let second = merged.slice(2..3);
        assert_eq!(second.labels, Labels::Class(vec![2]));
        assert_eq!(second.probabilities, vec![0.5, 0.5]);
        assert_eq!(merged.row_probabilities(1), Some(&[0.2, 0.8][..]));
        assert_eq!(merged.row_probabilities(3), None);

        let regression = Predictions {
            labels: Labels::Value(vec![1.0, 2.0]),
            probabilities: Vec::new(),
            classes: 0,
        };
        assert_eq!(regression.slice(1..2).labels, Labels::Value(vec![2.0]));
        assert_eq!(regression.row_probabilities(0), None);
    }
}
