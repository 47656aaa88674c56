//! CART trees and random forests on histogram-binned features.
//!
//! Each feature is cut at up to 255 thresholds (every distinct value when there are few, else
//! quantiles); a split tests `x <= threshold` on the raw f32 value, exactly what ONNX's
//! `BRANCH_LEQ` does, and `bin(x) <= b` on the training data is the same test by construction,
//! so the exported ensemble reproduces training predictions exactly.

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::features::Matrix;

const MAX_BINS: usize = 256;
/// Nodes with fewer rows than this are split by sorting rather than by histogram.
const SORT_BELOW: usize = 128;

/// Per-feature thresholds and the binned training matrix.
pub struct Binned {
    pub rows: usize,
    /// `thresholds[j][b]`: rows with `x <= thresholds[j][b]` have bin `<= b`.
    pub thresholds: Vec<Vec<f32>>,
    pub bins: Vec<Vec<u8>>,
    /// The same bins row-major (`row_bins[r * width + j]`): gradient boosting sums a node's
    /// histograms for every feature in one pass over its rows.
    pub row_bins: Vec<u8>,
}

impl Binned {
    pub fn new(x: &Matrix) -> Binned {
        let mut thresholds = Vec::with_capacity(x.width());
        let mut bins: Vec<Vec<u8>> = Vec::with_capacity(x.width());
        for column in &x.columns {
            let mut sorted: Vec<f32> = column.iter().copied().filter(|v| !v.is_nan()).collect();
            sorted.sort_by(f32::total_cmp);
            let mut distinct = sorted.clone();
            distinct.dedup();
            let cuts: Vec<f32> = if distinct.len() <= MAX_BINS {
                distinct.windows(2).map(|w| midpoint(w[0], w[1])).collect()
            } else {
                // Quantile cut points, each moved to the midpoint between the quantile value and
                // the next distinct value so no value sits on a threshold.
                let mut cuts = Vec::with_capacity(MAX_BINS - 1);
                for q in 1..MAX_BINS {
                    let value = sorted[q * sorted.len() / MAX_BINS];
                    let next = distinct.partition_point(|&v| v <= value);
                    if next < distinct.len() {
                        let cut = midpoint(value, distinct[next]);
                        if cuts.last().is_none_or(|&last| cut > last) {
                            cuts.push(cut);
                        }
                    }
                }
                cuts
            };
            bins.push(
                column
                    .iter()
                    .map(|&v| cuts.partition_point(|&c| c < v) as u8)
                    .collect(),
            );
            thresholds.push(cuts);
        }
        let width = bins.len();
        let mut row_bins = vec![0u8; x.rows * width];
        for (j, column) in bins.iter().enumerate() {
            for (r, &b) in column.iter().enumerate() {
                row_bins[r * width + j] = b;
            }
        }
        Binned {
            rows: x.rows,
            thresholds,
            bins,
            row_bins,
        }
    }
}

/// A threshold strictly between `a < b` when f32 has one, else `a` (still separates them).
fn midpoint(a: f32, b: f32) -> f32 {
    let m = ((f64::from(a) + f64::from(b)) / 2.0) as f32;
    if m >= a && m < b { m } else { a }
}

/// What the tree predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    /// Gini impurity over this many classes; leaves hold class fractions.
    Classes(usize),
    /// Squared error; leaves hold the mean.
    Regression,
}

impl Objective {
    fn width(self) -> usize {
        match self {
            Objective::Classes(c) => c,
            Objective::Regression => 1,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub feature: u32,
    pub threshold: f32,
    /// Child indices; 0 for a leaf (the root is never a child).
    pub left: u32,
    pub right: u32,
    /// Leaf value: class fractions or the mean; empty for a split.
    pub value: Vec<f64>,
}

impl Node {
    pub fn is_leaf(&self) -> bool {
        self.left == 0
    }
}

#[derive(Clone, Debug)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn leaf(&self, x: &Matrix, row: usize) -> &[f64] {
        let mut node = &self.nodes[0];
        while !node.is_leaf() {
            let v = x.columns[node.feature as usize][row];
            node = &self.nodes[if v <= node.threshold {
                node.left
            } else {
                node.right
            } as usize];
        }
        &node.value
    }
}

