//! Caruana-style greedy ensemble selection with replacement (Caruana et al., ICML 2004), not
//! bagged: starting from the best single member, each round adds the member (again, possibly)
//! whose addition scores best on the selection rows; the best ensemble seen over all rounds is
//! kept, so it never scores worse than the best single member on those rows. Weights are the
//! times each member was picked over the picks.

use flywheel_core::api::{Direction, Metric};

use crate::metrics::{self, Probabilities};

/// The candidates' predictions on the same rows.
pub struct Pool {
    /// Per member, row-major `[rows, width]`: class probabilities or one value per row.
    pub members: Vec<Vec<f64>>,
    /// Classes, or 1 for regression.
    pub width: usize,
    pub classification: bool,
    /// The truth per row: the class index, or the value.
    pub targets: Vec<f64>,
}

/// What the selection chose.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// Times each member was picked; at least one is non-zero.
    pub counts: Vec<u32>,
    /// The ensemble's score on the selection rows.
    pub score: f64,
    /// The best single member and its score on the same rows.
    pub best_single: usize,
    pub best_single_score: f64,
}

impl Selection {
    /// `counts / total`, per member.
    pub fn weights(&self) -> Vec<f64> {
        let total: u32 = self.counts.iter().sum();
        self.counts
            .iter()
            .map(|&c| f64::from(c) / f64::from(total.max(1)))
            .collect()
    }
}

/// Score changes this small (relative) are float rounding of the same average (k copies of a
/// member are that member), not improvements.
const EPSILON: f64 = 1e-12;

/// Whether `a` beats `b` under `direction` by more than rounding; an undefined score (NaN)
/// never beats anything and anything defined beats it.
fn better(a: f64, b: f64, direction: Direction) -> bool {
    match (a.is_nan(), b.is_nan()) {
        (true, _) => false,
        (false, true) => true,
        _ => {
            let margin = EPSILON * b.abs().max(1.0);
            match direction {
                Direction::Maximize => a > b + margin,
                Direction::Minimize => a < b - margin,
            }
        }
    }
}

impl Pool {
    fn rows(&self) -> usize {
        self.targets.len()
    }

    /// `metric` of the predictions `blended` (`[rows, width]`); NaN where it is undefined.
    pub fn score(&self, metric: Metric, blended: &[f64]) -> f64 {
        if self.classification {
            let truth: Vec<u32> = self.targets.iter().map(|&t| t as u32).collect();
            let proba = Probabilities {
                classes: self.width,
                values: blended.to_vec(),
            };
            let labels = || proba.labels();
            match metric {
                Metric::Accuracy => metrics::accuracy(&truth, &labels()),
                Metric::BalancedAccuracy => {
                    metrics::balanced_accuracy(&truth, &labels(), self.width)
                }
                Metric::F1Macro => metrics::f1_macro(&truth, &labels(), self.width),
                Metric::LogLoss => metrics::log_loss(&truth, &proba),
                Metric::RocAuc => metrics::roc_auc(&truth, &proba).unwrap_or(f64::NAN),
                Metric::Rmse | Metric::Mae | Metric::R2 => f64::NAN,
            }
        } else {
            match metric {
                Metric::Rmse => metrics::rmse(&self.targets, blended),
                Metric::Mae => metrics::mae(&self.targets, blended),
                Metric::R2 => metrics::r2(&self.targets, blended),
                _ => f64::NAN,
            }
        }
    }

    /// The weighted average of the members' predictions.
    pub fn blend(&self, weights: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; self.rows() * self.width];
        for (member, &w) in self.members.iter().zip(weights) {
            if w != 0.0 {
                out.iter_mut().zip(member).for_each(|(o, p)| *o += w * p);
            }
        }
        out
    }
}

/// The index of the best score (the first on ties).
pub fn best(scores: &[f64], direction: Direction) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if better(s, scores[best], direction) {
            best = i;
        }
    }
    best
}

