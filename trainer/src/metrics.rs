//! Validation metrics, following scikit-learn's definitions so numbers compare across tools.

use std::collections::BTreeMap;

/// Class probabilities, row-major `[rows, classes]`.
pub struct Probabilities {
    pub classes: usize,
    pub values: Vec<f64>,
}

impl Probabilities {
    pub fn rows(&self) -> usize {
        self.values.len() / self.classes.max(1)
    }

    pub fn row(&self, row: usize) -> &[f64] {
        &self.values[row * self.classes..(row + 1) * self.classes]
    }

    /// The most probable class per row; the first one on ties, as ONNX Runtime picks.
    pub fn labels(&self) -> Vec<u32> {
        (0..self.rows()).map(|row| argmax(self.row(row))).collect()
    }
}

pub fn argmax(values: &[f64]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// Every classification metric; undefined ones (AUC with a single class present) are left out
/// since JSON has no NaN.
pub fn classification(y: &[u32], proba: &Probabilities) -> BTreeMap<String, f64> {
    let labels = proba.labels();
    let classes = proba.classes;
    let mut out = BTreeMap::new();
    out.insert("accuracy".into(), accuracy(y, &labels));
    out.insert(
        "balanced_accuracy".into(),
        balanced_accuracy(y, &labels, classes),
    );
    out.insert("f1_macro".into(), f1_macro(y, &labels, classes));
    out.insert("log_loss".into(), log_loss(y, proba));
    if let Some(auc) = roc_auc(y, proba) {
        out.insert("roc_auc".into(), auc);
    }
    out.retain(|_, v| v.is_finite());
    out
}

pub fn regression(y: &[f64], predicted: &[f64]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    out.insert("rmse".into(), rmse(y, predicted));
    out.insert("mae".into(), mae(y, predicted));
    out.insert("r2".into(), r2(y, predicted));
    out.retain(|_, v| v.is_finite());
    out
}

pub fn accuracy(y: &[u32], labels: &[u32]) -> f64 {
    let hits = y.iter().zip(labels).filter(|(a, b)| a == b).count();
    hits as f64 / y.len().max(1) as f64
}

/// Mean recall over the classes present in `y`.
pub fn balanced_accuracy(y: &[u32], labels: &[u32], classes: usize) -> f64 {
    let mut support = vec![0usize; classes];
    let mut hits = vec![0usize; classes];
    for (&truth, &label) in y.iter().zip(labels) {
        support[truth as usize] += 1;
        if truth == label {
            hits[truth as usize] += 1;
        }
    }
    let recalls: Vec<f64> = (0..classes)
        .filter(|&c| support[c] > 0)
        .map(|c| hits[c] as f64 / support[c] as f64)
        .collect();
    recalls.iter().sum::<f64>() / recalls.len().max(1) as f64
}

/// Unweighted mean F1 over the classes present in `y` or predicted.
pub fn f1_macro(y: &[u32], labels: &[u32], classes: usize) -> f64 {
    let mut tp = vec![0usize; classes];
    let mut fp = vec![0usize; classes];
    let mut fn_ = vec![0usize; classes];
    for (&truth, &label) in y.iter().zip(labels) {
        if truth == label {
            tp[truth as usize] += 1;
        } else {
            fp[label as usize] += 1;
            fn_[truth as usize] += 1;
        }
    }
    let scores: Vec<f64> = (0..classes)
        .filter(|&c| tp[c] + fp[c] + fn_[c] > 0)
        .map(|c| 2.0 * tp[c] as f64 / (2 * tp[c] + fp[c] + fn_[c]) as f64)
        .collect();
    scores.iter().sum::<f64>() / scores.len().max(1) as f64
}

pub fn log_loss(y: &[u32], proba: &Probabilities) -> f64 {
    let eps = 1e-15;
    let total: f64 = y
        .iter()
        .enumerate()
        .map(|(row, &truth)| -proba.row(row)[truth as usize].clamp(eps, 1.0 - eps).ln())
        .sum();
    total / y.len().max(1) as f64
}

/// Binary: AUC of the positive class. Multiclass: macro one-vs-rest over classes that have
/// both positives and negatives.
pub fn roc_auc(y: &[u32], proba: &Probabilities) -> Option<f64> {
    let rows = y.len();
    let scores_for =
        |class: usize| -> Vec<f64> { (0..rows).map(|r| proba.row(r)[class]).collect() };
    if proba.classes == 2 {
        let positive: Vec<bool> = y.iter().map(|&c| c == 1).collect();
        return binary_auc(&positive, &scores_for(1));
    }
    let aucs: Vec<f64> = (0..proba.classes)
        .filter_map(|class| {
            let positive: Vec<bool> = y.iter().map(|&c| c as usize == class).collect();
            binary_auc(&positive, &scores_for(class))
        })
        .collect();
    (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64)
}

/// Mann-Whitney U with average ranks for ties.
fn binary_auc(positive: &[bool], scores: &[f64]) -> Option<f64> {
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += order[i..=j].iter().filter(|&&k| positive[k]).count() as f64 * rank;
        i = j + 1;
    }
    let u = rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

pub fn rmse(y: &[f64], predicted: &[f64]) -> f64 {
    let mse: f64 = y
        .iter()
        .zip(predicted)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        / y.len().max(1) as f64;
    mse.sqrt()
}

pub fn mae(y: &[f64], predicted: &[f64]) -> f64 {
    y.iter()
        .zip(predicted)
        .map(|(a, b)| (a - b).abs())
        .sum::<f64>()
        / y.len().max(1) as f64
}

pub fn r2(y: &[f64], predicted: &[f64]) -> f64 {
    let mean = y.iter().sum::<f64>() / y.len().max(1) as f64;
    let total: f64 = y.iter().map(|v| (v - mean) * (v - mean)).sum();
    let residual: f64 = y
        .iter()
        .zip(predicted)
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    if total == 0.0 {
        return if residual == 0.0 { 1.0 } else { 0.0 };
    }
    1.0 - residual / total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    #[test]
    fn classification_metrics_match_hand_computed_values() {
        // y: 0 0 1 1 2 2; predicted: 0 1 1 1 2 0
        let y = [0, 0, 1, 1, 2, 2];
        let proba = Probabilities {
            classes: 3,
            values: vec![
                0.8, 0.1, 0.1, //
                0.3, 0.6, 0.1, //
                0.2, 0.7, 0.1, //
                0.1, 0.5, 0.4, //
                0.1, 0.2, 0.7, //
                0.5, 0.1, 0.4, //
            ],
        };
        let m = classification(&y, &proba);
        close(m["accuracy"], 4.0 / 6.0);
        // recalls: 1/2, 2/2, 1/2
        close(m["balanced_accuracy"], 2.0 / 3.0);
        // f1: class0 tp1 fp1 fn1 = 0.5; class1 tp2 fp1 fn0 = 0.8; class2 tp1 fp0 fn1 = 2/3
        close(m["f1_macro"], (0.5 + 0.8 + 2.0 / 3.0) / 3.0);
        let ll =
            -(0.8f64.ln() + 0.3f64.ln() + 0.7f64.ln() + 0.5f64.ln() + 0.7f64.ln() + 0.4f64.ln())
                / 6.0;
        close(m["log_loss"], ll);
        // class0 scores pos {.8,.3} neg {.2,.1,.1,.5}: pairs won 4 + 3 = 7 of 8
        // class1 pos {.7,.5} neg {.1,.6,.2,.1}: 4 + 3 = 7/8
        // class2 pos {.7,.4} neg {.1,.1,.1,.4}: 4 + (3 + .5) = 7.5/8
        close(m["roc_auc"], (7.0 / 8.0 + 7.0 / 8.0 + 7.5 / 8.0) / 3.0);
    }

    #[test]
    fn binary_auc_with_ties() {
        let y = [0, 0, 1, 1];
        let proba = Probabilities {
            classes: 2,
            values: vec![0.9, 0.1, 0.6, 0.4, 0.6, 0.4, 0.2, 0.8],
        };
        // pos scores {.4,.8}, neg {.1,.4}: pairs (.4>.1)=1, (.4=.4)=.5, (.8>.1)=1, (.8>.4)=1 -> 3.5/4
        close(roc_auc(&y, &proba).unwrap(), 0.875);
    }

    #[test]
    fn regression_metrics_match_hand_computed_values() {
        let y = [1.0, 2.0, 3.0, 4.0];
        let p = [1.5, 2.0, 2.0, 5.0];
        let m = regression(&y, &p);
        // errors .5 0 1 1 -> mse 2.25/4
        close(m["rmse"], (2.25f64 / 4.0).sqrt());
        close(m["mae"], 2.5 / 4.0);
        // total ss 5
        close(m["r2"], 1.0 - 2.25 / 5.0);
    }
}
