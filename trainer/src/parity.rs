//! The parity gate and latency probe: the exported pipeline runs in ONNX Runtime on the raw
//! validation columns and must reproduce the trainer's own predictions.

use std::time::Instant;

use flywheel_core::api::Latency;
use ort::session::{Session, SessionInputValue, builder::GraphOptimizationLevel};
use ort::value::Tensor;

use crate::data::{Feature, FeatureKind, MISSING_CODE};
use crate::error::{Result, TrainerError};
use crate::metrics::{Probabilities, argmax};
use crate::model::Prediction;
use crate::onnx::export::{LABEL, PROBABILITIES, VARIABLE};

/// Probabilities may differ by this much (f32 accumulation order).
pub const PROBABILITY_TOLERANCE: f64 = 1e-4;
/// Regression outputs may differ by this much relative to `max(|value|, 1)`.
pub const RELATIVE_TOLERANCE: f64 = 1e-4;
/// Labels may differ only where the trainer's top two probabilities are this close: a tie
/// broken differently by f32 rounding is not a defect.
const TIE: f64 = 1e-5;

/// Starts ONNX Runtime once per process (the library is loaded from `ORT_DYLIB_PATH`).
pub fn environment() -> Result<ort::environment::Environment> {
    ort::init()
        .with_name("flywheel-trainer")
        .with_telemetry(false)
        .build()
        .map_err(|e| TrainerError::Runtime(format!("failed to start onnx runtime: {e}")))
}

pub fn session(
    env: &ort::environment::Environment,
    bytes: &[u8],
    threads: usize,
) -> Result<Session> {
    let builder = Session::builder(env)?;
    let builder = builder
        .with_optimization_level(GraphOptimizationLevel::Level1)
        .map_err(|e| TrainerError::Runtime(e.to_string()))?
        .with_intra_threads(threads.max(1))
        .map_err(|e| TrainerError::Runtime(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| TrainerError::Runtime(e.to_string()))?;
    let mut builder = builder;
    Ok(builder.commit_from_memory(bytes)?)
}

/// The raw column values for `rows`, as the model's inputs: floats with NaN for missing, strings
/// with "" for missing.
pub fn inputs(
    features: &[Feature],
    names: &[String],
    rows: &[usize],
) -> Result<Vec<(String, SessionInputValue<'static>)>> {
    let n = rows.len();
    features
        .iter()
        .zip(names)
        .map(|(feature, name)| {
            let value: SessionInputValue<'static> = match &feature.kind {
                FeatureKind::Strings { levels } => {
                    let cells: Vec<String> = rows
                        .iter()
                        .map(|&r| match feature.codes[r] {
                            MISSING_CODE => String::new(),
                            code => levels[code as usize].clone(),
                        })
                        .collect();
                    Tensor::from_string_array(([n, 1], &cells[..]))?.into()
                }
                _ => {
                    let values: Vec<f32> = rows.iter().map(|&r| feature.values[r]).collect();
                    Tensor::from_array(([n, 1], values))?.into()
                }
            };
            Ok((name.clone(), value))
        })
        .collect()
}

/// What ONNX Runtime predicted.
pub enum OrtPrediction {
    Classes {
        labels: Vec<i64>,
        probabilities: Vec<f32>,
    },
    Values(Vec<f32>),
}

