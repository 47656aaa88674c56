//! Early stopping: whether a running trial should be pruned, judged on intermediate reports.
//!
//! [`should_stop`] is a pure function of the reports, so the operator and the local runner
//! decide alike and a restarted controller decides as before. Call it after each new report of
//! a trial, with the reports of the study's other trials as they stand at that moment.

use crate::api::{
    AshaSettings, Direction, EarlyStopping, EarlyStoppingRule, MedianSettings, Report,
};

/// Defaults of the median rule.
pub const DEFAULT_MEDIAN_MIN_TRIALS: u32 = 5;
pub const DEFAULT_MEDIAN_WARMUP_STEPS: u64 = 1;
/// Defaults of ASHA.
pub const DEFAULT_ASHA_MIN_RESOURCE: u64 = 1;
pub const DEFAULT_ASHA_REDUCTION_FACTOR: u32 = 3;

/// Whether the trial with `reports` should stop now; `Some(reason)` is a human-readable
/// explanation for the trial's status message.
///
/// - `metric` names the objective in each report's `metrics`; reports without a finite value
///   for it are ignored.
/// - `others` are the reports of the study's other trials, in any phase (running, succeeded,
///   pruned). Trials that have not got as far as this trial are left out of the comparison.
///
/// **Median rule**: at the trial's latest step `s`, once `s >= warmupSteps` and at least
/// `minTrials` other trials have reported at step `s` or later, the trial stops if its best
/// value up to `s` is strictly worse than the median of the other trials' best values up to `s`.
/// Comparing best-so-far values is robust to noisy curves and to trials reporting on different
/// step grids.
///
/// **ASHA** (the stopping variant, like Optuna's `SuccessiveHalvingPruner`): rungs sit at steps
/// `minResource * reductionFactor^k`. A trial's value at a rung is its value at its first report
/// at or past that step. When the trial's latest report takes it past a rung, it continues only
/// if its value there is within the best `1 / reductionFactor` of the values every trial
/// (itself included) recorded at that rung; ties continue, and so does every trial while fewer
/// than `reductionFactor` trials have reached the rung. A rung is judged on the report that crosses
/// it, as ASHA promotes: once a trial has reported past a rung, later and better arrivals there do
/// not demote it. (Called again before the trial's next report, the verdict is revisited against
/// the trials that reached the rung since; a caller that skips reports skips their rungs.)
pub fn should_stop(
    settings: &EarlyStopping,
    direction: Direction,
    metric: &str,
    reports: &[Report],
    others: &[&[Report]],
) -> Option<String> {
    match settings.rule {
        EarlyStoppingRule::None => None,
        EarlyStoppingRule::Median => {
            median_rule(settings.median.as_ref(), direction, metric, reports, others)
        }
        EarlyStoppingRule::Asha => asha(settings.asha.as_ref(), direction, metric, reports, others),
    }
}

/// The finite values of `metric`, sorted by step (reports arrive in order, but nothing here
/// depends on it).
fn curve(metric: &str, reports: &[Report]) -> Vec<(u64, f64)> {
    let mut points: Vec<(u64, f64)> = reports
        .iter()
        .filter_map(|r| {
            let value = *r.metrics.get(metric)?;
            value.is_finite().then_some((r.step, value))
        })
        .collect();
    points.sort_by_key(|(step, _)| *step);
    points
}

fn best(direction: Direction, values: impl Iterator<Item = f64>) -> Option<f64> {
    values.reduce(|a, b| if direction.better(b, a) { b } else { a })
}

fn median_rule(
    settings: Option<&MedianSettings>,
    direction: Direction,
    metric: &str,
    reports: &[Report],
    others: &[&[Report]],
) -> Option<String> {
    let min_trials = settings
        .and_then(|s| s.min_trials)
        .unwrap_or(DEFAULT_MEDIAN_MIN_TRIALS)
        .max(1) as usize;
    let warmup = settings
        .and_then(|s| s.warmup_steps)
        .unwrap_or(DEFAULT_MEDIAN_WARMUP_STEPS);
    let own = curve(metric, reports);
    let &(step, _) = own.last()?;
    if step < warmup {
        return None;
    }
    let value = best(direction, own.iter().map(|(_, v)| *v))?;
    let mut peers: Vec<f64> = others
        .iter()
        .filter_map(|other| {
            let points = curve(metric, other);
            let reached = points.last().is_some_and(|(s, _)| *s >= step);
            if !reached {
                return None;
            }
            best(
                direction,
                points
                    .iter()
                    .take_while(|(s, _)| *s <= step)
                    .map(|(_, v)| *v),
            )
        })
        .collect();
    if peers.len() < min_trials {
        return None;
    }
    peers.sort_by(f64::total_cmp);
    let n = peers.len();
    let median = if n % 2 == 1 {
        peers[n / 2]
    } else {
        0.5 * (peers[n / 2 - 1] + peers[n / 2])
    };
    direction.better(median, value).then(|| {
        let side = match direction {
            Direction::Maximize => "below",
            Direction::Minimize => "above",
        };
        format!(
            "median rule: best {metric} {value:.4} by step {step} is {side} the median {median:.4} of {n} other trials at that step"
        )
    })
}

