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

/// float32's unit roundoff, 2^-24: rounding a real number to float32 moves it by at most this
/// much relative to its magnitude.
pub const FLOAT32_ROUNDOFF: f64 = 1.0 / 16_777_216.0;
/// double's unit roundoff, 2^-53.
const FLOAT64_ROUNDOFF: f64 = FLOAT32_ROUNDOFF / 536_870_912.0;
/// Headroom over the bounds below, for what they leave out: ONNX Runtime's exp, tanh and
/// sigmoid in double are within a few double ulps of Rust's, far below a float32 rounding.
const MARGIN: f64 = 2.0;

/// What bounds the exported graph's rounding of one row's prediction (`Model::rounding`).
///
/// The graph reproduces the featurisation bit for bit (float32 in both) and runs the model in
/// double from there (`onnx::export`), so the trainer's value `v` and ONNX Runtime's differ by:
/// - the double arithmetic: a sum of `terms` terms whose magnitudes add up to `magnitude` is off
///   by at most `terms · 2^-53 · magnitude` (the standard bound for recursive summation; MatMul
///   and the tree ensembles sum in some order, each order is within it);
/// - the rounding of the output to float32: `2^-24 · |v|`;
/// - for gradient-boosted classifiers, the raw scores' rounding to float32 (the tree operator
///   outputs float32) before the softmax or sigmoid in double: every score moves by at most
///   `2^-24 · scores`, which moves each probability `p` by at most `2 · 2^-24 · scores · p`
///   (the softmax's log-derivative in any one score is within [-1, 1], and the shifts of the
///   class's own score and of the normaliser add).
///
/// The tolerance is [`MARGIN`] times that sum; anything beyond it is a different computation —
/// a row sent to another leaf, classes in another order, a wrong coefficient — and fails.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rounding {
    pub terms: usize,
    pub magnitude: f64,
    pub scores: f64,
}

impl Rounding {
    fn double_sum(&self) -> f64 {
        (self.terms + 1) as f64 * FLOAT64_ROUNDOFF * self.magnitude
    }

    /// How far ONNX Runtime's regression value may lie from the trainer's `value`.
    pub fn value_tolerance(&self, value: f64) -> f64 {
        MARGIN * (FLOAT32_ROUNDOFF * value.abs() + self.double_sum())
    }

    /// How far ONNX Runtime's probability may lie from the trainer's `p`. The probabilities'
    /// own double arithmetic (a normalised sum, at most `magnitude` for tree votes) is bounded
    /// like a sum of magnitude at least 1.
    pub fn probability_tolerance(&self, p: f64) -> f64 {
        let double = (self.terms + 1) as f64 * FLOAT64_ROUNDOFF * self.magnitude.max(1.0);
        MARGIN * (FLOAT32_ROUNDOFF * p * (1.0 + 2.0 * self.scores) + double)
    }
}

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

