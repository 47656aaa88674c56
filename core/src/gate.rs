//! The shadow gate: does a candidate model beat the serving one on the same labelled production
//! rows, by a margin and beyond chance?
//!
//! Both models predicted every row (the candidate as the shadow, on mirrored traffic), so the
//! comparison is paired: McNemar's test on the rows where exactly one of them was right for
//! classification, a paired bootstrap of the squared-error difference for regression. Both tests
//! are one-sided — the question is only whether the candidate is *better* — and the decision
//! also needs the observed improvement to reach the margin, so a significant but negligible gain
//! is not worth a rollout.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How the gate decides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GateSettings {
    /// Labelled rows (with both predictions) needed before deciding.
    pub min_samples: u64,
    /// The least improvement worth promoting: accuracy points (0.01 = one point) for
    /// classification, RMSE units for regression.
    pub margin: f64,
    /// Significance level of the one-sided test.
    pub alpha: f64,
}

impl Default for GateSettings {
    fn default() -> Self {
        Self {
            min_samples: 200,
            margin: 0.0,
            alpha: 0.05,
        }
    }
}

/// One labelled row as both models saw it.
#[derive(Clone, Debug, PartialEq)]
pub enum PairedOutcome {
    /// Classification: whether each model's label was right.
    Class { serving: bool, candidate: bool },
    /// Regression: each model's absolute error.
    Value { serving: f64, candidate: f64 },
}

/// What the test found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// `mcnemar` or `paired_bootstrap`.
    pub test: String,
    /// Rows compared.
    pub samples: u64,
    /// McNemar's continuity-corrected chi-square, or the mean squared-error reduction.
    pub statistic: f64,
    /// One-sided p-value of "the candidate is no better".
    pub p_value: f64,
    /// The serving model's accuracy or RMSE on the rows.
    pub serving_metric: f64,
    /// The candidate's accuracy or RMSE on the rows.
    pub candidate_metric: f64,
}

/// The gate's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "camelCase")]
pub enum GateDecision {
    /// Not enough paired rows yet.
    Wait { samples: u64, needed: u64 },
    /// The candidate is better by the margin, beyond chance.
    Promote(Evidence),
    /// It is not: discard it.
    Reject(Evidence),
}

impl GateDecision {
    /// One line for a condition message or an Event.
    pub fn summary(&self) -> String {
        match self {
            GateDecision::Wait { samples, needed } => {
                format!("waiting for labelled rows: {samples} of {needed}")
            }
            GateDecision::Promote(e) | GateDecision::Reject(e) => format!(
                "{}: candidate {:.4} vs serving {:.4} on {} rows, statistic {:.3}, p = {:.4}",
                if matches!(self, GateDecision::Promote(_)) {
                    "promote"
                } else {
                    "reject"
                },
                e.candidate_metric,
                e.serving_metric,
                e.samples,
                e.statistic,
                e.p_value
            ),
        }
    }
}

/// Decides on `outcomes` (all of one kind). `seed` fixes the bootstrap's resamples, so the same
/// rows always give the same decision.
pub fn decide(outcomes: &[PairedOutcome], settings: &GateSettings, seed: u64) -> GateDecision {
    let samples = outcomes.len() as u64;
    if samples < settings.min_samples.max(1) {
        return GateDecision::Wait {
            samples,
            needed: settings.min_samples.max(1),
        };
    }
    let classes: Vec<(bool, bool)> = outcomes
        .iter()
        .filter_map(|o| match o {
            PairedOutcome::Class { serving, candidate } => Some((*serving, *candidate)),
            PairedOutcome::Value { .. } => None,
        })
        .collect();
    let (evidence, improvement) = if classes.len() == outcomes.len() {
        let serving_right = classes.iter().filter(|(s, _)| *s).count() as f64;
        let candidate_right = classes.iter().filter(|(_, c)| *c).count() as f64;
        let only_serving = classes.iter().filter(|(s, c)| *s && !*c).count() as u64;
        let only_candidate = classes.iter().filter(|(s, c)| !*s && *c).count() as u64;
        let (statistic, p_value) = mcnemar(only_serving, only_candidate);
        let n = classes.len() as f64;
        let evidence = Evidence {
            test: "mcnemar".into(),
            samples,
            statistic,
            p_value,
            serving_metric: serving_right / n,
            candidate_metric: candidate_right / n,
        };
        let improvement = evidence.candidate_metric - evidence.serving_metric;
        (evidence, improvement)
    } else {
        let errors: Vec<(f64, f64)> = outcomes
            .iter()
            .filter_map(|o| match o {
                PairedOutcome::Value { serving, candidate }
                    if serving.is_finite() && candidate.is_finite() =>
                {
                    Some((*serving, *candidate))
                }
                _ => None,
            })
            .collect();
        let evidence = paired_bootstrap(&errors, seed);
        let improvement = evidence.serving_metric - evidence.candidate_metric;
        (evidence, improvement)
    };
    if improvement >= settings.margin && improvement > 0.0 && evidence.p_value < settings.alpha {
        GateDecision::Promote(evidence)
    } else {
        GateDecision::Reject(evidence)
    }
}

