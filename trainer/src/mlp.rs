//! A multi-layer perceptron trained with Adam on mini-batches: softmax or logistic output for
//! classification, a linear output on the standardised target for regression (the scaling is
//! folded into the last layer afterwards, so the exported graph needs no extra nodes).

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::features::Matrix;
use crate::linear::sigmoid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Tanh,
    Sigmoid,
}

impl Activation {
    pub fn parse(name: &str) -> Activation {
        match name {
            "tanh" => Activation::Tanh,
            "sigmoid" => Activation::Sigmoid,
            _ => Activation::Relu,
        }
    }

    fn apply(self, z: f64) -> f64 {
        match self {
            Activation::Relu => z.max(0.0),
            Activation::Tanh => z.tanh(),
            Activation::Sigmoid => sigmoid(z),
        }
    }

    /// Derivative from the activation's output `a`.
    fn derivative(self, a: f64) -> f64 {
        match self {
            Activation::Relu => {
                if a > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Tanh => 1.0 - a * a,
            Activation::Sigmoid => a * (1.0 - a),
        }
    }
}

/// The output layer's meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    Regression,
    /// One logit: probability of class 1.
    Binary,
    Softmax(usize),
}

#[derive(Clone, Copy, Debug)]
pub struct MlpParams {
    pub hidden_layers: usize,
    pub hidden_units: usize,
    pub activation: Activation,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub epochs: usize,
    pub weight_decay: f64,
    pub seed: u64,
}

#[derive(Clone, Debug)]
pub struct Layer {
    pub inputs: usize,
    pub outputs: usize,
    /// `[outputs][inputs]`, row-major.
    pub weights: Vec<f64>,
    pub bias: Vec<f64>,
}

#[derive(Clone, Debug)]
pub struct Mlp {
    pub layers: Vec<Layer>,
    pub activation: Activation,
    pub head: Head,
}

impl Mlp {
    /// Output-layer scores for one input row; `trace` receives every layer's activations.
    fn forward(&self, input: &[f64], trace: &mut Vec<Vec<f64>>) {
        trace.clear();
        trace.push(input.to_vec());
        let last = self.layers.len() - 1;
        for (l, layer) in self.layers.iter().enumerate() {
            let previous = &trace[l];
            let out: Vec<f64> = (0..layer.outputs)
                .map(|o| {
                    let w = &layer.weights[o * layer.inputs..(o + 1) * layer.inputs];
                    let z = layer.bias[o] + w.iter().zip(previous).map(|(a, b)| a * b).sum::<f64>();
                    if l == last {
                        z
                    } else {
                        self.activation.apply(z)
                    }
                })
                .collect();
            trace.push(out);
        }
    }

    /// Raw output scores, row-major `[rows, outputs]`.
    pub fn scores(&self, x: &Matrix) -> Vec<f64> {
        let mut trace = Vec::new();
        let mut row = vec![0.0; x.width()];
        let mut out = Vec::new();
        for r in 0..x.rows {
            for (v, col) in row.iter_mut().zip(&x.columns) {
                *v = f64::from(col[r]);
            }
            self.forward(&row, &mut trace);
            out.extend_from_slice(trace.last().map_or(&[][..], Vec::as_slice));
        }
        out
    }

    pub fn round_to_f32(&mut self) {
        for layer in &mut self.layers {
            for v in layer.weights.iter_mut().chain(layer.bias.iter_mut()) {
                *v = f64::from(*v as f32);
            }
        }
    }
}

