//! The terminal leaderboard.

use flywheel_core::api::{Direction, Trial, TrialPhase};
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

/// The finished trials ranked by objective, best first, as a table.
pub fn leaderboard(trials: &[Trial], metric: &str, direction: Direction, top: usize) -> String {
    let rows = ranked(trials, direction);
    let mut out = format!(
        "{:<4} {:<28} {:<18} {:>10} {:>12} {:>10}  params\n",
        "rank", "trial", "family", metric, "p99 latency", "size"
    );
    for (rank, (trial, value)) in rows.iter().take(top).enumerate() {
        let status = trial.status.as_ref();
        let latency = status
            .and_then(|s| s.latency)
            .map_or("-".to_string(), |l| format!("{:.0} µs", l.p99_micros));
        let size = status
            .and_then(|s| s.model_bytes)
            .map_or("-".to_string(), human_bytes);
        out.push_str(&format!(
            "{:<4} {:<28} {:<18} {:>10.4} {:>12} {:>10}  {}\n",
            rank + 1,
            trial.metadata.name.as_deref().unwrap_or_default(),
            trial.spec.family.as_str(),
            value,
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