/// McNemar's test on the discordant pairs: `only_serving` rows only the serving model got right,
/// `only_candidate` rows only the candidate got right. Returns the continuity-corrected
/// chi-square (for reporting) and the exact one-sided p-value P(X ≥ only_candidate) for
/// X ~ Binomial(only_serving + only_candidate, ½): exact, so small samples are not overstated.
pub fn mcnemar(only_serving: u64, only_candidate: u64) -> (f64, f64) {
    let n = only_serving + only_candidate;
    if n == 0 {
        return (0.0, 1.0);
    }
    let difference = (only_candidate as f64 - only_serving as f64).abs() - 1.0;
    let statistic = difference.max(0.0).powi(2) / n as f64;
    (statistic, binomial_upper_tail(n, only_candidate))
}

/// P(X ≥ k) for X ~ Binomial(n, ½), summed in log space so it holds for large n.
fn binomial_upper_tail(n: u64, k: u64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    let log_half_n = n as f64 * std::f64::consts::LN_2;
    // log C(n, i) built up incrementally from log C(n, k).
    let mut log_choose = ln_choose(n, k);
    let mut total = 0.0;
    for i in k..=n {
        total += (log_choose - log_half_n).exp();
        if i < n {
            log_choose += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
        }
    }
    total.min(1.0)
}

fn ln_choose(n: u64, k: u64) -> f64 {
    let k = k.min(n - k);
    (0..k)
        .map(|i| ((n - i) as f64).ln() - ((i + 1) as f64).ln())
        .sum()
}

/// Resamples of the paired bootstrap; enough for a stable p-value near 0.05.
const BOOTSTRAP_RESAMPLES: usize = 2000;

