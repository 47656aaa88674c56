//! A fitted model as the exporter and the parity gate see it.

use crate::boost::{Booster, Loss, transform};
use crate::features::Matrix;
use crate::linear::{LinearModel, sigmoid};
use crate::metrics::Probabilities;
use crate::mlp::{Activation, Head, Mlp};
use crate::parity::Rounding;
use crate::tree::{Objective, Tree};

pub enum Model {
    /// `classes`: `None` for regression.
    Linear {
        model: LinearModel,
        classes: Option<usize>,
    },
    /// Leaf values are multiplied by `scale` (1/trees for a forest's average) and summed.
    Trees {
        trees: Vec<Tree>,
        objective: Objective,
        scale: f64,
    },
    /// Gradient boosting: raw scores through a sigmoid or softmax (classification).
    Boosted(Booster),
    Mlp(Mlp),
}

pub enum Prediction {
    Classes(Probabilities),
    Values(Vec<f64>),
}

impl Model {
    /// Rounds the parameters the export stores in float32 (MLP weights; tree leaf values are
    /// rounded where they are added) so the trainer's own predictions are those of the exported
    /// model. Linear coefficients are stored in double and stay as fitted.
    pub fn round_to_f32(&mut self) {
        if let Model::Mlp(mlp) = self {
            mlp.round_to_f32();
        }
    }

    /// Per row, what bounds the exported graph's rounding of this model's prediction (see
    /// `parity`): the number of terms summed in double, the sum of their magnitudes, and the
    /// largest raw score rounded to float32 before a probability head (gradient boosting only).
    pub fn rounding(&self, x: &Matrix) -> Vec<Rounding> {
        match self {
            Model::Linear { model, .. } => (0..x.rows)
                .map(|r| {
                    let magnitude = model
                        .coef
                        .iter()
                        .zip(&model.intercept)
                        .map(|(w, b)| {
                            b.abs()
                                + w.iter()
                                    .zip(&x.columns)
                                    .map(|(w, col)| (w * f64::from(col[r])).abs())
                                    .sum::<f64>()
                        })
                        .fold(0.0, f64::max);
                    Rounding {
                        terms: x.width() + 1,
                        magnitude,
                        scores: 0.0,
                    }
                })
                .collect(),
            Model::Trees { trees, scale, .. } => (0..x.rows)
                .map(|r| Rounding {
                    terms: trees.len(),
                    magnitude: trees
                        .iter()
                        .map(|t| {
                            t.leaf(x, r)
                                .iter()
                                .map(|v| f64::from((v * scale) as f32).abs())
                                .sum::<f64>()
                        })
                        .sum(),
                    scores: 0.0,
                })
                .collect(),
            Model::Boosted(booster) => {
                let k = booster.loss.outputs();
                let scores = booster.scores(x);
                let base: f64 = booster
                    .base
                    .iter()
                    .map(|b| f64::from(*b as f32).abs())
                    .sum();
                (0..x.rows)
                    .map(|r| {
                        let leaves: f64 = booster
                            .trees
                            .iter()
                            .map(|t| f64::from(t.leaf(x, r)[0] as f32).abs())
                            .sum();
                        let raw = &scores[r * k..(r + 1) * k];
                        Rounding {
                            terms: booster.trees.len() + k,
                            magnitude: base + leaves,
                            scores: if booster.loss == Loss::Squared {
                                0.0
                            } else {
                                raw.iter().fold(0.0, |m, s| f64::max(m, s.abs()))
                            },
                        }
                    })
                    .collect()
            }
            Model::Mlp(mlp) => mlp_rounding(mlp, x),
        }
    }