fn asha(
    settings: Option<&AshaSettings>,
    direction: Direction,
    metric: &str,
    reports: &[Report],
    others: &[&[Report]],
) -> Option<String> {
    let min_resource = settings
        .and_then(|s| s.min_resource)
        .unwrap_or(DEFAULT_ASHA_MIN_RESOURCE)
        .max(1);
    let eta = settings
        .and_then(|s| s.reduction_factor)
        .unwrap_or(DEFAULT_ASHA_REDUCTION_FACTOR)
        .max(2);
    let own = curve(metric, reports);
    let &(step, _) = own.last()?;
    let previous = own.len().checked_sub(2).map(|i| own[i].0);
    let curves: Vec<Vec<(u64, f64)>> = others.iter().map(|o| curve(metric, o)).collect();

    let mut rung = min_resource;
    while rung <= step {
        let crossed_now = previous.is_none_or(|p| p < rung);
        if crossed_now {
            let value = at_rung(&own, rung)?;
            let mut values: Vec<f64> = curves.iter().filter_map(|c| at_rung(c, rung)).collect();
            values.push(value);
            let n = values.len();
            if n >= eta as usize {
                // Best first: the cut-off is the value of the last trial that continues.
                values.sort_by(|a, b| match direction {
                    Direction::Maximize => b.total_cmp(a),
                    Direction::Minimize => a.total_cmp(b),
                });
                let keep = (n / eta as usize).max(1);
                let cutoff = values[keep - 1];
                if direction.better(cutoff, value) {
                    return Some(format!(
                        "asha: {metric} {value:.4} at rung {rung} is not in the best 1/{eta} of the {n} trials that reached it (cut-off {cutoff:.4})"
                    ));
                }
            }
        }
        let Some(next) = rung.checked_mul(u64::from(eta)) else {
            break;
        };
        rung = next;
    }
    None
}