/// Greedy selection over `rounds` picks with at most `max_members` distinct members; ties go
/// to the earlier member, so the result depends only on the pool.
pub fn select(pool: &Pool, metric: Metric, max_members: usize, rounds: usize) -> Selection {
    let direction = metric.direction();
    let n = pool.members.len();
    let singles: Vec<f64> = pool.members.iter().map(|m| pool.score(metric, m)).collect();
    let best_single = best(&singles, direction);
    let mut counts = vec![0u32; n];
    counts[best_single] = 1;
    let mut sum = pool.members[best_single].clone();
    let mut best = Selection {
        counts: counts.clone(),
        score: singles[best_single],
        best_single,
        best_single_score: singles[best_single],
    };
    let mut blended = vec![0.0; sum.len()];
    for round in 1..rounds.max(1) {
        let picks = f64::from(round as u32 + 1);
        let distinct = counts.iter().filter(|&&c| c > 0).count();
        let mut pick: Option<(usize, f64)> = None;
        for (i, member) in pool.members.iter().enumerate() {
            if counts[i] == 0 && distinct >= max_members.max(1) {
                continue;
            }
            blended
                .iter_mut()
                .zip(sum.iter().zip(member))
                .for_each(|(b, (s, p))| *b = (s + p) / picks);
            let score = pool.score(metric, &blended);
            if pick.is_none_or(|(_, s)| better(score, s, direction)) {
                pick = Some((i, score));
            }
        }
        let Some((i, score)) = pick else { break };
        counts[i] += 1;
        sum.iter_mut()
            .zip(&pool.members[i])
            .for_each(|(s, p)| *s += p);
        if better(score, best.score, direction) {
            best.counts = counts.clone();
            best.score = score;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four rows of a binary task, truth 0, 1, 0, 1.
    fn pool(members: Vec<Vec<f64>>) -> Pool {
        Pool {
            members,
            width: 2,
            classification: true,
            targets: vec![0.0, 1.0, 0.0, 1.0],
        }
    }

    /// P(class 1) per row as `[rows, 2]` probabilities.
    fn proba(p1: &[f64]) -> Vec<f64> {
        p1.iter().flat_map(|&p| [1.0 - p, p]).collect()
    }

    #[test]
    fn it_picks_a_complementary_member_over_a_copy_of_the_best() {
        // A is right on rows 0-2 but confidently wrong on row 3; B is wrong on row 2 only, and
        // only mildly; C copies A. A+B averaged gets all four rows right.
        let a = proba(&[0.1, 0.9, 0.1, 0.2]);
        let b = proba(&[0.4, 0.6, 0.6, 0.9]);
        let c = a.clone();
        let pool = pool(vec![a, b, c]);
        let selection = select(&pool, Metric::Accuracy, 3, 10);
        assert_eq!(selection.best_single, 0);
        assert_eq!(selection.best_single_score, 0.75);
        assert_eq!(selection.score, 1.0);
        assert!(selection.counts[1] > 0, "{selection:?}");
        assert_eq!(selection.counts[2], 0, "a copy adds nothing: {selection:?}");
        let blended = pool.blend(&selection.weights());
        assert_eq!(pool.score(Metric::Accuracy, &blended), 1.0);
    }

    #[test]
    fn it_never_scores_below_the_best_single_member() {
        // Two weak members cannot help the strong one: the ensemble is the strong one alone.
        let strong = proba(&[0.1, 0.9, 0.2, 0.8]);
        let weak = proba(&[0.9, 0.1, 0.8, 0.2]);
        let pool = pool(vec![weak.clone(), strong, weak]);
        for metric in [Metric::LogLoss, Metric::Accuracy, Metric::RocAuc] {
            let selection = select(&pool, metric, 3, 20);
            assert_eq!(selection.best_single, 1);
            assert_eq!(selection.counts, vec![0, 1, 0], "{metric:?}");
            assert_eq!(selection.score, selection.best_single_score);
        }
    }

    #[test]
    fn regression_weights_follow_the_picks_and_lower_the_error() {
        // Truth 10 everywhere; one member is 2 too high, the other 2 too low: their mean is exact.
        let pool = Pool {
            members: vec![vec![12.0, 12.0, 12.0], vec![8.0, 8.0, 8.0]],
            width: 1,
            classification: false,
            targets: vec![10.0; 3],
        };
        let selection = select(&pool, Metric::Rmse, 2, 10);
        assert_eq!(selection.counts, vec![1, 1]);
        assert_eq!(selection.weights(), vec![0.5, 0.5]);
        assert_eq!(selection.score, 0.0);
        assert_eq!(selection.best_single_score, 2.0);
    }

    #[test]
    fn max_members_caps_distinct_members_and_selection_is_deterministic() {
        let members = vec![
            proba(&[0.3, 0.6, 0.4, 0.7]),
            proba(&[0.2, 0.55, 0.45, 0.6]),
            proba(&[0.45, 0.8, 0.3, 0.55]),
            proba(&[0.35, 0.65, 0.35, 0.9]),
        ];
        let pool = pool(members);
        let first = select(&pool, Metric::LogLoss, 2, 25);
        assert!(
            first.counts.iter().filter(|&&c| c > 0).count() <= 2,
            "{first:?}"
        );
        assert!(first.score <= first.best_single_score);
        assert_eq!(select(&pool, Metric::LogLoss, 2, 25), first);
        let one = select(&pool, Metric::LogLoss, 1, 25);
        assert_eq!(one.counts.iter().filter(|&&c| c > 0).count(), 1);
        assert_eq!(one.score, one.best_single_score);
    }
}