/// Targets for training.
pub enum MlpTargets<'a> {
    Classes(&'a [u32]),
    Values(&'a [f64]),
}

/// Trains for `params.epochs`; `on_epoch(epoch, &model)` runs after each epoch.
pub fn fit(
    x: &Matrix,
    targets: &MlpTargets<'_>,
    head: Head,
    params: MlpParams,
    mut on_epoch: impl FnMut(usize, &Mlp),
) -> Mlp {
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let outputs = match head {
        Head::Softmax(k) => k,
        _ => 1,
    };
    let mut sizes = vec![x.width()];
    sizes.extend(std::iter::repeat_n(
        params.hidden_units.max(1),
        params.hidden_layers,
    ));
    sizes.push(outputs);
    let layers: Vec<Layer> = sizes
        .windows(2)
        .map(|w| {
            let (inputs, outputs) = (w[0], w[1]);
            // Glorot uniform initialisation.
            let limit = (6.0 / (inputs + outputs) as f64).sqrt();
            Layer {
                inputs,
                outputs,
                weights: (0..inputs * outputs)
                    .map(|_| rng.random_range(-limit..limit))
                    .collect(),
                bias: vec![0.0; outputs],
            }
        })
        .collect();
    let mut model = Mlp {
        layers,
        activation: params.activation,
        head,
    };
    // Regression trains on the standardised target; the scale is folded back at the end.
    let (mean, std) = match targets {
        MlpTargets::Values(y) => {
            let n = y.len().max(1) as f64;
            let mean = y.iter().sum::<f64>() / n;
            let var = y.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            (mean, if var > 0.0 { var.sqrt() } else { 1.0 })
        }
        MlpTargets::Classes(_) => (0.0, 1.0),
    };
    let rows: Vec<Vec<f64>> = (0..x.rows)
        .map(|r| x.columns.iter().map(|c| f64::from(c[r])).collect())
        .collect();
    let mut adam_m: Vec<(Vec<f64>, Vec<f64>)> = model
        .layers
        .iter()
        .map(|l| (vec![0.0; l.weights.len()], vec![0.0; l.bias.len()]))
        .collect();
    let mut adam_v = adam_m.clone();
    let mut step = 0i32;
    let mut order: Vec<usize> = (0..x.rows).collect();
    let mut trace = Vec::new();
    let batch = params.batch_size.clamp(1, x.rows.max(1));
    for epoch in 1..=params.epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(batch) {
            let mut grads: Vec<(Vec<f64>, Vec<f64>)> = model
                .layers
                .iter()
                .map(|l| (vec![0.0; l.weights.len()], vec![0.0; l.bias.len()]))
                .collect();
            for &r in chunk {
                model.forward(&rows[r], &mut trace);
                let Some(scores) = trace.last() else { continue };
                let mut delta: Vec<f64> = match (head, targets) {
                    (Head::Softmax(k), MlpTargets::Classes(y)) => {
                        let max = scores.iter().copied().fold(f64::MIN, f64::max);
                        let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                        (0..k)
                            .map(|c| {
                                (scores[c] - max).exp() / sum
                                    - if c == y[r] as usize { 1.0 } else { 0.0 }
                            })
                            .collect()
                    }
                    (Head::Binary, MlpTargets::Classes(y)) => {
                        vec![sigmoid(scores[0]) - f64::from(y[r])]
                    }
                    (_, MlpTargets::Values(y)) => vec![scores[0] - (y[r] - mean) / std],
                    _ => vec![0.0; scores.len()],
                };
                for l in (0..model.layers.len()).rev() {
                    let layer = &model.layers[l];
                    let input = &trace[l];
                    let (gw, gb) = &mut grads[l];
                    for (o, d) in delta.iter().enumerate() {
                        gb[o] += d;
                        let row = &mut gw[o * layer.inputs..(o + 1) * layer.inputs];
                        for (g, a) in row.iter_mut().zip(input) {
                            *g += d * a;
                        }
                    }
                    if l > 0 {
                        delta = (0..layer.inputs)
                            .map(|i| {
                                let back: f64 = delta
                                    .iter()
                                    .enumerate()
                                    .map(|(o, d)| d * layer.weights[o * layer.inputs + i])
                                    .sum();
                                back * model.activation.derivative(input[i])
                            })
                            .collect();
                    }
                }
            }
            step += 1;
            let scale = 1.0 / chunk.len() as f64;
            let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
            let correction1 = 1.0 - b1.powi(step);
            let correction2 = 1.0 - b2.powi(step);
            for (l, layer) in model.layers.iter_mut().enumerate() {
                let (gw, gb) = &grads[l];
                let (mw, mb) = &mut adam_m[l];
                let (vw, vb) = &mut adam_v[l];
                let update =
                    |p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64], decay: f64| {
                        for i in 0..p.len() {
                            let grad = g[i] * scale + decay * p[i];
                            m[i] = b1 * m[i] + (1.0 - b1) * grad;
                            v[i] = b2 * v[i] + (1.0 - b2) * grad * grad;
                            p[i] -= params.learning_rate * (m[i] / correction1)
                                / ((v[i] / correction2).sqrt() + eps);
                        }
                    };
                update(&mut layer.weights, gw, mw, vw, params.weight_decay);
                update(&mut layer.bias, gb, mb, vb, 0.0);
            }
        }
        let mut reported = model.clone();
        fold_target_scale(&mut reported, mean, std);
        on_epoch(epoch, &reported);
    }
    fold_target_scale(&mut model, mean, std);
    model
}

/// `score · std + mean` folded into the last layer.
fn fold_target_scale(model: &mut Mlp, mean: f64, std: f64) {
    if model.head != Head::Regression {
        return;
    }
    if let Some(last) = model.layers.last_mut() {
        last.weights.iter_mut().for_each(|w| *w *= std);
        last.bias.iter_mut().for_each(|b| *b = *b * std + mean);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mlp_learns_xor() {
        let x = Matrix {
            rows: 4,
            columns: vec![vec![0.0, 0.0, 1.0, 1.0], vec![0.0, 1.0, 0.0, 1.0]],
        };
        let y = [0, 1, 1, 0];
        let params = MlpParams {
            hidden_layers: 1,
            hidden_units: 8,
            activation: Activation::Tanh,
            learning_rate: 0.05,
            batch_size: 4,
            epochs: 2000,
            weight_decay: 0.0,
            seed: 1,
        };
        let model = fit(
            &x,
            &MlpTargets::Classes(&y),
            Head::Binary,
            params,
            |_, _| {},
        );
        let scores = model.scores(&x);
        for (s, &t) in scores.iter().zip(&y) {
            assert_eq!(u32::from(*s > 0.0), t, "{scores:?}");
        }
    }
}
