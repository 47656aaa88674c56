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
        // Threads left over once every class has one go to each tree's histograms.
        let inner = (params.threads / k).max(1);
        let (grad, hess, rows) = (&grad, &hess, &rows);
        let trees = crate::parallel::map_indexed(k, params.threads, |output| {
            let g: Vec<f64> = (0..n).map(|r| grad[r * k + output]).collect();
            let h: Vec<f64> = (0..n).map(|r| hess[r * k + output]).collect();
            grow(binned, &g, &h, rows.clone(), &params, inner)
        });
        for (output, grown) in trees {
            if params.subsample < 1.0 {
                add_tree(&grown.tree, x, output, k, &mut scores);
            } else {
                // Every row is in exactly one leaf's range: no tree walks needed. The bins send
                // each training row where the thresholds would (see `tree`), and the value is
                // rounded to f32 as `add_tree` and the export do.
                for &(start, end, value) in &grown.leaves {
                    let value = f64::from(value as f32);
                    for &r in &grown.rows[start..end] {
                        scores[r as usize * k + output] += value;
                    }
                }
            }
            booster.trees.push(grown.tree);
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
    /// The leaf's histogram, kept while it may still be split so its children can derive one
    /// from the other by subtraction.
    hist: Option<Histogram>,
}

fn leaf_value(g: f64, h: f64, params: &BoostParams) -> f64 {
    -g / (h + params.l2).max(1e-12) * params.learning_rate
}

/// Per feature and bin: gradient sum, hessian sum and row count, for every feature at once
/// (`offsets[j]` is feature `j`'s first bin; features have as many bins as thresholds + 1).
struct Histogram {
    cells: Vec<[f64; 3]>,
}

/// Where each feature's bins start in a histogram, and the total bin count.
fn bin_offsets(binned: &Binned) -> (Vec<usize>, usize) {
    let mut offsets = Vec::with_capacity(binned.thresholds.len());
    let mut total = 0;
    for cuts in &binned.thresholds {
        offsets.push(total);
        total += cuts.len() + 1;
    }
    (offsets, total)
}

/// Nodes with at least two blocks of rows sum their histogram block by block (on up to
/// `threads` threads) and add the blocks in order, so the result does not depend on the thread
/// budget.
const BLOCK: usize = 4096;

impl Histogram {
    fn build(
        binned: &Binned,
        offsets: &[usize],
        total: usize,
        g: &[f64],
        h: &[f64],
        rows: &[u32],
        threads: usize,
    ) -> Histogram {
        if rows.len() < 2 * BLOCK {
            return Histogram::sum(binned, offsets, total, g, h, rows);
        }
        let blocks: Vec<&[u32]> = rows.chunks(BLOCK).collect();
        let per = blocks.len().div_ceil(threads.max(1));
        let work = |mine: &[&[u32]]| -> Vec<Histogram> {
            mine.iter()
                .map(|block| Histogram::sum(binned, offsets, total, g, h, block))
                .collect()
        };
        let parts: Vec<Histogram> = if per >= blocks.len() {
            work(&blocks)
        } else {
            std::thread::scope(|scope| {
                let mut groups = blocks.chunks(per);
                let first = groups.next().unwrap_or(&[]);
                let handles: Vec<_> = groups.map(|mine| scope.spawn(move || work(mine))).collect();
                let mut parts = work(first);
                for handle in handles {
                    // A panicked worker is a bug; an empty histogram only costs split quality.
                    parts.extend(handle.join().unwrap_or_default());
                }
                parts
            })
        };
        let mut parts = parts.into_iter();
        let Some(mut sum) = parts.next() else {
            return Histogram::sum(binned, offsets, total, g, h, rows);
        };
        for part in parts {
            for (a, b) in sum.cells.iter_mut().zip(&part.cells) {
                a[0] += b[0];
                a[1] += b[1];
                a[2] += b[2];
            }
        }
        sum
    }

    /// Sums `rows` from the row-major bins: one pass over the rows, each reading its gradient
    /// once and its bins contiguously.
    fn sum(
        binned: &Binned,
        offsets: &[usize],
        total: usize,
        g: &[f64],
        h: &[f64],
        rows: &[u32],
    ) -> Histogram {
        let mut cells = vec![[0.0; 3]; total];
        let width = offsets.len();
        for &r in rows {
            let r = r as usize;
            let (gr, hr) = (g[r], h[r]);
            let bins = &binned.row_bins[r * width..(r + 1) * width];
            for (&offset, &b) in offsets.iter().zip(bins) {
                let cell = &mut cells[offset + b as usize];
                cell[0] += gr;
                cell[1] += hr;
                cell[2] += 1.0;
            }
        }
        Histogram { cells }
    }

