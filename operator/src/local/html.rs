//! `flywheel report`: one self-contained HTML file (inline SVG, no scripts, no CDN) that shows
//! how a study went — optimisation history, metric by family, parameter importance, the
//! leaderboard, the data profile and the promoted model's lineage.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use flywheel_core::api::{Direction, Study, Trial, TrialPhase};
use flywheel_core::model_card::ModelCard;
use flywheel_core::search::space::Family;
use serde_json::Value;

use super::report::{compact_params, holdout_score, ranked};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 260.0;
const MARGIN: f64 = 48.0;
const PALETTE: [&str; 7] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#9c755f",
];

/// The report for a study directory's contents.
pub fn render(study: &Study, trials: &[Trial], winner_dir: Option<&Path>) -> String {
    let name = study.metadata.name.as_deref().unwrap_or("study");
    let metric = study.spec.objective.metric;
    let direction = metric.direction();
    let scored = ranked(trials, direction);
    let status = study.status.clone().unwrap_or_default();
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Flywheel study {n}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:820px;color:#222}}\
         table{{border-collapse:collapse;font-size:13px}}td,th{{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}}\
         h2{{margin-top:1.6em}}svg{{background:#fafafa;border:1px solid #eee}}.muted{{color:#777}}</style></head><body>\
         <h1>Study <code>{n}</code></h1><p>{phase:?} · {done} of {max} trials · optimising <b>{metric}</b> ({dir})</p>",
        n = escape(name),
        phase = status.phase,
        done = status.trials.finished(),
        max = study.spec.budget.max_trials,
        metric = metric.as_str(),
        dir = match direction {
            Direction::Maximize => "higher is better",
            Direction::Minimize => "lower is better",
        },
    );
    if let Some(best) = &status.best_trial {
        let holdout = best
            .holdout_metrics
            .get(metric.as_str())
            .map_or_else(String::new, |v| format!(", on the final holdout {v:.4}"));
        let tie = best
            .tie_broken_by
            .as_deref()
            .map_or_else(String::new, |by| format!(" — tie broken by {}", escape(by)));
        let _ = write!(
            html,
            "<p>Best: <b>{}</b> ({}) {} = {:.4}{holdout}{tie}</p>",
            escape(&best.name),
            best.family,
            metric.as_str(),
            best.objective
        );
    }

    html.push_str("<h2>Optimisation history</h2>");
    html.push_str(&history_chart(&scored, direction));
    html.push_str("<h2>Metric by family</h2>");
    html.push_str(&family_chart(&scored));
    html.push_str("<h2>Parameter importance</h2><p class=\"muted\">|Spearman correlation| between each hyper-parameter and the objective, within its family (families with at least 4 scored trials).</p>");
    html.push_str(&importance_chart(&scored));
    html.push_str("<h2>Leaderboard</h2>");
    html.push_str(&leaderboard_table(trials, &scored, metric.as_str()));
    if let Some(dir) = winner_dir {
        html.push_str(&profile_and_lineage(dir));
    }
    html.push_str("</body></html>\n");
    html
}

pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn color(family: Family) -> &'static str {
    let index = Family::ALL.iter().position(|f| *f == family).unwrap_or(0);
    PALETTE[index % PALETTE.len()]
}

/// Maps values onto the plot's y range (top is larger).
struct Scale {
    low: f64,
    high: f64,
}

impl Scale {
    fn of(values: impl Iterator<Item = f64>) -> Scale {
        let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        if !low.is_finite() {
            return Scale {
                low: 0.0,
                high: 1.0,
            };
        }
        let pad = ((high - low) * 0.05).max(1e-9);
        Scale {
            low: low - pad,
            high: high + pad,
        }
    }

    fn y(&self, value: f64) -> f64 {
        HEIGHT - MARGIN / 2.0 - (value - self.low) / (self.high - self.low) * (HEIGHT - MARGIN)
    }
}

fn svg_open(height: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" font-size=\"11\">"
    )
}

fn y_axis(svg: &mut String, scale: &Scale) {
    for i in 0..=4 {
        let value = scale.low + (scale.high - scale.low) * f64::from(i) / 4.0;
        let y = scale.y(value);
        let _ = write!(
            svg,
            "<line x1=\"{MARGIN}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e5e5e5\"/><text x=\"4\" y=\"{:.1}\">{value:.3}</text>",
            WIDTH - 8.0,
            y + 4.0
        );
    }
}