pub fn run(
    session: &mut Session,
    inputs: Vec<(String, SessionInputValue<'static>)>,
    classification: bool,
) -> Result<OrtPrediction> {
    let outputs = session.run(inputs)?;
    if classification {
        let labels = outputs
            .get(LABEL)
            .ok_or_else(|| TrainerError::Runtime("the model has no label output".into()))?
            .try_extract_tensor::<i64>()?
            .1
            .to_vec();
        let probabilities = outputs
            .get(PROBABILITIES)
            .ok_or_else(|| TrainerError::Runtime("the model has no probabilities output".into()))?
            .try_extract_tensor::<f32>()?
            .1
            .to_vec();
        Ok(OrtPrediction::Classes {
            labels,
            probabilities,
        })
    } else {
        let values = outputs
            .get(VARIABLE)
            .ok_or_else(|| TrainerError::Runtime("the model has no variable output".into()))?
            .try_extract_tensor::<f32>()?
            .1
            .to_vec();
        Ok(OrtPrediction::Values(values))
    }
}

/// Compares ONNX Runtime's output with the trainer's predictions for the same rows.
pub fn compare(trained: &Prediction, exported: &OrtPrediction) -> Result<()> {
    match (trained, exported) {
        (
            Prediction::Classes(Probabilities { classes, values }),
            OrtPrediction::Classes {
                labels,
                probabilities,
            },
        ) => {
            let rows = values.len() / classes;
            if labels.len() != rows || probabilities.len() != values.len() {
                return Err(TrainerError::Parity(format!(
                    "onnx output has {} labels and {} probabilities for {rows} rows of {classes} classes",
                    labels.len(),
                    probabilities.len()
                )));
            }
            for row in 0..rows {
                let mine = &values[row * classes..(row + 1) * classes];
                let theirs = &probabilities[row * classes..(row + 1) * classes];
                for (c, (a, b)) in mine.iter().zip(theirs).enumerate() {
                    if (a - f64::from(*b)).abs() > PROBABILITY_TOLERANCE || b.is_nan() {
                        return Err(TrainerError::Parity(format!(
                            "validation row {row}: probability of class {c} is {a} in the trainer but {b} in onnx"
                        )));
                    }
                }
                let label = argmax(mine);
                if i64::from(label) != labels[row] {
                    let other = usize::try_from(labels[row]).unwrap_or(usize::MAX);
                    let tie = other < *classes && (mine[label as usize] - mine[other]).abs() <= TIE;
                    if !tie {
                        return Err(TrainerError::Parity(format!(
                            "validation row {row}: label is {label} in the trainer but {} in onnx",
                            labels[row]
                        )));
                    }
                }
            }
            Ok(())
        }
        (Prediction::Values(mine), OrtPrediction::Values(theirs)) => {
            if mine.len() != theirs.len() {
                return Err(TrainerError::Parity(format!(
                    "onnx returned {} values for {} rows",
                    theirs.len(),
                    mine.len()
                )));
            }
            for (row, (a, b)) in mine.iter().zip(theirs).enumerate() {
                let b = f64::from(*b);
                let within = (a - b).abs() <= RELATIVE_TOLERANCE * a.abs().max(1.0);
                if !within {
                    return Err(TrainerError::Parity(format!(
                        "validation row {row}: prediction is {a} in the trainer but {b} in onnx"
                    )));
                }
            }
            Ok(())
        }
        _ => Err(TrainerError::Parity(
            "onnx outputs do not match the task".into(),
        )),
    }
}

/// Single-row latency over up to `samples` validation rows, after a warm-up.
pub fn latency(
    session: &mut Session,
    features: &[Feature],
    names: &[String],
    rows: &[usize],
    classification: bool,
    samples: usize,
) -> Result<Latency> {
    let mut timings = Vec::with_capacity(samples);
    for i in 0..samples + 10 {
        let row = [rows[i % rows.len()]];
        let inputs = inputs(features, names, &row)?;
        let start = Instant::now();
        run(session, inputs, classification)?;
        let elapsed = start.elapsed().as_secs_f64() * 1e6;
        if i >= 10 {
            timings.push(elapsed);
        }
    }
    timings.sort_by(f64::total_cmp);
    let at = |q: f64| timings[((timings.len() - 1) as f64 * q).round() as usize];
    Ok(Latency {
        p50_micros: at(0.5),
        p99_micros: at(0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flywheel_core::protocol::FailureReason;

    fn trained() -> Prediction {
        Prediction::Classes(Probabilities {
            classes: 2,
            values: vec![0.9, 0.1, 0.5, 0.5],
        })
    }

    #[test]
    fn agreeing_outputs_pass_and_ties_may_break_either_way() {
        let exported = OrtPrediction::Classes {
            labels: vec![0, 1],
            probabilities: vec![0.900_01, 0.099_99, 0.5, 0.5],
        };
        assert!(compare(&trained(), &exported).is_ok());
    }

    #[test]
    fn mismatches_fail_with_the_parity_reason() {
        let wrong_probability = OrtPrediction::Classes {
            labels: vec![0, 0],
            probabilities: vec![0.8, 0.2, 0.5, 0.5],
        };
        let err = compare(&trained(), &wrong_probability).unwrap_err();
        assert_eq!(err.reason(), FailureReason::ParityMismatch);
        assert!(err.to_string().contains("row 0"), "{err}");
        let wrong_label = OrtPrediction::Classes {
            labels: vec![1, 0],
            probabilities: vec![0.9, 0.1, 0.5, 0.5],
        };
        assert!(compare(&trained(), &wrong_label).is_err());
        let values = Prediction::Values(vec![100.0, 0.5]);
        assert!(compare(&values, &OrtPrediction::Values(vec![100.005, 0.500_05])).is_ok());
        let err = compare(&values, &OrtPrediction::Values(vec![100.1, 0.5])).unwrap_err();
        assert_eq!(
            err.exit_code(),
            flywheel_core::protocol::exit_code::INTERNAL
        );
    }
}