/// Compares ONNX Runtime's output with the trainer's predictions for the same rows, within the
/// rows' rounding bounds (`rounding[row]`, see [`Rounding`]).
pub fn compare(
    trained: &Prediction,
    exported: &OrtPrediction,
    rounding: &[Rounding],
) -> Result<()> {
    match (trained, exported) {
        (
            Prediction::Classes(Probabilities { classes, values }),
            OrtPrediction::Classes {
                labels,
                probabilities,
            },
        ) => {
            let rows = values.len() / classes;
            if labels.len() != rows || probabilities.len() != values.len() || rounding.len() != rows
            {
                return Err(TrainerError::Parity(format!(
                    "onnx output has {} labels and {} probabilities for {rows} rows of {classes} classes",
                    labels.len(),
                    probabilities.len()
                )));
            }
            for row in 0..rows {
                let mine = &values[row * classes..(row + 1) * classes];
                let theirs = &probabilities[row * classes..(row + 1) * classes];
                let bound = &rounding[row];
                for (c, (a, b)) in mine.iter().zip(theirs).enumerate() {
                    let tolerance = bound.probability_tolerance(*a);
                    if (a - f64::from(*b)).abs() > tolerance || b.is_nan() {
                        return Err(TrainerError::Parity(format!(
                            "validation row {row}: probability of class {c} is {a} in the trainer but {b} in onnx (tolerance {tolerance:.3e})"
                        )));
                    }
                }
                let label = argmax(mine);
                if i64::from(label) != labels[row] {
                    // Two probabilities within their tolerances of each other may swap order
                    // in float32: a tie broken the other way is not a defect.
                    let other = usize::try_from(labels[row]).unwrap_or(usize::MAX);
                    let tie = other < *classes && {
                        let (a, b) = (mine[label as usize], mine[other]);
                        (a - b).abs()
                            <= bound.probability_tolerance(a) + bound.probability_tolerance(b)
                    };
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
            if mine.len() != theirs.len() || rounding.len() != mine.len() {
                return Err(TrainerError::Parity(format!(
                    "onnx returned {} values for {} rows",
                    theirs.len(),
                    mine.len()
                )));
            }
            for (row, ((a, b), bound)) in mine.iter().zip(theirs).zip(rounding).enumerate() {
                let b = f64::from(*b);
                let tolerance = bound.value_tolerance(*a);
                // Written so that a NaN from onnx fails too.
                let within = (a - b).abs() <= tolerance;
                if !within {
                    return Err(TrainerError::Parity(format!(
                        "validation row {row}: prediction is {a} in the trainer but {b} in onnx (tolerance {tolerance:.3e})"
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
    use crate::features::Featurizer;
    use crate::model::Model;
    use crate::onnx::export::export;
    use crate::tree::{Node, Objective, Tree};
    use flywheel_core::protocol::FailureReason;

    fn trained() -> Prediction {
        Prediction::Classes(Probabilities {
            classes: 2,
            values: vec![0.9, 0.1, 0.5, 0.5],
        })
    }

    /// Probabilities from one sum in double: only the final float32 rounding.
    fn exact(rows: usize) -> Vec<Rounding> {
        vec![
            Rounding {
                terms: 1,
                magnitude: 1.0,
                scores: 0.0,
            };
            rows
        ]
    }

    #[test]
    fn agreeing_outputs_pass_and_ties_may_break_either_way() {
        // The trainer's probabilities rounded to float32, and a 0.5/0.5 tie labelled 1.
        let exported = OrtPrediction::Classes {
            labels: vec![0, 1],
            probabilities: vec![0.9, 0.1, 0.5, 0.5],
        };
        assert!(compare(&trained(), &exported, &exact(2)).is_ok());
    }

    #[test]
    fn mismatches_fail_with_the_parity_reason() {
        let wrong_probability = OrtPrediction::Classes {
            labels: vec![0, 0],
            probabilities: vec![0.8, 0.2, 0.5, 0.5],
        };
        let err = compare(&trained(), &wrong_probability, &exact(2)).unwrap_err();
        assert_eq!(err.reason(), FailureReason::ParityMismatch);
        assert!(err.to_string().contains("row 0"), "{err}");
        // The old gate's 1e-4 let this through; a difference a thousand times float32's
        // rounding is not rounding.
        let nearly = OrtPrediction::Classes {
            labels: vec![0, 0],
            probabilities: vec![0.900_05, 0.099_95, 0.5, 0.5],
        };
        assert!(compare(&trained(), &nearly, &exact(2)).is_err());
        let wrong_label = OrtPrediction::Classes {
            labels: vec![1, 0],
            probabilities: vec![0.9, 0.1, 0.5, 0.5],
        };
        assert!(compare(&trained(), &wrong_label, &exact(2)).is_err());

        // Issue 17's row: -0.62 summed in double from terms in the thousands, rounded once to
        // float32, passes; the value float32 arithmetic on those terms gave (the 2^-11 grid) is
        // a different computation and fails.
        let trained_values = [1_450_437.843_778_464_5, -0.623_380_520_952_196_1];
        let values = Prediction::Values(trained_values.to_vec());
        let bounds = vec![
            Rounding {
                terms: 12,
                magnitude: 3.0e6,
                scores: 0.0,
            },
            Rounding {
                terms: 12,
                magnitude: 9.0e3,
                scores: 0.0,
            },
        ];
        let rounded = OrtPrediction::Values(trained_values.iter().map(|v| *v as f32).collect());
        assert!(compare(&values, &rounded, &bounds).is_ok());
        let grid = OrtPrediction::Values(vec![trained_values[0] as f32, -1277.0 / 2048.0]);
        let err = compare(&values, &grid, &bounds).unwrap_err();
        assert!(err.to_string().contains("row 1"), "{err}");
        assert_eq!(
            err.exit_code(),
            flywheel_core::protocol::exit_code::INTERNAL
        );
        let nan = OrtPrediction::Values(vec![f32::NAN, trained_values[1] as f32]);
        assert!(compare(&values, &nan, &bounds).is_err());
    }

    /// The bounds hold for what they bound: a float32 rounding of any value, and softmax
    /// probabilities from scores each moved by a float32 rounding in the worst direction.
    #[test]
    fn tolerances_cover_float32_rounding_and_not_much_more() {
        let none = Rounding {
            terms: 0,
            magnitude: 0.0,
            scores: 0.0,
        };
        let mut value = 1.0e-3f64;
        while value < 1.0e7 {
            for v in [value, -value, value * 1.234_567_891] {
                let rounded = f64::from(v as f32);
                assert!(
                    (v - rounded).abs() <= none.value_tolerance(v) / MARGIN,
                    "{v}"
                );
                // Four float32 ulps away is outside.
                let far = f64::from(f32::from_bits((v as f32).to_bits() + 4));
                assert!((v - far).abs() > none.value_tolerance(v), "{v}");
            }
            value *= 1.7;
        }
        let softmax = |s: &[f64]| {
            let max = s.iter().copied().fold(f64::MIN, f64::max);
            let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            e.into_iter().map(|v| v / sum).collect::<Vec<f64>>()
        };
        let scores = [31.7, -29.3, 30.9, 4.2];
        let largest = 31.7;
        let p = softmax(&scores);
        for class in 0..scores.len() {
            // Push the class's own score one way and every other the other way.
            let moved: Vec<f64> = scores
                .iter()
                .enumerate()
                .map(|(j, s)| {
                    let sign = if j == class { -1.0 } else { 1.0 };
                    s + sign * FLOAT32_ROUNDOFF * s.abs()
                })
                .collect();
            let q = softmax(&moved);
            let bound = Rounding {
                terms: 0,
                magnitude: 1.0,
                scores: largest,
            };
            let shift = (p[class] - q[class]).abs() + FLOAT32_ROUNDOFF * q[class];
            assert!(
                shift <= bound.probability_tolerance(p[class]),
                "class {class}"
            );
            assert!(shift > 0.0);
        }
    }

    fn feature(values: Vec<f32>) -> Feature {
        Feature {
            name: "x".into(),
            kind: FeatureKind::Numeric,
            values,
            codes: Vec::new(),
        }
    }

    fn split(threshold: f32, left: Vec<f64>, right: Vec<f64>) -> Tree {
        let leaf = |value| Node {
            feature: 0,
            threshold: 0.0,
            left: 0,
            right: 0,
            value,
        };
        Tree {
            nodes: vec![
                Node {
                    feature: 0,
                    threshold,
                    left: 1,
                    right: 2,
                    value: Vec::new(),
                },
                leaf(left),
                leaf(right),
            ],
        }
    }

    /// Exports `exported`, runs it in ONNX Runtime and compares with what `trained` predicts.
    fn gate(features: &[Feature], trained: &Model, exported: &Model, classes: bool) -> Result<()> {
        let rows: Vec<usize> = (0..features[0].values.len()).collect();
        let featurizer = Featurizer::fit(features, &rows, false);
        let x = featurizer.transform(features, &rows);
        let onnx = export(features, &featurizer, exported, "parity test");
        // ONNX Runtime allows one environment per process, and tests share the process.
        static ENVIRONMENT: std::sync::OnceLock<
            std::result::Result<ort::environment::Environment, String>,
        > = std::sync::OnceLock::new();
        let env = ENVIRONMENT
            .get_or_init(|| environment().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| TrainerError::Runtime(e.clone()))?;
        let mut session = session(env, &onnx.bytes, 1)?;
        let names: Vec<String> = onnx.inputs.iter().map(|i| i.input.clone()).collect();
        let output = run(&mut session, inputs(features, &names, &rows)?, classes)?;
        compare(&trained.predict(&x), &output, &trained.rounding(&x))
    }

    /// Wide-range values on both sides of every threshold, and on the thresholds themselves.
    fn wide() -> (Vec<Feature>, Vec<f32>) {
        let thresholds: Vec<f32> = (0..40).map(|i| 1.0e-3 * 1.6f32.powi(i)).collect();
        let mut values = Vec::new();
        for &t in &thresholds {
            values.extend([
                t,
                f32::from_bits(t.to_bits() - 1),
                f32::from_bits(t.to_bits() + 1),
            ]);
        }
        (vec![feature(values)], thresholds)
    }

    #[test]
    fn a_forest_of_large_leaves_passes_and_one_wrong_leaf_fails() {
        let (features, thresholds) = wide();
        // A price-like forest: leaves in the millions that nearly cancel for some rows.
        let trees: Vec<Tree> = thresholds
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let big = 1.0e6 + 12_345.678 * i as f64;
                split(t, vec![big], vec![-big + 0.5])
            })
            .collect();
        let model = |trees: Vec<Tree>| Model::Trees {
            trees,
            objective: Objective::Regression,
            scale: 1.0 / thresholds.len() as f64,
        };
        let right = model(trees.clone());
        gate(&features, &right, &right, false).unwrap();
        // One threshold one float32 step lower: the row on it goes to the other leaf.
        let mut moved = trees;
        let t = moved[17].nodes[0].threshold;
        moved[17].nodes[0].threshold = f32::from_bits(t.to_bits() - 1);
        let err = gate(&features, &right, &model(moved), false).unwrap_err();
        assert_eq!(err.reason(), FailureReason::ParityMismatch);
        assert!(err.to_string().contains("prediction is"), "{err}");
    }

    #[test]
    fn classes_in_another_order_fail() {
        let (features, thresholds) = wide();
        let trees = |flip: bool| {
            thresholds
                .iter()
                .map(|&t| {
                    let (a, b) = (vec![0.8, 0.15, 0.05], vec![0.1, 0.3, 0.6]);
                    if flip { split(t, b, a) } else { split(t, a, b) }
                })
                .collect::<Vec<Tree>>()
        };
        let model = |trees| Model::Trees {
            trees,
            objective: Objective::Classes(3),
            scale: 1.0 / thresholds.len() as f64,
        };
        let right = model(trees(false));
        gate(&features, &right, &right, true).unwrap();
        let mut swapped = trees(false);
        for tree in &mut swapped {
            for node in &mut tree.nodes {
                node.value.reverse();
            }
        }
        let err = gate(&features, &right, &model(swapped), true).unwrap_err();
        assert!(err.to_string().contains("probability of class"), "{err}");
        assert!(gate(&features, &right, &model(trees(true)), true).is_err());
    }
}