fn history_chart(scored: &[(&Trial, f64)], direction: Direction) -> String {
    if scored.is_empty() {
        return "<p class=\"muted\">No scored trials yet.</p>".into();
    }
    let scale = Scale::of(scored.iter().map(|(_, v)| *v));
    let last = scored
        .iter()
        .map(|(t, _)| t.spec.index)
        .max()
        .unwrap_or(0)
        .max(1);
    let x = |index: u32| MARGIN + f64::from(index) / f64::from(last) * (WIDTH - MARGIN - 16.0);
    let mut svg = svg_open(HEIGHT);
    y_axis(&mut svg, &scale);
    let mut best: Option<f64> = None;
    let mut path = String::new();
    let mut ordered: Vec<&(&Trial, f64)> = scored.iter().collect();
    ordered.sort_by_key(|(t, _)| t.spec.index);
    for (trial, value) in ordered {
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{}\"><title>{} {} {value:.4}</title></circle>",
            x(trial.spec.index),
            scale.y(*value),
            color(trial.spec.family),
            escape(trial.metadata.name.as_deref().unwrap_or_default()),
            trial.spec.family
        );
        let improved = best.is_none_or(|b| direction.better(*value, b));
        if improved {
            let command = if best.is_none() { 'M' } else { 'H' };
            let _ = write!(path, "{command}{:.1} ", x(trial.spec.index));
            if best.is_none() {
                let _ = write!(path, "{:.1} ", scale.y(*value));
            } else {
                let _ = write!(path, "V{:.1} ", scale.y(*value));
            }
            best = Some(*value);
        }
    }
    let _ = write!(path, "H{:.1}", WIDTH - 16.0);
    let _ = write!(
        svg,
        "<path d=\"{path}\" fill=\"none\" stroke=\"#222\" stroke-width=\"1.5\"/><text x=\"{MARGIN}\" y=\"12\">● trials by index, — best so far</text>"
    );
    let families: std::collections::BTreeSet<Family> =
        scored.iter().map(|(t, _)| t.spec.family).collect();
    for (i, family) in families.iter().enumerate() {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{}\">● {family}</text>",
            WIDTH - 130.0,
            12.0 + 13.0 * i as f64,
            color(*family)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn family_chart(scored: &[(&Trial, f64)]) -> String {
    let mut by_family: BTreeMap<Family, Vec<f64>> = BTreeMap::new();
    for (trial, value) in scored {
        by_family.entry(trial.spec.family).or_default().push(*value);
    }
    if by_family.is_empty() {
        return String::new();
    }
    let scale = Scale::of(scored.iter().map(|(_, v)| *v));
    let band = (WIDTH - MARGIN - 16.0) / by_family.len() as f64;
    let mut svg = svg_open(HEIGHT + 16.0);
    y_axis(&mut svg, &scale);
    for (i, (family, values)) in by_family.iter().enumerate() {
        let centre = MARGIN + band * (i as f64 + 0.5);
        for (j, value) in values.iter().enumerate() {
            // A small deterministic jitter keeps equal values visible.
            let offset = ((j * 37) % 21) as f64 - 10.0;
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{}\" fill-opacity=\"0.8\"/>",
                centre + offset,
                scale.y(*value),
                color(*family)
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{centre:.1}\" y=\"{}\" text-anchor=\"middle\">{family} ({})</text>",
            HEIGHT + 10.0,
            values.len()
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Ranks with ties averaged, for Spearman's correlation.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|a, b| values[*a].total_cmp(&values[*b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0;
        for k in i..=j {
            ranks[order[k]] = rank;
        }
        i = j + 1;
    }
    ranks
}

fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

/// |Spearman| per (family, parameter); categorical values are ranked by their mean objective.
pub fn importance(scored: &[(&Trial, f64)]) -> Vec<(String, f64)> {
    let mut by_family: BTreeMap<Family, Vec<(&Trial, f64)>> = BTreeMap::new();
    for (trial, value) in scored {
        by_family
            .entry(trial.spec.family)
            .or_default()
            .push((trial, *value));
    }
    let mut out = Vec::new();
    for (family, rows) in by_family {
        if rows.len() < 4 {
            continue;
        }
        let names: std::collections::BTreeSet<&String> = rows
            .iter()
            .flat_map(|(t, _)| t.spec.params.keys())
            .collect();
        for name in names {
            let pairs: Vec<(Value, f64)> = rows
                .iter()
                .filter_map(|(t, v)| {
                    t.spec
                        .params
                        .get(name)
                        .and_then(|p| serde_json::to_value(p).ok())
                        .map(|p| (p, *v))
                })
                .collect();
            let numeric: Option<Vec<f64>> = pairs.iter().map(|(p, _)| p.as_f64()).collect();
            let xs = match numeric {
                Some(xs) => xs,
                None => {
                    let mut means: BTreeMap<String, (f64, f64)> = BTreeMap::new();
                    for (p, v) in &pairs {
                        let entry = means.entry(p.to_string()).or_default();
                        entry.0 += v;
                        entry.1 += 1.0;
                    }
                    pairs
                        .iter()
                        .map(|(p, _)| means.get(&p.to_string()).map_or(0.0, |(s, n)| s / n))
                        .collect()
                }
            };
            let ys: Vec<f64> = pairs.iter().map(|(_, v)| *v).collect();
            if let Some(rho) = spearman(&xs, &ys) {
                out.push((format!("{family}.{name}"), rho.abs()));
            }
        }
    }
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

fn importance_chart(scored: &[(&Trial, f64)]) -> String {
    let rows = importance(scored);
    if rows.is_empty() {
        return "<p class=\"muted\">Not enough scored trials per family.</p>".into();
    }
    let height = 20.0 * rows.len() as f64 + 10.0;
    let mut svg = svg_open(height);
    for (i, (name, value)) in rows.iter().enumerate() {
        let y = 6.0 + 20.0 * i as f64;
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"{:.1}\">{}</text><rect x=\"220\" y=\"{y:.1}\" width=\"{:.1}\" height=\"14\" fill=\"#4e79a7\"/><text x=\"{:.1}\" y=\"{:.1}\">{value:.2}</text>",
            y + 11.0,
            escape(name),
            value * (WIDTH - 280.0),
            226.0 + value * (WIDTH - 280.0),
            y + 11.0
        );
    }
    svg.push_str("</svg>");
    svg
}

/// `scored` comes ranked best first.
fn leaderboard_table(trials: &[Trial], scored: &[(&Trial, f64)], metric: &str) -> String {
    let mut table = format!(
        "<table><tr><th>#</th><th>trial</th><th>family</th><th>{metric}</th><th>holdout</th><th>p99 µs</th><th>bytes</th><th>params</th></tr>"
    );
    for (rank, (trial, value)) in scored.iter().enumerate() {
        let status = trial.status.as_ref();
        let _ = write!(
            table,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{value:.4}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            rank + 1,
            escape(trial.metadata.name.as_deref().unwrap_or_default()),
            trial.spec.family,
            holdout_score(trial, metric).map_or("-".into(), |v| format!("{v:.4}")),
            status
                .and_then(|s| s.latency)
                .map_or("-".into(), |l| format!("{:.0}", l.p99_micros)),
            status
                .and_then(|s| s.model_bytes)
                .map_or("-".into(), |b| b.to_string()),
            escape(&compact_params(&trial.spec.params))
        );
    }
    for trial in trials {
        let Some(status) = trial.status.as_ref() else {
            continue;
        };
        if matches!(status.phase, TrialPhase::Failed | TrialPhase::Pruned) {
            let _ = write!(
                table,
                "<tr class=\"muted\"><td>–</td><td>{}</td><td>{}</td><td colspan=\"5\">{:?}: {}</td></tr>",
                escape(trial.metadata.name.as_deref().unwrap_or_default()),
                trial.spec.family,
                status.phase,
                escape(status.message.as_deref().unwrap_or_default())
            );
        }
    }
    table.push_str("</table>");
    table
}

fn profile_and_lineage(dir: &Path) -> String {
    let mut html = String::new();
    if let Some(schema) = std::fs::read(dir.join("schema.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
    {
        html.push_str("<h2>Data profile</h2><table><tr><th>column</th><th>role</th><th>kind</th><th>missing</th><th>distinct</th><th>why</th></tr>");
        for column in schema["columns"].as_array().into_iter().flatten() {
            let cell = |key: &str| escape(column[key].to_string().trim_matches('"'));
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                cell("name"),
                cell("role"),
                cell("kind"),
                cell("missing"),
                cell("distinct"),
                cell("reason")
            );
        }
        html.push_str("</table>");
    }
    if let Some(card) = std::fs::read(dir.join("model.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<ModelCard>(&bytes).ok())
    {
        let lineage = &card.lineage;
        let _ = write!(
            html,
            "<h2>Promoted model lineage</h2><table>\
             <tr><td>version</td><td>{}</td></tr><tr><td>study</td><td>{}</td></tr>\
             <tr><td>trial</td><td>{}</td></tr><tr><td>family</td><td>{}</td></tr>\
             <tr><td>params</td><td>{}</td></tr><tr><td>dataset</td><td>{} ({} rows)</td></tr>\
             <tr><td>dataset sha256</td><td><code>{}</code></td></tr>\
             <tr><td>trainer</td><td>{}</td></tr><tr><td>created</td><td>{}</td></tr></table>",
            escape(&card.version),
            escape(lineage.study.as_deref().unwrap_or("-")),
            escape(lineage.trial.as_deref().unwrap_or("-")),
            card.family,
            escape(&compact_params(&card.params)),
            escape(&lineage.dataset_uri),
            lineage.dataset_rows,
            escape(&lineage.dataset_digest),
            escape(&lineage.trainer_version),
            escape(&lineage.created_at)
        );
    }
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_detects_monotone_relations_and_ties() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!((spearman(&x, &[10.0, 20.0, 30.0, 40.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((spearman(&x, &[4.0, 3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
        assert_eq!(spearman(&x, &[1.0, 1.0, 1.0, 1.0]), None);
        assert_eq!(ranks(&[5.0, 1.0, 5.0]), vec![1.5, 0.0, 1.5]);
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&"),
            "&lt;a href=&quot;x&quot;&gt;&amp;"
        );
    }
}