    /// `self - other` in place: the sibling of `other` under the parent `self`.
    fn subtract(mut self, other: &Histogram) -> Histogram {
        for (a, b) in self.cells.iter_mut().zip(&other.cells) {
            a[0] -= b[0];
            a[1] -= b[1];
            a[2] -= b[2];
        }
        self
    }
}

/// Whether a leaf can be split at all (so needs a histogram).
fn splittable(depth: usize, rows: usize, params: &BoostParams) -> bool {
    depth < params.max_depth && rows >= 2
}

/// Grows one tree best-first (largest gain first) up to `max_leaves` leaves. Only the smaller
/// child of each split gets its histogram summed from rows; the larger one is the parent's
/// minus it (LightGBM's subtraction trick), so each level costs at most half the rows.
fn grow(
    binned: &Binned,
    g: &[f64],
    h: &[f64],
    mut rows: Vec<u32>,
    params: &BoostParams,
    threads: usize,
) -> Grown {
    let (offsets, total) = bin_offsets(binned);
    let mut nodes = vec![Node {
        feature: 0,
        threshold: 0.0,
        left: 0,
        right: 0,
        value: Vec::new(),
    }];
    let total_g: f64 = rows.iter().map(|&r| g[r as usize]).sum();
    let total_h: f64 = rows.iter().map(|&r| h[r as usize]).sum();
    let mut root = Candidate {
        node: 0,
        start: 0,
        end: rows.len(),
        depth: 0,
        g: total_g,
        h: total_h,
        split: None,
        hist: None,
    };
    if splittable(0, rows.len(), params) {
        let hist = Histogram::build(binned, &offsets, total, g, h, &rows, threads);
        root.split = best_split(binned, &offsets, &hist, rows.len(), &root, params);
        root.hist = Some(hist);
    }
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
        let mut candidate = open.swap_remove(best);
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
        let mut children = [
            Candidate {
                node: left,
                start: candidate.start,
                end: mid,
                depth: candidate.depth + 1,
                g: lg,
                h: lh,
                split: None,
                hist: None,
            },
            Candidate {
                node: left + 1,
                start: mid,
                end: candidate.end,
                depth: candidate.depth + 1,
                g: candidate.g - lg,
                h: candidate.h - lh,
                split: None,
                hist: None,
            },
        ];
        let wanted = children
            .iter()
            .map(|c| splittable(c.depth, c.end - c.start, params))
            .collect::<Vec<_>>();
        if wanted.iter().any(|&w| w)
            && let Some(parent) = candidate.hist.take()
        {
            let small = usize::from(
                children[1].end - children[1].start < children[0].end - children[0].start,
            );
            let large = 1 - small;
            let built = Histogram::build(
                binned,
                &offsets,
                total,
                g,
                h,
                &rows[children[small].start..children[small].end],
                threads,
            );
            let derived = if wanted[large] {
                Some(parent.subtract(&built))
            } else {
                None
            };
            children[small].hist = wanted[small].then_some(built);
            children[large].hist = derived;
        }
        for mut child in children {
            if let Some(hist) = &child.hist {
                child.split = best_split(
                    binned,
                    &offsets,
                    hist,
                    child.end - child.start,
                    &child,
                    params,
                );
            }
            if child.split.is_none() {
                // A leaf that cannot split never needs its histogram again.
                child.hist = None;
            }
            open.push(child);
        }
    }
    let mut leaves = Vec::with_capacity(open.len());
    for c in &open {
        let value = leaf_value(c.g, c.h, params);
        nodes[c.node].value = vec![value];
        leaves.push((c.start, c.end, value));
    }
    Grown {
        tree: Tree { nodes },
        rows,
        leaves,
    }
}

/// A grown tree with the rows it was grown on, partitioned so each leaf's rows are contiguous.
struct Grown {
    tree: Tree,
    rows: Vec<u32>,
    /// `(start, end, value)`: the leaf's rows are `rows[start..end]`.
    leaves: Vec<(usize, usize, f64)>,
}