#[derive(Clone, Copy, Debug)]
pub struct TreeParams {
    pub max_depth: usize,
    pub min_samples_leaf: usize,
    /// Fraction of features drawn at each split (1.0: all).
    pub max_features: f64,
}

/// Targets as the tree learner sees them.
pub enum Labels<'a> {
    Classes(&'a [u32]),
    Values(&'a [f64]),
}

/// Grows one tree on `rows` (indices into the binned matrix; repeats act as weights).
pub fn grow(
    binned: &Binned,
    labels: &Labels<'_>,
    objective: Objective,
    params: TreeParams,
    mut rows: Vec<u32>,
    rng: &mut ChaCha8Rng,
) -> Tree {
    let features = binned.bins.len();
    let mtry = ((params.max_features * features as f64).round() as usize).clamp(1, features);
    let mut grower = Grower {
        binned,
        labels,
        objective,
        params,
        mtry,
        feature_order: (0..features).collect(),
        hist: vec![0.0; MAX_BINS * (objective.width() + 1)],
        nodes: Vec::new(),
    };
    grower.nodes.push(Node {
        feature: 0,
        threshold: 0.0,
        left: 0,
        right: 0,
        value: Vec::new(),
    });
    let n = rows.len();
    let mut stack = vec![(0usize, 0usize, n, 0usize)];
    while let Some((id, start, end, depth)) = stack.pop() {
        let slice = &mut rows[start..end];
        match grower.split(slice, depth, rng) {
            Some((feature, bin, threshold)) => {
                let column = &binned.bins[feature];
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
                let left = grower.nodes.len();
                for _ in 0..2 {
                    grower.nodes.push(Node {
                        feature: 0,
                        threshold: 0.0,
                        left: 0,
                        right: 0,
                        value: Vec::new(),
                    });
                }
                let node = &mut grower.nodes[id];
                node.feature = feature as u32;
                node.threshold = threshold;
                node.left = left as u32;
                node.right = left as u32 + 1;
                stack.push((left + 1, start + i, end, depth + 1));
                stack.push((left, start, start + i, depth + 1));
            }
            None => {
                grower.nodes[id].value = grower.leaf_value(slice);
            }
        }
    }
    Tree {
        nodes: grower.nodes,
    }
}

struct Grower<'a> {
    binned: &'a Binned,
    labels: &'a Labels<'a>,
    objective: Objective,
    params: TreeParams,
    mtry: usize,
    feature_order: Vec<usize>,
    /// Scratch histogram: per bin, `width` label statistics and a row count.
    hist: Vec<f64>,
    nodes: Vec<Node>,
}

struct Best {
    score: f64,
    feature: usize,
    bin: u8,
}

