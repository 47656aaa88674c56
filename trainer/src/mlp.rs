//! A multi-layer perceptron trained with Adam on mini-batches: softmax or logistic output for
//! classification, a linear output on the standardised target for regression (the scaling is
//! folded into the last layer afterwards, so the exported graph needs no extra nodes).

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::features::Matrix;
use crate::linear::{Rows, sigmoid};

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
    /// Threads sharing each mini-batch's gradient once a batch is large enough to pay for it
    /// (`PARALLEL_BATCH_WORK`); the result does not depend on it.
    pub threads: usize,
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
    /// Raw output scores, row-major `[rows, outputs]` (the same sparse forward pass as
    /// training).
    pub fn scores(&self, x: &Matrix) -> Vec<f64> {
        let net = Net::from(self);
        let rows = Rows::from(x);
        let mut acts: Vec<Vec<f64>> = net.shapes.iter().map(|s| vec![0.0; s.1]).collect();
        let mut out = Vec::with_capacity(x.rows * net.shapes.last().map_or(0, |s| s.1));
        for r in 0..x.rows {
            let (index, values) = rows.row(r);
            forward(&net, self.activation, index, values, &mut acts);
            out.extend_from_slice(acts.last().map_or(&[][..], Vec::as_slice));
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

/// Each mini-batch is cut into this many shards whose gradients are summed in shard order:
/// threads take whole shards, so the fitted weights do not depend on the thread budget.
const SHARDS: usize = 8;

/// Mini-batches are shared between threads only when one needs at least this many weight
/// multiply-adds (forward; backward is about twice that): a batch is a synchronisation point, and
/// on this project's 2-core machine (load ~1.3) a 2-thread split made adult's batches (~0.3 M,
/// sparse one-hot inputs) slower, 4.0 s against 2.8 s, and letter's (~0.8 M) 1.2× faster when a
/// core was free but 2.5× slower when other work held the cores.
const PARALLEL_BATCH_WORK: f64 = 4e6;

/// The network as training sees it: layer `l`'s weights transposed to `[inputs][outputs]`, so a
/// forward step adds one contiguous row per non-zero input (one-hot inputs and ReLU outputs are
/// mostly zero) and the backward step reads the same rows.
#[derive(Clone)]
struct Net {
    /// `(inputs, outputs)` per layer.
    shapes: Vec<(usize, usize)>,
    weights: Vec<Vec<f64>>,
    bias: Vec<Vec<f64>>,
    /// Layers after the first again in `[outputs][inputs]` order, refreshed after every update:
    /// back-propagation then adds one contiguous row per output instead of taking one short
    /// dot product per input, which the compiler cannot vectorise (a dependent chain of adds).
    outward: Vec<Vec<f64>>,
}

impl Net {
    fn from(model: &Mlp) -> Net {
        let mut net = Net {
            shapes: model.layers.iter().map(|l| (l.inputs, l.outputs)).collect(),
            weights: model.layers.iter().map(transpose).collect(),
            bias: model.layers.iter().map(|l| l.bias.clone()).collect(),
            outward: vec![Vec::new(); model.layers.len()],
        };
        net.refresh();
        net
    }

    fn refresh(&mut self) {
        for l in 1..self.shapes.len() {
            let (inputs, outputs) = self.shapes[l];
            let w = &self.weights[l];
            let out = &mut self.outward[l];
            out.resize(inputs * outputs, 0.0);
            for i in 0..inputs {
                for o in 0..outputs {
                    out[o * inputs + i] = w[i * outputs + o];
                }
            }
        }
    }

    fn zeros(&self) -> Net {
        Net {
            shapes: self.shapes.clone(),
            weights: self.weights.iter().map(|w| vec![0.0; w.len()]).collect(),
            bias: self.bias.iter().map(|b| vec![0.0; b.len()]).collect(),
            outward: vec![Vec::new(); self.shapes.len()],
        }
    }

    fn clear(&mut self) {
        for v in self.weights.iter_mut().chain(self.bias.iter_mut()) {
            v.iter_mut().for_each(|x| *x = 0.0);
        }
    }

    fn add(&mut self, other: &Net) {
        for (a, b) in self
            .weights
            .iter_mut()
            .zip(&other.weights)
            .chain(self.bias.iter_mut().zip(&other.bias))
        {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
    }

    /// Writes the weights back into `model` in its `[outputs][inputs]` layout.
    fn store(&self, model: &mut Mlp) {
        for ((layer, w), b) in model.layers.iter_mut().zip(&self.weights).zip(&self.bias) {
            for i in 0..layer.inputs {
                for o in 0..layer.outputs {
                    layer.weights[o * layer.inputs + i] = w[i * layer.outputs + o];
                }
            }
            layer.bias.copy_from_slice(b);
        }
    }
}

fn transpose(layer: &Layer) -> Vec<f64> {
    let mut out = vec![0.0; layer.weights.len()];
    for o in 0..layer.outputs {
        for i in 0..layer.inputs {
            out[i * layer.outputs + o] = layer.weights[o * layer.inputs + i];
        }
    }
    out
}

/// `y += a x`.
#[inline]
fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// One row through the network: `acts[l]` receives layer `l`'s outputs (activated except the
/// last, which holds the raw scores). The input row is sparse.
fn forward(
    net: &Net,
    activation: Activation,
    index: &[u32],
    values: &[f64],
    acts: &mut [Vec<f64>],
) {
    let last = net.shapes.len() - 1;
    for l in 0..=last {
        let (inputs, outputs) = net.shapes[l];
        let (before, after) = acts.split_at_mut(l);
        let z = &mut after[0];
        z.copy_from_slice(&net.bias[l]);
        let w = &net.weights[l];
        if l == 0 {
            for (&j, &v) in index.iter().zip(values) {
                let j = j as usize;
                axpy(v, &w[j * outputs..(j + 1) * outputs], z);
            }
        } else {
            for (i, &a) in before[l - 1][..inputs].iter().enumerate() {
                if a != 0.0 {
                    axpy(a, &w[i * outputs..(i + 1) * outputs], z);
                }
            }
        }
        if l != last {
            z.iter_mut().for_each(|v| *v = activation.apply(*v));
        }
    }
}

/// What one forward and backward pass needs besides the weights.
struct Pass<'a> {
    rows: &'a Rows,
    targets: &'a MlpTargets<'a>,
    head: Head,
    activation: Activation,
    /// Regression trains on `(y - mean) / std`.
    mean: f64,
    std: f64,
}

impl Pass<'_> {
    /// Adds the loss gradients of `rows` to `grad`; `acts` and `deltas` are scratch space.
    fn accumulate(
        &self,
        net: &Net,
        rows: &[usize],
        grad: &mut Net,
        acts: &mut [Vec<f64>],
        deltas: &mut [Vec<f64>],
    ) {
        let last = net.shapes.len() - 1;
        for &r in rows {
            let (index, values) = self.rows.row(r);
            forward(net, self.activation, index, values, acts);
            let scores = &acts[last];
            let delta = &mut deltas[last];
            match (self.head, self.targets) {
                (Head::Softmax(_), MlpTargets::Classes(y)) => {
                    let max = scores.iter().copied().fold(f64::MIN, f64::max);
                    let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                    for (c, (d, s)) in delta.iter_mut().zip(scores).enumerate() {
                        *d = (s - max).exp() / sum - if c == y[r] as usize { 1.0 } else { 0.0 };
                    }
                }
                (Head::Binary, MlpTargets::Classes(y)) => {
                    delta[0] = sigmoid(scores[0]) - f64::from(y[r]);
                }
                (_, MlpTargets::Values(y)) => {
                    delta[0] = scores[0] - (y[r] - self.mean) / self.std;
                }
                _ => delta.iter_mut().for_each(|d| *d = 0.0),
            }
            for l in (0..=last).rev() {
                let (inputs, outputs) = net.shapes[l];
                let (lower, upper) = deltas.split_at_mut(l);
                let delta = &upper[0];
                axpy(1.0, delta, &mut grad.bias[l]);
                let gw = &mut grad.weights[l];
                if l == 0 {
                    for (&j, &v) in index.iter().zip(values) {
                        let j = j as usize;
                        axpy(v, delta, &mut gw[j * outputs..(j + 1) * outputs]);
                    }
                } else {
                    let input = &acts[l - 1];
                    let w = &net.outward[l];
                    let back = &mut lower[l - 1];
                    back.iter_mut().for_each(|b| *b = 0.0);
                    for (o, &d) in delta.iter().enumerate() {
                        if d != 0.0 {
                            axpy(d, &w[o * inputs..(o + 1) * inputs], back);
                        }
                    }
                    for (i, (&a, b)) in input.iter().zip(back.iter_mut()).enumerate() {
                        if a != 0.0 {
                            axpy(a, delta, &mut gw[i * outputs..(i + 1) * outputs]);
                        }
                        *b *= self.activation.derivative(a);
                    }
                }
            }
        }
    }

    /// The summed loss gradient of `batch` (in `grads[0]`, which needs `SHARDS` entries): the
    /// batch is cut into at most `SHARDS` shards, summed separately and then in shard order.
    fn batch_gradient<'g>(
        &self,
        net: &Net,
        batch: &[usize],
        grads: &'g mut [Net],
        threads: usize,
    ) -> &'g Net {
        let shards: Vec<&[usize]> = batch.chunks(batch.len().div_ceil(SHARDS).max(1)).collect();
        let used = shards.len().min(grads.len());
        self.shards(net, &shards[..used], &mut grads[..used], threads);
        let (total, rest) = grads.split_at_mut(1);
        for shard in &rest[..used.saturating_sub(1)] {
            total[0].add(shard);
        }
        &total[0]
    }

    /// Gradient sums of one shard per entry of `grads`, computed on up to `threads` threads.
    fn shards(&self, net: &Net, shards: &[&[usize]], grads: &mut [Net], threads: usize) {
        let work = |shards: &[&[usize]], grads: &mut [Net]| {
            let mut acts: Vec<Vec<f64>> = net.shapes.iter().map(|s| vec![0.0; s.1]).collect();
            let mut deltas = acts.clone();
            for (rows, grad) in shards.iter().zip(grads.iter_mut()) {
                grad.clear();
                self.accumulate(net, rows, grad, &mut acts, &mut deltas);
            }
        };
        let threads = threads.clamp(1, shards.len().max(1));
        if threads == 1 {
            work(shards, grads);
            return;
        }
        let per = shards.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let mut groups = shards.chunks(per).zip(grads.chunks_mut(per));
            let first = groups.next();
            for (mine, out) in groups {
                scope.spawn(move || work(mine, out));
            }
            // The calling thread takes the first group instead of idling.
            if let Some((mine, out)) = first {
                work(mine, out);
            }
        });
    }
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
    let rows = Rows::from(x);
    let pass = Pass {
        rows: &rows,
        targets,
        head,
        activation: params.activation,
        mean,
        std,
    };
    let mut net = Net::from(&model);
    let mut adam_m = net.zeros();
    let mut adam_v = net.zeros();
    let mut grads: Vec<Net> = (0..SHARDS).map(|_| net.zeros()).collect();
    let mut step = 0i32;
    let mut order: Vec<usize> = (0..x.rows).collect();
    let batch = params.batch_size.clamp(1, x.rows.max(1));
    let per_row = rows.nnz() as f64 / rows.rows.max(1) as f64 * net.shapes[0].1 as f64
        + net.shapes[1..]
            .iter()
            .map(|&(i, o)| (i * o) as f64)
            .sum::<f64>();
    let threads = if per_row * batch as f64 >= PARALLEL_BATCH_WORK {
        params.threads
    } else {
        1
    };
    for epoch in 1..=params.epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(batch) {
            let total = pass.batch_gradient(&net, chunk, &mut grads, threads);
            step += 1;
            let scale = 1.0 / chunk.len() as f64;
            let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
            let correction1 = 1.0 - b1.powi(step);
            let correction2 = 1.0 - b2.powi(step);
            let update = |p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64], decay: f64| {
                for i in 0..p.len() {
                    let grad = g[i] * scale + decay * p[i];
                    m[i] = b1 * m[i] + (1.0 - b1) * grad;
                    v[i] = b2 * v[i] + (1.0 - b2) * grad * grad;
                    p[i] -= params.learning_rate * (m[i] / correction1)
                        / ((v[i] / correction2).sqrt() + eps);
                }
            };
            for l in 0..net.shapes.len() {
                update(
                    &mut net.weights[l],
                    &total.weights[l],
                    &mut adam_m.weights[l],
                    &mut adam_v.weights[l],
                    params.weight_decay,
                );
                update(
                    &mut net.bias[l],
                    &total.bias[l],
                    &mut adam_m.bias[l],
                    &mut adam_v.bias[l],
                    0.0,
                );
            }
            net.refresh();
        }
        net.store(&mut model);
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
    fn sharded_batches_do_not_depend_on_the_thread_budget() {
        // Sparse one-hot-like inputs, two ReLU layers and a softmax head.
        let rows = 90;
        let x = Matrix {
            rows,
            columns: (0..5)
                .map(|j| {
                    (0..rows)
                        .map(|r| if (r + j) % 3 == 0 { 1.0 } else { 0.0 })
                        .collect()
                })
                .collect(),
        };
        let y: Vec<u32> = (0..rows).map(|r| (r % 3) as u32).collect();
        let targets = MlpTargets::Classes(&y);
        let params = MlpParams {
            hidden_layers: 2,
            hidden_units: 6,
            activation: Activation::Relu,
            learning_rate: 0.01,
            batch_size: 20,
            epochs: 2,
            weight_decay: 1e-4,
            seed: 4,
            threads: 2,
        };
        let model = fit(&x, &targets, Head::Softmax(3), params, |_, _| {});
        let net = Net::from(&model);
        let sparse = Rows::from(&x);
        let pass = Pass {
            rows: &sparse,
            targets: &targets,
            head: Head::Softmax(3),
            activation: Activation::Relu,
            mean: 0.0,
            std: 1.0,
        };
        let batch: Vec<usize> = (0..77).collect();
        let gradient = |threads| {
            let mut grads: Vec<Net> = (0..SHARDS).map(|_| net.zeros()).collect();
            let total = pass.batch_gradient(&net, &batch, &mut grads, threads);
            (total.weights.clone(), total.bias.clone())
        };
        let one = gradient(1);
        assert!(one.0.iter().flatten().any(|&g| g != 0.0));
        for threads in [2, 3, 8] {
            assert_eq!(one, gradient(threads), "{threads} threads");
        }
    }

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
            threads: 1,
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
