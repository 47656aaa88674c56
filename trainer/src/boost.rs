//! Histogram gradient boosting: leaf-wise trees on the binned features (the same thresholds as
//! the forests, so the export is exact), squared error for regression, logistic loss for
//! binary and softmax for multiclass (one tree per class per round).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::features::Matrix;
use crate::linear::sigmoid;
use crate::tree::{Binned, Node, Tree};

/// Leaves keep at least this many rows (scikit-learn's HistGradientBoosting default): with
/// logistic hessians near zero, `min_child_weight` alone lets a handful of rows produce huge,
/// overconfident leaf values.
const MIN_ROWS_PER_LEAF: usize = 20;

#[derive(Clone, Copy, Debug)]
pub struct BoostParams {
    pub rounds: usize,
    pub learning_rate: f64,
    pub max_leaves: usize,
    pub max_depth: usize,
    pub min_child_weight: f64,
    pub subsample: f64,
    pub l2: f64,
    pub seed: u64,
    /// Multiclass rounds grow their per-class trees on this many threads.
    pub threads: usize,
}

/// What the raw scores mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    Squared,
    Logistic,
    Softmax(usize),
}

impl Loss {
    pub fn outputs(self) -> usize {
        match self {
            Loss::Softmax(k) => k,
            _ => 1,
        }
    }
}

/// Trees in round-major order: tree `t` adds to output `t % outputs`.
pub struct Booster {
    pub loss: Loss,
    pub base: Vec<f64>,
    pub trees: Vec<Tree>,
}

impl Booster {
    /// Raw scores, row-major `[rows, outputs]`, from leaf values rounded to f32 as exported.
    pub fn scores(&self, x: &Matrix) -> Vec<f64> {
        let k = self.loss.outputs();
        let mut out = Vec::with_capacity(x.rows * k);
        for _ in 0..x.rows {
            out.extend(self.base.iter().map(|&b| f64::from(b as f32)));
        }
        for (t, tree) in self.trees.iter().enumerate() {
            add_tree(tree, x, t % k, k, &mut out);
        }
        out
    }
}

pub fn add_tree(tree: &Tree, x: &Matrix, output: usize, outputs: usize, scores: &mut [f64]) {
    for r in 0..x.rows {
        scores[r * outputs + output] += f64::from(tree.leaf(x, r)[0] as f32);
    }
}

/// Probabilities (classification) or values (regression) from raw scores.
pub fn transform(loss: Loss, scores: &[f64]) -> Vec<f64> {
    match loss {
        Loss::Squared => scores.to_vec(),
        Loss::Logistic => scores
            .iter()
            .flat_map(|&s| {
                let p = sigmoid(s);
                [1.0 - p, p]
            })
            .collect(),
        Loss::Softmax(k) => scores
            .chunks(k)
            .flat_map(|row| {
                let max = row.iter().copied().fold(f64::MIN, f64::max);
                let exp: Vec<f64> = row.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = exp.iter().sum();
                exp.into_iter().map(move |e| e / sum)
            })
            .collect(),
    }
}

