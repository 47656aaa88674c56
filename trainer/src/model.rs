//! A fitted model as the exporter and the parity gate see it.

use crate::boost::{Booster, Loss, transform};
use crate::features::Matrix;
use crate::linear::{LinearModel, sigmoid};
use crate::metrics::Probabilities;
use crate::mlp::{Head, Mlp};
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
    /// Rounds parameters to f32, the precision ONNX stores them in, so the trainer's own
    /// predictions are those of the exported model.
    pub fn round_to_f32(&mut self) {
        if let Model::Mlp(mlp) = self {
            mlp.round_to_f32();
        }
        if let Model::Linear { model, .. } = self {
            for row in &mut model.coef {
                row.iter_mut().for_each(|v| *v = f64::from(*v as f32));
            }
            model
                .intercept
                .iter_mut()
                .for_each(|v| *v = f64::from(*v as f32));
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