impl Grower<'_> {
    fn leaf_value(&self, rows: &[u32]) -> Vec<f64> {
        let n = rows.len().max(1) as f64;
        match (self.labels, self.objective) {
            (Labels::Classes(y), Objective::Classes(c)) => {
                let mut counts = vec![0.0; c];
                for &r in rows {
                    counts[y[r as usize] as usize] += 1.0;
                }
                counts.iter().map(|v| v / n).collect()
            }
            (Labels::Values(y), _) => {
                vec![rows.iter().map(|&r| y[r as usize]).sum::<f64>() / n]
            }
            _ => Vec::new(),
        }
    }

    /// `Σ_c n_c² / n` (Gini) or `S² / n` (squared error): larger is purer.
    fn purity(stats: &[f64], count: f64) -> f64 {
        if count <= 0.0 {
            return 0.0;
        }
        stats.iter().map(|s| s * s).sum::<f64>() / count
    }

    fn split(
        &mut self,
        rows: &[u32],
        depth: usize,
        rng: &mut ChaCha8Rng,
    ) -> Option<(usize, u8, f32)> {
        let min_leaf = self.params.min_samples_leaf.max(1);
        if depth >= self.params.max_depth || rows.len() < 2 * min_leaf {
            return None;
        }
        let width = self.objective.width();
        let mut total = vec![0.0; width];
        self.add_rows(rows, &mut total);
        let n = rows.len() as f64;
        let parent = Self::purity(&total, n);
        // Pure node: nothing to gain.
        let pure = match self.objective {
            Objective::Classes(_) => total.contains(&n),
            Objective::Regression => {
                let Labels::Values(y) = self.labels else {
                    return None;
                };
                let first = y[rows[0] as usize];
                rows.iter().all(|&r| y[r as usize] == first)
            }
        };
        if pure {
            return None;
        }
        let features = self.feature_order.len();
        // Partial Fisher-Yates: the first `mtry` entries become a fresh random subset.
        if self.mtry < features {
            for i in 0..self.mtry {
                let j = rng.random_range(i..features);
                self.feature_order.swap(i, j);
            }
        }
        let mut best = Best {
            score: parent + 1e-12 * parent.abs().max(1e-12),
            feature: usize::MAX,
            bin: 0,
        };
        for k in 0..self.mtry {
            let feature = self.feature_order[k];
            if rows.len() < SORT_BELOW {
                self.best_sorted(rows, feature, &total, n, min_leaf, &mut best);
            } else {
                self.best_histogram(rows, feature, &total, n, min_leaf, &mut best);
            }
        }
        if best.feature == usize::MAX {
            return None;
        }
        let threshold = self.binned.thresholds[best.feature][best.bin as usize];
        Some((best.feature, best.bin, threshold))
    }

    fn add_rows(&self, rows: &[u32], total: &mut [f64]) {
        match self.labels {
            Labels::Classes(y) => {
                for &r in rows {
                    total[y[r as usize] as usize] += 1.0;
                }
            }
            Labels::Values(y) => {
                for &r in rows {
                    total[0] += y[r as usize];
                }
            }
        }
    }

    fn best_histogram(
        &mut self,
        rows: &[u32],
        feature: usize,
        total: &[f64],
        n: f64,
        min_leaf: usize,
        best: &mut Best,
    ) {
        let width = self.objective.width();
        let stride = width + 1;
        let column = &self.binned.bins[feature];
        let mut lo = usize::MAX;
        let mut hi = 0;
        match self.labels {
            Labels::Classes(y) => {
                for &r in rows {
                    let b = column[r as usize] as usize;
                    lo = lo.min(b);
                    hi = hi.max(b);
                    let cell = b * stride;
                    self.hist[cell + y[r as usize] as usize] += 1.0;
                    self.hist[cell + width] += 1.0;
                }
            }
            Labels::Values(y) => {
                for &r in rows {
                    let b = column[r as usize] as usize;
                    lo = lo.min(b);
                    hi = hi.max(b);
                    let cell = b * stride;
                    self.hist[cell] += y[r as usize];
                    self.hist[cell + 1] += 1.0;
                }
            }
        }
        let mut left = vec![0.0; width];
        let mut right = vec![0.0; width];
        let mut left_n = 0.0;
        for b in lo..hi {
            let cell = b * stride;
            let count = self.hist[cell + width];
            if count == 0.0 {
                continue;
            }
            for (l, h) in left.iter_mut().zip(&self.hist[cell..cell + width]) {
                *l += h;
            }
            left_n += count;
            let right_n = n - left_n;
            if left_n < min_leaf as f64 {
                continue;
            }
            if right_n < min_leaf as f64 {
                break;
            }
            for ((r, t), l) in right.iter_mut().zip(total).zip(&left) {
                *r = t - l;
            }
            let score = Self::purity(&left, left_n) + Self::purity(&right, right_n);
            if score > best.score {
                *best = Best {
                    score,
                    feature,
                    bin: b as u8,
                };
            }
        }
        self.hist[lo * stride..(hi + 1) * stride]
            .iter_mut()
            .for_each(|v| *v = 0.0);
    }

    fn best_sorted(
        &mut self,
        rows: &[u32],
        feature: usize,
        total: &[f64],
        n: f64,
        min_leaf: usize,
        best: &mut Best,
    ) {
        let width = self.objective.width();
        let column = &self.binned.bins[feature];
        let mut pairs: Vec<(u8, u32)> = rows.iter().map(|&r| (column[r as usize], r)).collect();
        pairs.sort_unstable_by_key(|p| p.0);
        let mut left = vec![0.0; width];
        let mut right = vec![0.0; width];
        for i in 0..pairs.len() - 1 {
            let (bin, r) = pairs[i];
            match self.labels {
                Labels::Classes(y) => left[y[r as usize] as usize] += 1.0,
                Labels::Values(y) => left[0] += y[r as usize],
            }
            if pairs[i + 1].0 == bin {
                continue;
            }
            let left_n = (i + 1) as f64;
            let right_n = n - left_n;
            if left_n < min_leaf as f64 {
                continue;
            }
            if right_n < min_leaf as f64 {
                break;
            }
            for ((r, t), l) in right.iter_mut().zip(total).zip(&left) {
                *r = t - l;
            }
            let score = Self::purity(&left, left_n) + Self::purity(&right, right_n);
            if score > best.score {
                *best = Best {
                    score,
                    feature,
                    bin,
                };
            }
        }
    }
}