/// Targets: class indices or values.
pub enum Targets<'a> {
    Classes(&'a [u32]),
    Values(&'a [f64]),
}

/// Trains round by round; `on_round(rounds_done, &booster)` runs after every round so the
/// caller can report.
pub fn fit(
    x: &Matrix,
    binned: &Binned,
    targets: &Targets<'_>,
    loss: Loss,
    params: BoostParams,
    mut on_round: impl FnMut(usize, &Booster),
) -> Booster {
    let n = x.rows;
    let k = loss.outputs();
    let base: Vec<f64> = match (loss, targets) {
        (Loss::Squared, Targets::Values(y)) => vec![y.iter().sum::<f64>() / n.max(1) as f64],
        (Loss::Logistic, Targets::Classes(y)) => {
            let p = (y.iter().filter(|&&c| c == 1).count() as f64 / n.max(1) as f64)
                .clamp(1e-6, 1.0 - 1e-6);
            vec![(p / (1.0 - p)).ln()]
        }
        (Loss::Softmax(classes), Targets::Classes(y)) => {
            let mut counts = vec![0.0; classes];
            for &c in y.iter() {
                counts[c as usize] += 1.0;
            }
            counts
                .iter()
                .map(|c| (c / n.max(1) as f64).max(1e-6).ln())
                .collect()
        }
        _ => vec![0.0; k],
    };
    let mut booster = Booster {
        loss,
        base: base.clone(),
        trees: Vec::with_capacity(params.rounds * k),
    };
    let mut scores: Vec<f64> = (0..n).flat_map(|_| base.iter().copied()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let mut grad = vec![0.0; n * k];
    let mut hess = vec![0.0; n * k];
    for round in 0..params.rounds {
        gradients(loss, targets, &scores, &mut grad, &mut hess);
        let rows: Vec<u32> = if params.subsample < 1.0 {
            (0..n as u32)
                .filter(|_| rng.random::<f64>() < params.subsample)
                .collect()
        } else {
            (0..n as u32).collect()
        };
        let threads = params.threads.clamp(1, k);
        let (grad, hess, rows) = (&grad, &hess, &rows);
        let mut trees: Vec<(usize, Tree)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || {
                        (t..k)
                            .step_by(threads)
                            .map(|output| {
                                let g: Vec<f64> = (0..n).map(|r| grad[r * k + output]).collect();
                                let h: Vec<f64> = (0..n).map(|r| hess[r * k + output]).collect();
                                (output, grow(binned, &g, &h, rows.clone(), &params))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        trees.sort_by_key(|(output, _)| *output);
        for (output, tree) in trees {
            add_tree(&tree, x, output, k, &mut scores);
            booster.trees.push(tree);
        }
        on_round(round + 1, &booster);
    }
    booster
}

fn gradients(
    loss: Loss,
    targets: &Targets<'_>,
    scores: &[f64],
    grad: &mut [f64],
    hess: &mut [f64],
) {
    match (loss, targets) {
        (Loss::Squared, Targets::Values(y)) => {
            for (r, &t) in y.iter().enumerate() {
                grad[r] = scores[r] - t;
                hess[r] = 1.0;
            }
        }
        (Loss::Logistic, Targets::Classes(y)) => {
            for (r, &c) in y.iter().enumerate() {
                let p = sigmoid(scores[r]);
                grad[r] = p - f64::from(c);
                hess[r] = (p * (1.0 - p)).max(1e-16);
            }
        }
        (Loss::Softmax(k), Targets::Classes(y)) => {
            for (r, &c) in y.iter().enumerate() {
                let row = &scores[r * k..(r + 1) * k];
                let max = row.iter().copied().fold(f64::MIN, f64::max);
                let sum: f64 = row.iter().map(|s| (s - max).exp()).sum();
                for j in 0..k {
                    let p = (row[j] - max).exp() / sum;
                    grad[r * k + j] = p - if j == c as usize { 1.0 } else { 0.0 };
                    hess[r * k + j] = (p * (1.0 - p)).max(1e-16);
                }
            }
        }
        _ => {}
    }
}

/// A leaf waiting to be split: its rows are `rows[start..end]`.
struct Candidate {
    node: usize,
    start: usize,
    end: usize,
    depth: usize,
    g: f64,
    h: f64,
    split: Option<(f64, usize, u8)>,
}

fn leaf_value(g: f64, h: f64, params: &BoostParams) -> f64 {
    -g / (h + params.l2).max(1e-12) * params.learning_rate
}

/// Grows one tree best-first (largest gain first) up to `max_leaves` leaves.
fn grow(binned: &Binned, g: &[f64], h: &[f64], mut rows: Vec<u32>, params: &BoostParams) -> Tree {
    let mut nodes = vec![Node {
        feature: 0,
        threshold: 0.0,
        left: 0,
        right: 0,
        value: Vec::new(),
    }];
    let total_g: f64 = rows.iter().map(|&r| g[r as usize]).sum();
    let total_h: f64 = rows.iter().map(|&r| h[r as usize]).sum();
    let mut hist = vec![0.0; 256 * 3];
    let mut root = Candidate {
        node: 0,
        start: 0,
        end: rows.len(),
        depth: 0,
        g: total_g,
        h: total_h,
        split: None,
    };
    root.split = best_split(binned, g, h, &rows[..], &root, params, &mut hist);
    let mut open = vec![root];
    let mut leaves = 1;
    while leaves < params.max_leaves.max(2) {
        let Some(best) = open
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.split.map(|s| (i, s.0)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
        else {
            break;
        };
        let candidate = open.swap_remove(best);
        let Some((_, feature, bin)) = candidate.split else {
            continue;
        };
        let column = &binned.bins[feature];
        let slice = &mut rows[candidate.start..candidate.end];
        let mut i = 0;
        let mut j = slice.len();
        while i < j {
            if column[slice[i] as usize] <= bin {
                i += 1;
            } else {
                j -= 1;
                slice.swap(i, j);
            }
        }
        let (lg, lh) = slice[..i].iter().fold((0.0, 0.0), |(a, b), &r| {
            (a + g[r as usize], b + h[r as usize])
        });
        let left = nodes.len();
        for _ in 0..2 {
            nodes.push(Node {
                feature: 0,
                threshold: 0.0,
                left: 0,
                right: 0,
                value: Vec::new(),
            });
        }
        let node = &mut nodes[candidate.node];
        node.feature = feature as u32;
        node.threshold = binned.thresholds[feature][bin as usize];
        node.left = left as u32;
        node.right = left as u32 + 1;
        leaves += 1;
        let mid = candidate.start + i;
        for (id, start, end, cg, ch) in [
            (left, candidate.start, mid, lg, lh),
            (
                left + 1,
                mid,
                candidate.end,
                candidate.g - lg,
                candidate.h - lh,
            ),
        ] {
            let mut child = Candidate {
                node: id,
                start,
                end,
                depth: candidate.depth + 1,
                g: cg,
                h: ch,
                split: None,
            };
            child.split = best_split(binned, g, h, &rows[start..end], &child, params, &mut hist);
            open.push(child);
        }
    }
    for c in &open {
        nodes[c.node].value = vec![leaf_value(c.g, c.h, params)];
    }
    Tree { nodes }
}

/// `(gain, feature, bin)` of the best split of a leaf, if any gains.
fn best_split(
    binned: &Binned,
    g: &[f64],
    h: &[f64],
    rows: &[u32],
    leaf: &Candidate,
    params: &BoostParams,
    hist: &mut [f64],
) -> Option<(f64, usize, u8)> {
    if leaf.depth >= params.max_depth || rows.len() < 2 {
        return None;
    }
    let lambda = params.l2;
    let parent = leaf.g * leaf.g / (leaf.h + lambda).max(1e-12);
    let mut best: Option<(f64, usize, u8)> = None;
    for (feature, column) in binned.bins.iter().enumerate() {
        let mut lo = usize::MAX;
        let mut hi = 0;
        for &r in rows {
            let b = column[r as usize] as usize;
            lo = lo.min(b);
            hi = hi.max(b);
            hist[b * 3] += g[r as usize];
            hist[b * 3 + 1] += h[r as usize];
            hist[b * 3 + 2] += 1.0;
        }
        let (mut lg, mut lh, mut lc) = (0.0, 0.0, 0.0);
        let min_rows = MIN_ROWS_PER_LEAF.min(rows.len() / 2) as f64;
        let count = rows.len() as f64;
        for b in lo..hi {
            if hist[b * 3 + 2] == 0.0 {
                continue;
            }
            lg += hist[b * 3];
            lh += hist[b * 3 + 1];
            lc += hist[b * 3 + 2];
            let (rg, rh) = (leaf.g - lg, leaf.h - lh);
            if lh < params.min_child_weight
                || rh < params.min_child_weight
                || lc < min_rows
                || count - lc < min_rows
            {
                continue;
            }
            let gain =
                lg * lg / (lh + lambda).max(1e-12) + rg * rg / (rh + lambda).max(1e-12) - parent;
            if gain > 1e-12 && best.is_none_or(|(bg, _, _)| gain > bg) {
                best = Some((gain, feature, b as u8));
            }
        }
        hist[lo * 3..(hi + 1) * 3].iter_mut().for_each(|v| *v = 0.0);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boosting_fits_a_regression_step() {
        let x = Matrix {
            rows: 8,
            columns: vec![vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]],
        };
        let y = [1.0, 1.0, 1.0, 1.0, 5.0, 5.0, 5.0, 5.0];
        let binned = Binned::new(&x);
        let params = BoostParams {
            rounds: 50,
            learning_rate: 0.3,
            max_leaves: 4,
            max_depth: 3,
            min_child_weight: 0.0,
            subsample: 1.0,
            l2: 0.0,
            seed: 0,
            threads: 1,
        };
        let booster = fit(
            &x,
            &binned,
            &Targets::Values(&y),
            Loss::Squared,
            params,
            |_, _| {},
        );
        let scores = booster.scores(&x);
        for (s, t) in scores.iter().zip(y) {
            assert!((s - t).abs() < 1e-3, "{s} vs {t}");
        }
    }
}
