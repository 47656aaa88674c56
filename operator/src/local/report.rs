//! The terminal leaderboard.

use flywheel_core::api::{BestTrial, Direction, Trial, TrialPhase};
use flywheel_core::search::space::Params;

/// `k=v` pairs, floats shortened, for one-line display.
pub fn compact_params(params: &Params) -> String {
    params
        .iter()
        .map(|(name, value)| match value.as_f64() {
            Some(v) if value.as_i64().is_none() => format!("{name}={}", short_float(v)),
            _ => format!("{name}={value}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Four significant digits, in scientific notation for small magnitudes (regularisation
/// strengths live around 1e-5).
fn short_float(value: f64) -> String {
    if value != 0.0 && value.abs() < 1e-2 {
        format!("{value:.2e}")
    } else {
        format!("{value:.4}")
    }
}

/// The succeeded trials with a finite objective, best first (ties keep the input order).
pub fn ranked<'a>(
    trials: impl IntoIterator<Item = &'a Trial>,
    direction: Direction,
) -> Vec<(&'a Trial, f64)> {
    let mut rows: Vec<(&Trial, f64)> = trials
        .into_iter()
        .filter_map(|trial| {
            let status = trial.status.as_ref()?;
            (status.phase == TrialPhase::Succeeded)
                .then_some(status.objective)
                .flatten()
                .filter(|v| v.is_finite())
                .map(|v| (trial, v))
        })
        .collect();
    rows.sort_by(|a, b| {
        let order = a.1.total_cmp(&b.1);
        match direction {
            Direction::Maximize => order.reverse(),
            Direction::Minimize => order,
        }
    });
    rows
}

/// A trial's score on the final holdout (rows no trial was selected on), when it has one.
pub fn holdout_score(trial: &Trial, metric: &str) -> Option<f64> {
    trial
        .status
        .as_ref()
        .and_then(|s| s.holdout_metrics.get(metric).copied())
        .filter(|v| v.is_finite())
}

/// The finished trials ranked by objective (the selection score), best first, as a table with
/// each trial's holdout score beside it: the gap is how optimistic selection was.
pub fn leaderboard(trials: &[Trial], metric: &str, direction: Direction, top: usize) -> String {
    let rows = ranked(trials, direction);
    let mut out = format!(
        "{:<4} {:<28} {:<18} {:>10} {:>10} {:>12} {:>10}  params\n",
        "rank", "trial", "family", metric, "holdout", "p99 latency", "size"
    );
    for (rank, (trial, value)) in rows.iter().take(top).enumerate() {
        let status = trial.status.as_ref();
        let latency = status
            .and_then(|s| s.latency)
            .map_or("-".to_string(), |l| format!("{:.0} µs", l.p99_micros));
        let size = status
            .and_then(|s| s.model_bytes)
            .map_or("-".to_string(), human_bytes);
        let holdout = holdout_score(trial, metric).map_or("-".to_string(), |v| format!("{v:.4}"));
        out.push_str(&format!(
            "{:<4} {:<28} {:<18} {:>10.4} {:>10} {:>12} {:>10}  {}\n",
            rank + 1,
            trial.metadata.name.as_deref().unwrap_or_default(),
            trial.spec.family.as_str(),
            value,
            holdout,
            latency,
            size,
            compact_params(&trial.spec.params)
        ));
    }
    let failed = trials
        .iter()
        .filter(|t| {
            t.status
                .as_ref()
                .is_some_and(|s| s.phase == TrialPhase::Failed)
        })
        .count();
    let pruned = trials
        .iter()
        .filter(|t| {
            t.status
                .as_ref()
                .is_some_and(|s| s.phase == TrialPhase::Pruned)
        })
        .count();
    out.push_str(&format!(
        "{} succeeded, {failed} failed, {pruned} pruned\n",
        rows.len()
    ));
    out
}

pub(crate) fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// The promoted trial in one line: its selection and holdout scores, and why it won a tie.
pub fn winner_line(winner: &BestTrial, metric: &str) -> String {
    let holdout = winner
        .holdout_metrics
        .get(metric)
        .map_or_else(String::new, |v| format!(", holdout {v:.4}"));
    let tie = winner
        .tie_broken_by
        .as_deref()
        .map_or_else(String::new, |by| {
            format!(" (tie broken by {by}: other trials scored within the noise of the best)")
        });
    format!(
        "winner: {} ({}) {metric}={:.4}{holdout}{tie}",
        winner.name, winner.family, winner.objective
    )
}