/// A trial's value at a rung: its value at its first report at or past the rung's step.
fn at_rung(points: &[(u64, f64)], rung: u64) -> Option<f64> {
    points
        .iter()
        .find(|(step, _)| *step >= rung)
        .map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn reports(values: &[(u64, f64)]) -> Vec<Report> {
        values
            .iter()
            .map(|&(step, value)| Report {
                step,
                metrics: BTreeMap::from([("accuracy".to_string(), value)]),
            })
            .collect()
    }

    fn linear(values: &[f64]) -> Vec<Report> {
        let points: Vec<(u64, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64 + 1, *v))
            .collect();
        reports(&points)
    }

    fn median(min_trials: u32, warmup: u64) -> EarlyStopping {
        EarlyStopping {
            rule: EarlyStoppingRule::Median,
            median: Some(MedianSettings {
                min_trials: Some(min_trials),
                warmup_steps: Some(warmup),
            }),
            asha: None,
        }
    }

    fn asha_settings(min_resource: u64, eta: u32) -> EarlyStopping {
        EarlyStopping {
            rule: EarlyStoppingRule::Asha,
            median: None,
            asha: Some(AshaSettings {
                min_resource: Some(min_resource),
                reduction_factor: Some(eta),
            }),
        }
    }

    fn stop(
        settings: &EarlyStopping,
        direction: Direction,
        trial: &[Report],
        others: &[Vec<Report>],
    ) -> Option<String> {
        let others: Vec<&[Report]> = others.iter().map(Vec::as_slice).collect();
        should_stop(settings, direction, "accuracy", trial, &others)
    }

    #[test]
    fn no_rule_never_stops() {
        let others = vec![linear(&[0.9, 0.9]); 10];
        assert_eq!(
            stop(
                &EarlyStopping::default(),
                Direction::Maximize,
                &linear(&[0.1, 0.1]),
                &others
            ),
            None
        );
    }

    #[test]
    fn median_stops_a_trial_below_the_median_of_its_peers() {
        let others: Vec<Vec<Report>> = [0.6, 0.7, 0.8, 0.85, 0.9, 0.95]
            .iter()
            .map(|v| linear(&[v - 0.1, *v, *v]))
            .collect();
        let settings = median(5, 1);
        let reason = stop(
            &settings,
            Direction::Maximize,
            &linear(&[0.5, 0.71]),
            &others,
        )
        .unwrap();
        // Peers' best by step 2: 0.6 0.7 0.8 0.85 0.9 0.95, median 0.825.
        assert_eq!(
            reason,
            "median rule: best accuracy 0.7100 by step 2 is below the median 0.8250 of 6 other trials at that step"
        );
        assert_eq!(
            stop(
                &settings,
                Direction::Maximize,
                &linear(&[0.5, 0.83]),
                &others
            ),
            None
        );
        // An early peak counts: the trial's best so far is compared.
        assert_eq!(
            stop(
                &settings,
                Direction::Maximize,
                &linear(&[0.9, 0.5]),
                &others
            ),
            None
        );
    }

    #[test]
    fn median_waits_for_warmup_and_enough_peers() {
        let others: Vec<Vec<Report>> = (0..5).map(|_| linear(&[0.9, 0.9, 0.9])).collect();
        let trial = reports(&[(0, 0.1)]);
        assert_eq!(
            stop(&median(5, 1), Direction::Maximize, &trial, &others),
            None
        );
        let trial = linear(&[0.1, 0.1]);
        assert!(stop(&median(5, 1), Direction::Maximize, &trial, &others).is_some());
        assert_eq!(
            stop(&median(6, 1), Direction::Maximize, &trial, &others),
            None
        );
        assert_eq!(
            stop(&median(5, 3), Direction::Maximize, &trial, &others),
            None
        );
        // Peers that have not reached the step do not count.
        let short: Vec<Vec<Report>> = (0..5).map(|_| linear(&[0.9])).collect();
        assert_eq!(
            stop(&median(5, 1), Direction::Maximize, &trial, &short),
            None
        );
    }

    #[test]
    fn median_minimises_and_ignores_non_finite_and_other_metrics() {
        let mut others: Vec<Vec<Report>> = (0..5).map(|_| linear(&[0.3, 0.2])).collect();
        others.push(linear(&[f64::NAN, f64::NAN]));
        let settings = median(5, 1);
        let reason = stop(
            &settings,
            Direction::Minimize,
            &linear(&[0.5, 0.4]),
            &others,
        )
        .unwrap();
        assert!(reason.contains("above the median 0.2000 of 5"), "{reason}");
        assert_eq!(
            stop(
                &settings,
                Direction::Minimize,
                &linear(&[0.5, 0.1]),
                &others
            ),
            None
        );
        assert_eq!(
            stop(
                &settings,
                Direction::Minimize,
                &linear(&[f64::NAN]),
                &others
            ),
            None
        );
        assert_eq!(stop(&settings, Direction::Minimize, &[], &others), None);
        let others: Vec<&[Report]> = others.iter().map(Vec::as_slice).collect();
        assert_eq!(
            should_stop(
                &settings,
                Direction::Minimize,
                "rmse",
                &linear(&[9.0, 9.0]),
                &others
            ),
            None
        );
    }

    #[test]
    fn asha_keeps_the_best_third_at_each_rung() {
        // Rungs at 1, 3, 9. Five peers reached rung 3 with these values.
        let others: Vec<Vec<Report>> = [0.5, 0.6, 0.7, 0.8, 0.9]
            .iter()
            .map(|v| linear(&[0.1, 0.2, *v]))
            .collect();
        let settings = asha_settings(1, 3);
        // Six trials at rung 3 with this one: the best 2 continue, cut-off 0.8.
        let reason = stop(
            &settings,
            Direction::Maximize,
            &linear(&[0.1, 0.2, 0.75]),
            &others,
        )
        .unwrap();
        assert_eq!(
            reason,
            "asha: accuracy 0.7500 at rung 3 is not in the best 1/3 of the 6 trials that reached it (cut-off 0.8000)"
        );
        // A tie with the cut-off continues.
        assert_eq!(
            stop(
                &settings,
                Direction::Maximize,
                &linear(&[0.1, 0.2, 0.8]),
                &others
            ),
            None
        );
        // Between rungs nothing is judged, however bad the trial looks.
        let trial = linear(&[0.1, 0.2, 0.95, 0.0]);
        assert_eq!(stop(&settings, Direction::Maximize, &trial, &others), None);
    }

    #[test]
    fn asha_lets_everyone_through_until_a_rung_has_enough_trials() {
        let others = vec![linear(&[0.9])];
        let settings = asha_settings(1, 3);
        assert_eq!(
            stop(&settings, Direction::Maximize, &linear(&[0.1]), &others),
            None
        );
        let others = vec![linear(&[0.9]), linear(&[0.8])];
        assert!(stop(&settings, Direction::Maximize, &linear(&[0.1]), &others).is_some());
        assert_eq!(
            stop(&settings, Direction::Minimize, &linear(&[0.1]), &others),
            None
        );
    }

    #[test]
    fn asha_judges_every_rung_a_sparse_report_crosses() {
        // Reports every 10 steps: the first one crosses rungs 2, 4 and 8 at once.
        let others: Vec<Vec<Report>> = [0.9, 0.8, 0.7, 0.6]
            .iter()
            .map(|v| reports(&[(10, *v)]))
            .collect();
        let settings = asha_settings(2, 2);
        assert!(
            stop(
                &settings,
                Direction::Maximize,
                &reports(&[(10, 0.65)]),
                &others
            )
            .is_some()
        );
        assert_eq!(
            stop(
                &settings,
                Direction::Maximize,
                &reports(&[(10, 0.85)]),
                &others
            ),
            None
        );
        // Degenerate settings are clamped instead of looping forever.
        let degenerate = asha_settings(0, 0);
        assert_eq!(
            stop(
                &degenerate,
                Direction::Maximize,
                &reports(&[(u64::MAX, 0.95)]),
                &others
            ),
            None
        );
    }
}