/// Paired bootstrap of the per-row squared-error reduction (serving minus candidate). The
/// p-value is the share of resampled mean reductions at or below zero.
fn paired_bootstrap(errors: &[(f64, f64)], seed: u64) -> Evidence {
    let n = errors.len();
    let rmse = |pick: fn(&(f64, f64)) -> f64| {
        (errors.iter().map(|e| pick(e).powi(2)).sum::<f64>() / n.max(1) as f64).sqrt()
    };
    let reductions: Vec<f64> = errors.iter().map(|(s, c)| s.powi(2) - c.powi(2)).collect();
    let mean = reductions.iter().sum::<f64>() / n.max(1) as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut not_better = 0usize;
    if n > 0 {
        for _ in 0..BOOTSTRAP_RESAMPLES {
            let total: f64 = (0..n).map(|_| reductions[rng.random_range(0..n)]).sum();
            if total <= 0.0 {
                not_better += 1;
            }
        }
    }
    Evidence {
        test: "paired_bootstrap".into(),
        samples: n as u64,
        statistic: mean,
        // The +1s keep the p-value away from an impossible 0 with a finite number of resamples.
        p_value: (not_better + 1) as f64 / (BOOTSTRAP_RESAMPLES + 1) as f64,
        serving_metric: rmse(|e| e.0),
        candidate_metric: rmse(|e| e.1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn mcnemar_matches_the_exact_binomial() {
        // 10 discordant pairs, 9 for the candidate: P(X >= 9) = (C(10,9) + C(10,10)) / 1024.
        let (statistic, p) = mcnemar(1, 9);
        assert!(close(p, 11.0 / 1024.0), "{p}");
        assert!(close(statistic, 49.0 / 10.0), "{statistic}");
        // Balanced disagreement is no evidence.
        assert!(mcnemar(20, 20).1 > 0.5);
        assert_eq!(mcnemar(0, 0), (0.0, 1.0));
        // Large n stays finite and tiny where the difference is large.
        let (_, p) = mcnemar(400, 600);
        assert!(p > 0.0 && p < 1e-9, "{p}");
    }

    fn classes(
        both: usize,
        only_serving: usize,
        only_candidate: usize,
        neither: usize,
    ) -> Vec<PairedOutcome> {
        let mut rows = Vec::new();
        rows.extend((0..both).map(|_| PairedOutcome::Class {
            serving: true,
            candidate: true,
        }));
        rows.extend((0..only_serving).map(|_| PairedOutcome::Class {
            serving: true,
            candidate: false,
        }));
        rows.extend((0..only_candidate).map(|_| PairedOutcome::Class {
            serving: false,
            candidate: true,
        }));
        rows.extend((0..neither).map(|_| PairedOutcome::Class {
            serving: false,
            candidate: false,
        }));
        rows
    }

    #[test]
    fn a_clearly_better_classifier_is_promoted_and_a_tie_rejected() {
        let settings = GateSettings {
            min_samples: 100,
            margin: 0.02,
            alpha: 0.05,
        };
        let better = decide(&classes(150, 5, 40, 5), &settings, 1);
        let GateDecision::Promote(evidence) = &better else {
            panic!("{better:?}");
        };
        assert_eq!(evidence.samples, 200);
        assert!(close(evidence.candidate_metric, 0.95));
        assert!(close(evidence.serving_metric, 0.775));
        assert!(better.summary().starts_with("promote"));

        let tie = decide(&classes(150, 20, 22, 8), &settings, 1);
        assert!(matches!(tie, GateDecision::Reject(_)), "{tie:?}");
        // Significant but below the margin: not worth a rollout.
        let small = decide(
            &classes(9000, 0, 100, 900),
            &GateSettings {
                margin: 0.05,
                ..settings
            },
            1,
        );
        assert!(matches!(small, GateDecision::Reject(_)), "{small:?}");
        let early = decide(&classes(10, 0, 5, 0), &settings, 1);
        assert_eq!(
            early,
            GateDecision::Wait {
                samples: 15,
                needed: 100
            }
        );
    }

    #[test]
    fn the_regression_gate_is_a_seeded_paired_bootstrap() {
        let settings = GateSettings {
            min_samples: 50,
            margin: 0.1,
            alpha: 0.05,
        };
        let rows: Vec<PairedOutcome> = (0..200)
            .map(|i| PairedOutcome::Value {
                serving: 1.0 + (i % 7) as f64 * 0.1,
                candidate: 0.5 + (i % 5) as f64 * 0.1,
            })
            .collect();
        let first = decide(&rows, &settings, 7);
        assert_eq!(
            first,
            decide(&rows, &settings, 7),
            "same rows, same seed, same verdict"
        );
        let GateDecision::Promote(evidence) = first else {
            panic!("{first:?}");
        };
        assert_eq!(evidence.test, "paired_bootstrap");
        assert!(evidence.candidate_metric < evidence.serving_metric);
        assert!(evidence.p_value < 0.01);

        let swapped: Vec<PairedOutcome> = rows
            .iter()
            .map(|r| match r {
                PairedOutcome::Value { serving, candidate } => PairedOutcome::Value {
                    serving: *candidate,
                    candidate: *serving,
                },
                other => other.clone(),
            })
            .collect();
        let worse = decide(&swapped, &settings, 7);
        let GateDecision::Reject(evidence) = worse else {
            panic!("{worse:?}");
        };
        assert!(evidence.p_value > 0.9);
    }
}