/// `(gain, feature, bin)` of the best split of a leaf, if any gains.
fn best_split(
    binned: &Binned,
    offsets: &[usize],
    hist: &Histogram,
    rows: usize,
    leaf: &Candidate,
    params: &BoostParams,
) -> Option<(f64, usize, u8)> {
    if !splittable(leaf.depth, rows, params) {
        return None;
    }
    let lambda = params.l2;
    let parent = leaf.g * leaf.g / (leaf.h + lambda).max(1e-12);
    let min_rows = MIN_ROWS_PER_LEAF.min(rows / 2) as f64;
    let count = rows as f64;
    let mut best: Option<(f64, usize, u8)> = None;
    for (feature, &offset) in offsets.iter().enumerate() {
        let bins = binned.thresholds[feature].len() + 1;
        let cells = &hist.cells[offset..offset + bins];
        let (mut lg, mut lh, mut lc) = (0.0, 0.0, 0.0);
        // The last bin cannot be a left side: everything would go left.
        for (b, cell) in cells[..bins - 1].iter().enumerate() {
            // Counts are exact integers even after subtraction; gradient sums are not, so an
            // empty bin is recognised by its count.
            if cell[2] < 0.5 {
                continue;
            }
            lg += cell[0];
            lh += cell[1];
            lc += cell[2];
            if lc < min_rows {
                continue;
            }
            if count - lc < min_rows {
                break;
            }
            let (rg, rh) = (leaf.g - lg, leaf.h - lh);
            if lh < params.min_child_weight || rh < params.min_child_weight {
                continue;
            }
            let gain =
                lg * lg / (lh + lambda).max(1e-12) + rg * rg / (rh + lambda).max(1e-12) - parent;
            if gain > 1e-12 && best.is_none_or(|(bg, _, _)| gain > bg) {
                best = Some((gain, feature, b as u8));
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wide_problem(rows: usize) -> (Matrix, Vec<f64>, Vec<f64>) {
        let columns = (0..3)
            .map(|j| {
                (0..rows)
                    .map(|r| ((r * (7 + j) + j) % 301) as f32 / 3.0)
                    .collect()
            })
            .collect();
        let g = (0..rows).map(|r| ((r % 13) as f64 - 6.0) / 7.0).collect();
        let h = (0..rows).map(|r| 0.1 + (r % 5) as f64 / 10.0).collect();
        (Matrix { rows, columns }, g, h)
    }

    #[test]
    fn sibling_histograms_by_subtraction_match_summing_and_ignore_threads() {
        let (x, g, h) = wide_problem(3 * BLOCK + 17);
        let binned = Binned::new(&x);
        let (offsets, total) = bin_offsets(&binned);
        let rows: Vec<u32> = (0..x.rows as u32).collect();
        let parent = Histogram::build(&binned, &offsets, total, &g, &h, &rows, 1);
        for threads in [2, 3, 8] {
            let again = Histogram::build(&binned, &offsets, total, &g, &h, &rows, threads);
            assert_eq!(parent.cells, again.cells, "{threads} threads");
        }
        let (left, right): (Vec<u32>, Vec<u32>) = rows.iter().partition(|&&r| r % 3 == 0);
        let small = Histogram::build(&binned, &offsets, total, &g, &h, &left, 1);
        let direct = Histogram::build(&binned, &offsets, total, &g, &h, &right, 1);
        let derived = parent.subtract(&small);
        for (a, b) in derived.cells.iter().zip(&direct.cells) {
            assert_eq!(a[2], b[2], "counts are exact");
            assert!((a[0] - b[0]).abs() < 1e-9 && (a[1] - b[1]).abs() < 1e-9);
        }
    }

    #[test]
    fn boosting_does_not_depend_on_the_thread_budget() {
        let (x, g, _) = wide_problem(2 * BLOCK + 5);
        let y: Vec<f64> = g.iter().map(|v| v * 3.0 + 1.0).collect();
        let binned = Binned::new(&x);
        let fit_with = |threads| {
            let params = BoostParams {
                rounds: 5,
                learning_rate: 0.3,
                max_leaves: 8,
                max_depth: 4,
                min_child_weight: 1e-3,
                subsample: 1.0,
                l2: 0.0,
                seed: 0,
                threads,
            };
            fit(
                &x,
                &binned,
                &Targets::Values(&y),
                Loss::Squared,
                params,
                |_, _| {},
            )
            .scores(&x)
        };
        assert_eq!(fit_with(1), fit_with(2));
    }

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