/// Forest settings.
#[derive(Clone, Copy, Debug)]
pub struct ForestParams {
    pub trees: usize,
    pub tree: TreeParams,
    /// Draw a bootstrap sample per tree (random forest) or use every row once (single tree).
    pub bootstrap: bool,
    pub seed: u64,
    pub threads: usize,
}

/// Grows trees `range` in parallel; tree `i` draws from its own seed, so the forest does not
/// depend on the thread count.
pub fn grow_many(
    binned: &Binned,
    labels: &Labels<'_>,
    objective: Objective,
    params: &ForestParams,
    range: std::ops::Range<usize>,
) -> Vec<Tree> {
    let start = range.start;
    let out = crate::parallel::map_indexed(range.len(), params.threads, |j| {
        let i = start + j;
        let mut rng =
            ChaCha8Rng::seed_from_u64(params.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let n = binned.rows;
        let mut rows: Vec<u32> = if params.bootstrap {
            (0..n).map(|_| rng.random_range(0..n as u32)).collect()
        } else {
            (0..n as u32).collect()
        };
        if params.bootstrap {
            rows.shuffle(&mut rng);
        }
        grow(binned, labels, objective, params.tree, rows, &mut rng)
    });
    out.into_iter().map(|(_, tree)| tree).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_agree_with_bins() {
        let x = Matrix {
            rows: 6,
            columns: vec![vec![1.0, 2.0, 2.0, 3.5, 10.0, -1.0]],
        };
        let binned = Binned::new(&x);
        for (row, &v) in x.columns[0].iter().enumerate() {
            for (b, &t) in binned.thresholds[0].iter().enumerate() {
                assert_eq!(binned.bins[0][row] as usize <= b, v <= t);
            }
        }
    }

    #[test]
    fn a_tree_fits_a_step() {
        let x = Matrix {
            rows: 8,
            columns: vec![vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]],
        };
        let y = [0, 0, 0, 0, 1, 1, 1, 1];
        let binned = Binned::new(&x);
        let params = TreeParams {
            max_depth: 4,
            min_samples_leaf: 1,
            max_features: 1.0,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let tree = grow(
            &binned,
            &Labels::Classes(&y),
            Objective::Classes(2),
            params,
            (0..8).collect(),
            &mut rng,
        );
        assert_eq!(tree.nodes.len(), 3);
        assert_eq!(tree.nodes[0].threshold, 3.5);
        for (row, &label) in y.iter().enumerate() {
            assert_eq!(tree.leaf(&x, row)[1], f64::from(label));
        }
    }
}