    pub fn predict(&self, x: &Matrix) -> Prediction {
        match self {
            Model::Linear {
                model,
                classes: None,
            } => Prediction::Values((0..x.rows).map(|r| model.scores(x, r)[0]).collect()),
            Model::Linear {
                model,
                classes: Some(classes),
            } => {
                let mut values = Vec::with_capacity(x.rows * classes);
                for r in 0..x.rows {
                    let scores = model.scores(x, r);
                    if *classes == 2 {
                        let p = sigmoid(scores[0]);
                        values.extend([1.0 - p, p]);
                    } else {
                        let max = scores.iter().copied().fold(f64::MIN, f64::max);
                        let exp: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                        let sum: f64 = exp.iter().sum();
                        values.extend(exp.iter().map(|e| e / sum));
                    }
                }
                Prediction::Classes(Probabilities {
                    classes: *classes,
                    values,
                })
            }
            Model::Trees {
                trees,
                objective,
                scale,
            } => {
                let width = match objective {
                    Objective::Classes(c) => *c,
                    Objective::Regression => 1,
                };
                let mut values = vec![0.0; x.rows * width];
                for tree in trees {
                    accumulate(tree, x, *scale, width, &mut values);
                }
                match objective {
                    Objective::Classes(classes) => Prediction::Classes(Probabilities {
                        classes: *classes,
                        values,
                    }),
                    Objective::Regression => Prediction::Values(values),
                }
            }
            Model::Boosted(booster) => {
                let values = transform(booster.loss, &booster.scores(x));
                match booster.loss {
                    Loss::Squared => Prediction::Values(values),
                    Loss::Logistic => Prediction::Classes(Probabilities { classes: 2, values }),
                    Loss::Softmax(classes) => {
                        Prediction::Classes(Probabilities { classes, values })
                    }
                }
            }
            Model::Mlp(mlp) => mlp_prediction(mlp.head, &mlp.scores(x)),
        }
    }
}

/// The output layer's `|bias| + Σ |weight · hidden|` per row (the largest over outputs). The
/// last layer's inputs are hidden units (there is at least one hidden layer): ReLU and sigmoid
/// units are non-negative, so a copy of the network whose output layer holds absolute values
/// computes the sum exactly; tanh units lie in [-1, 1], so `|bias| + Σ |weight|` bounds it.
/// Every layer's fan-in counts as terms: the hidden layers' double rounding reaches the output
/// through the same sums.
fn mlp_rounding(mlp: &Mlp, x: &Matrix) -> Vec<Rounding> {
    let terms = mlp.layers.iter().map(|l| l.inputs + 1).sum();
    let mut absolute = mlp.clone();
    let Some(last) = absolute.layers.last_mut() else {
        return Vec::new();
    };
    last.weights.iter_mut().for_each(|w| *w = w.abs());
    last.bias.iter_mut().for_each(|b| *b = b.abs());
    let outputs = last.outputs.max(1);
    let magnitudes: Vec<f64> = if mlp.activation == Activation::Tanh {
        let bound = last
            .weights
            .chunks(last.inputs.max(1))
            .zip(&last.bias)
            .map(|(w, b)| b + w.iter().sum::<f64>())
            .fold(0.0, f64::max);
        vec![bound; x.rows]
    } else {
        absolute
            .scores(x)
            .chunks(outputs)
            .map(|row| row.iter().copied().fold(0.0, f64::max))
            .collect()
    };
    magnitudes
        .into_iter()
        .map(|magnitude| Rounding {
            terms,
            magnitude,
            scores: 0.0,
        })
        .collect()
}

/// Adds one tree's leaf weights, rounded to f32 as the ONNX attributes hold them.
pub fn accumulate(tree: &Tree, x: &Matrix, scale: f64, width: usize, out: &mut [f64]) {
    for r in 0..x.rows {
        let leaf = tree.leaf(x, r);
        for (o, v) in out[r * width..(r + 1) * width].iter_mut().zip(leaf) {
            *o += f64::from((v * scale) as f32);
        }
    }
}

/// Output-layer scores to predictions (shared by the per-epoch reports).
pub fn mlp_prediction(head: Head, scores: &[f64]) -> Prediction {
    match head {
        Head::Regression => Prediction::Values(scores.to_vec()),
        Head::Binary => Prediction::Classes(Probabilities {
            classes: 2,
            values: transform(Loss::Logistic, scores),
        }),
        Head::Softmax(classes) => Prediction::Classes(Probabilities {
            classes,
            values: transform(Loss::Softmax(classes), scores),
        }),
    }
}
