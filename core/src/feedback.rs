//! Production feedback as the next study sees it: the prediction log's records (written by the
//! server, one JSON object per line), joined by request id into labelled rows, scored, and cut
//! into slices by categorical value to show where the serving model errs most.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::k8s_openapi::jiff::Timestamp;

use crate::gate::PairedOutcome;

/// One line of a prediction log segment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogRecord {
    Prediction {
        request_id: String,
        time: String,
        model: String,
        model_version: String,
        /// The row as the model saw it, keyed by raw column name.
        inputs: Map<String, Value>,
        /// Class label or regression value.
        prediction: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        probabilities: Option<BTreeMap<String, f64>>,
        /// A shadow model's prediction (mirrored, never returned to the client).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        shadow: bool,
    },
    Feedback {
        request_id: String,
        time: String,
        model: String,
        #[serde(default)]
        model_version: Option<String>,
        actual: Value,
    },
}

impl LogRecord {
    /// When the server logged the record (RFC 3339).
    pub fn time(&self) -> &str {
        match self {
            LogRecord::Prediction { time, .. } | LogRecord::Feedback { time, .. } => time,
        }
    }
}

/// The records logged at or before `until`; a record whose time does not parse is left out, as
/// it cannot be placed before or after the cut.
pub fn logged_until(records: Vec<LogRecord>, until: Option<Timestamp>) -> Vec<LogRecord> {
    let Some(until) = until else {
        return records;
    };
    records
        .into_iter()
        .filter(|r| r.time().parse::<Timestamp>().is_ok_and(|t| t <= until))
        .collect()
}

/// Parses a segment's text; returns the records and the number of lines that were not records
/// (a torn last line after a crash, or a newer record kind), which are skipped, not fatal.
pub fn parse_log(text: &str) -> (Vec<LogRecord>, usize) {
    let mut records = Vec::new();
    let mut skipped = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(record) => records.push(record),
            Err(_) => skipped += 1,
        }
    }
    (records, skipped)
}

/// A prediction of the serving model with its ground truth, and the shadow's prediction of the
/// same request when there was one.
#[derive(Clone, Debug, PartialEq)]
pub struct Labelled {
    pub request_id: String,
    pub time: String,
    pub model_version: String,
    pub inputs: Map<String, Value>,
    pub prediction: Value,
    pub actual: Value,
    /// (version, prediction) of the shadow model.
    pub shadow: Option<(String, Value)>,
}

/// Joins predictions and feedback by request id, in prediction order. Each request appears
/// once: its primary prediction with the latest feedback (a later label corrects an earlier
/// one) and its latest shadow prediction. Requests without feedback, and feedback without a
/// logged prediction, are left out. `model` limits the join to one model's records.
pub fn join(records: &[LogRecord], model: Option<&str>) -> Vec<Labelled> {
    let of_model = |m: &str| model.is_none_or(|wanted| wanted == m);
    let mut actuals: HashMap<&str, &Value> = HashMap::new();
    let mut shadows: HashMap<&str, (&str, &Value)> = HashMap::new();
    for record in records {
        match record {
            LogRecord::Feedback {
                request_id,
                model,
                actual,
                ..
            } if of_model(model) => {
                actuals.insert(request_id, actual);
            }
            LogRecord::Prediction {
                request_id,
                model,
                model_version,
                prediction,
                shadow: true,
                ..
            } if of_model(model) => {
                shadows.insert(request_id, (model_version, prediction));
            }
            _ => {}
        }
    }
    let mut seen = std::collections::HashSet::new();
    records
        .iter()
        .filter_map(|record| match record {
            LogRecord::Prediction {
                request_id,
                time,
                model,
                model_version,
                inputs,
                prediction,
                shadow: false,
                ..
            } if of_model(model) => {
                let actual = actuals.get(request_id.as_str())?;
                if !seen.insert(request_id.as_str()) {
                    return None;
                }
                Some(Labelled {
                    request_id: request_id.clone(),
                    time: time.clone(),
                    model_version: model_version.clone(),
                    inputs: inputs.clone(),
                    prediction: prediction.clone(),
                    actual: (*actual).clone(),
                    shadow: shadows
                        .get(request_id.as_str())
                        .map(|(v, p)| (v.to_string(), (*p).clone())),
                })
            }
            _ => None,
        })
        .collect()
}

/// A label or value as text, so `"1"`, `1` and `1.0` compare as the same class.
pub fn label_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Whether `prediction` got `actual` right (classification).
pub fn is_correct(prediction: &Value, actual: &Value) -> bool {
    label_text(prediction) == label_text(actual)
}

/// Online accuracy (classification) or RMSE (regression) of the serving model on `rows`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnlineMetric {
    /// `accuracy` or `rmse`.
    pub name: &'static str,
    pub value: f64,
    pub samples: u64,
}

pub fn online_metric(rows: &[Labelled], regression: bool) -> Option<OnlineMetric> {
    if rows.is_empty() {
        return None;
    }
    if regression {
        let errors: Vec<f64> = rows
            .iter()
            .filter_map(|r| Some(as_number(&r.prediction)? - as_number(&r.actual)?))
            .collect();
        if errors.is_empty() {
            return None;
        }
        let mse = errors.iter().map(|e| e * e).sum::<f64>() / errors.len() as f64;
        Some(OnlineMetric {
            name: "rmse",
            value: mse.sqrt(),
            samples: errors.len() as u64,
        })
    } else {
        let right = rows
            .iter()
            .filter(|r| is_correct(&r.prediction, &r.actual))
            .count();
        Some(OnlineMetric {
            name: "accuracy",
            value: right as f64 / rows.len() as f64,
            samples: rows.len() as u64,
        })
    }
}

/// The serving and shadow predictions of every row that has both, for the shadow gate;
/// `shadow_version` limits it to one candidate.
pub fn paired_outcomes(
    rows: &[Labelled],
    regression: bool,
    shadow_version: &str,
) -> Vec<PairedOutcome> {
    rows.iter()
        .filter_map(|row| {
            let (version, shadow) = row.shadow.as_ref()?;
            if version != shadow_version {
                return None;
            }
            if regression {
                let actual = as_number(&row.actual)?;
                Some(PairedOutcome::Value {
                    serving: (as_number(&row.prediction)? - actual).abs(),
                    candidate: (as_number(shadow)? - actual).abs(),
                })
            } else {
                Some(PairedOutcome::Class {
                    serving: is_correct(&row.prediction, &row.actual),
                    candidate: is_correct(shadow, &row.actual),
                })
            }
        })
        .collect()
}

/// One server's `GET /v1/models/{name}/stats` (the server's wire format).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerStats {
    pub model: String,
    pub versions: Vec<VersionStats>,
}

/// A shadow version's predictions paired with the primary's on the same labelled requests,
/// since the shadow was loaded: what the shadow gate needs from a server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PairedStats {
    /// The primary version the shadow was compared with.
    pub serving_version: String,
    /// Labelled requests both models predicted.
    pub samples: u64,
    /// Classification: requests both got right, only the primary, only the shadow, neither.
    #[serde(default)]
    pub both_right: u64,
    #[serde(default)]
    pub only_serving: u64,
    #[serde(default)]
    pub only_candidate: u64,
    #[serde(default)]
    pub neither_right: u64,
    /// Regression: `[primary, shadow]` absolute errors per request, oldest first, at most the
    /// server's cap (the paired bootstrap resamples rows, so counts do not suffice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absolute_errors: Vec<[f64; 2]>,
}

/// The paired outcomes of `candidate` (a shadow) against `serving` across replicas, for
/// [`crate::gate::decide`]. McNemar's test needs only the counts, so classification rows are
/// rebuilt from them; regression rows are concatenated in replica order.
pub fn paired_from_stats(
    stats: &[ServerStats],
    serving: &str,
    candidate: &str,
) -> Vec<PairedOutcome> {
    let mut outcomes = Vec::new();
    let pairs = stats
        .iter()
        .flat_map(|s| s.versions.iter())
        .filter(|v| v.model_version == candidate)
        .filter_map(|v| v.paired.as_ref())
        .filter(|p| p.serving_version == serving);
    for paired in pairs {
        for (count, serving, candidate) in [
            (paired.both_right, true, true),
            (paired.only_serving, true, false),
            (paired.only_candidate, false, true),
            (paired.neither_right, false, false),
        ] {
            outcomes.extend(std::iter::repeat_n(
                PairedOutcome::Class { serving, candidate },
                count as usize,
            ));
        }
        outcomes.extend(paired.absolute_errors.iter().map(|[serving, candidate]| {
            PairedOutcome::Value {
                serving: *serving,
                candidate: *candidate,
            }
        }));
    }
    outcomes
}

/// One model version's counts and online metrics on one server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionStats {
    pub model_version: String,
    #[serde(default)]
    pub role: Option<String>,
    pub predictions: u64,
    /// Predictions that received feedback since the server started.
    pub labelled: u64,
    /// Labelled predictions the metrics cover.
    pub window: u64,
    #[serde(default)]
    pub accuracy: Option<f64>,
    #[serde(default)]
    pub rmse: Option<f64>,
    #[serde(default)]
    pub mae: Option<f64>,
    /// For a shadow: its predictions paired with the primary's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paired: Option<PairedStats>,
}

/// Labelled predictions and the online metric of `version` across replicas: counts add up,
/// accuracy is averaged and RMSE pooled, each weighted by the rows it covers.
pub fn combine(stats: &[ServerStats], version: &str) -> (u64, Option<OnlineMetric>) {
    let rows: Vec<&VersionStats> = stats
        .iter()
        .flat_map(|s| s.versions.iter())
        .filter(|v| v.model_version == version)
        .collect();
    let labelled = rows.iter().map(|v| v.labelled).sum();
    let pooled = |pick: fn(&VersionStats) -> Option<f64>, squared: bool| {
        let (weight, total) = rows
            .iter()
            .filter_map(|v| Some((v.window as f64, pick(v)?)))
            .filter(|(w, value)| *w > 0.0 && value.is_finite())
            .fold((0.0, 0.0), |(w, t), (weight, value)| {
                (
                    w + weight,
                    t + weight * if squared { value * value } else { value },
                )
            });
        (weight > 0.0).then(|| {
            let mean = total / weight;
            (if squared { mean.sqrt() } else { mean }, weight as u64)
        })
    };
    let online = pooled(|v| v.accuracy, false)
        .map(|(value, samples)| OnlineMetric {
            name: "accuracy",
            value,
            samples,
        })
        .or_else(|| {
            pooled(|v| v.rmse, true).map(|(value, samples)| OnlineMetric {
                name: "rmse",
                value,
                samples,
            })
        });
    (labelled, online)
}

/// What a server's archived prediction log holds for retraining, as of a time
/// (`GET /v1/models/{name}/production`): what the operator records in a retraining study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductionSummary {
    pub model: String,
    /// The cut (RFC 3339): records logged later were left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Labelled predictions of any version, one per request: the rows a retraining study adds.
    pub labelled_rows: u64,
    pub serving_version: String,
    /// Of those, the serving version's.
    pub serving_rows: u64,
    /// The serving version's online accuracy or RMSE on its rows.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub online: BTreeMap<String, f64>,
    /// Where the serving version erred most, worst first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_slices: Vec<ErrorSlice>,
}

/// Slices need this many rows before their error means much.
pub const SLICE_MIN_SAMPLES: u64 = 5;
/// Slices recorded in a retraining study.
pub const SLICE_LIMIT: usize = 5;

/// Summarises `records` (already cut at `until`) for `model`, whose serving version is
/// `serving_version` with categorical inputs `categorical`.
pub fn summarize_production(
    records: &[LogRecord],
    model: &str,
    serving_version: &str,
    categorical: &[String],
    regression: bool,
    until: Option<String>,
) -> ProductionSummary {
    let rows = join(records, Some(model));
    let serving: Vec<Labelled> = rows
        .iter()
        .filter(|row| row.model_version == serving_version)
        .cloned()
        .collect();
    ProductionSummary {
        model: model.to_string(),
        until,
        labelled_rows: rows.len() as u64,
        serving_version: serving_version.to_string(),
        serving_rows: serving.len() as u64,
        online: online_metric(&serving, regression)
            .map(|o| BTreeMap::from([(o.name.to_string(), o.value)]))
            .unwrap_or_default(),
        error_slices: error_slices(
            &serving,
            categorical,
            regression,
            SLICE_MIN_SAMPLES,
            SLICE_LIMIT,
        ),
    }
}

/// A group of production rows sharing one categorical value, and how the model did on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorSlice {
    /// The input column.
    pub column: String,
    /// Its value in this slice.
    pub value: String,
    /// Labelled rows in the slice.
    pub samples: u64,
    /// Share of wrong predictions (classification) or RMSE (regression) in the slice.
    pub error: f64,
    /// The same over every labelled row, for comparison.
    pub overall_error: f64,
}

/// The `limit` slices (by the values of `columns`, each with at least `min_samples` rows)
/// where the model erred most, worst first.
pub fn error_slices(
    rows: &[Labelled],
    columns: &[String],
    regression: bool,
    min_samples: u64,
    limit: usize,
) -> Vec<ErrorSlice> {
    let row_error = |row: &Labelled| -> Option<f64> {
        if regression {
            Some((as_number(&row.prediction)? - as_number(&row.actual)?).powi(2))
        } else {
            Some(if is_correct(&row.prediction, &row.actual) {
                0.0
            } else {
                1.0
            })
        }
    };
    let summarise = |errors: &[f64]| {
        let mean = errors.iter().sum::<f64>() / errors.len().max(1) as f64;
        if regression { mean.sqrt() } else { mean }
    };
    let all: Vec<f64> = rows.iter().filter_map(row_error).collect();
    let overall_error = summarise(&all);
    let mut groups: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for row in rows {
        let Some(error) = row_error(row) else {
            continue;
        };
        for column in columns {
            let value = match row.inputs.get(column) {
                None | Some(Value::Null) => "(missing)".to_string(),
                Some(value) => label_text(value),
            };
            groups
                .entry((column.clone(), value))
                .or_default()
                .push(error);
        }
    }
    let mut slices: Vec<ErrorSlice> = groups
        .into_iter()
        .filter(|(_, errors)| errors.len() as u64 >= min_samples.max(1))
        .map(|((column, value), errors)| ErrorSlice {
            column,
            value,
            samples: errors.len() as u64,
            error: summarise(&errors),
            overall_error,
        })
        .collect();
    slices.sort_by(|a, b| {
        b.error
            .total_cmp(&a.error)
            .then_with(|| b.samples.cmp(&a.samples))
            .then_with(|| (&a.column, &a.value).cmp(&(&b.column, &b.value)))
    });
    slices.truncate(limit);
    slices
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const LOG: &str = r#"{"kind":"prediction","request_id":"a","time":"t1","model":"m","model_version":"v1","inputs":{"island":"Biscoe","mass":4200},"prediction":"Adelie","probabilities":{"Adelie":0.9}}
{"kind":"prediction","request_id":"a","time":"t1","model":"m","model_version":"v2","inputs":{"island":"Biscoe","mass":4200},"prediction":"Gentoo","shadow":true}
{"kind":"prediction","request_id":"b","time":"t2","model":"m","model_version":"v1","inputs":{"island":"Dream","mass":3800},"prediction":"Adelie"}
{"kind":"feedback","request_id":"a","time":"t3","model":"m","model_version":"v1","actual":"Adelie"}
{"kind":"feedback","request_id":"a","time":"t4","model":"m","model_version":"v1","actual":"Gentoo"}
{"kind":"feedback","request_id":"zzz","time":"t5","model":"m","model_version":null,"actual":"Gentoo"}
{"kind":"prediction","request_id":"c","time":"t6","model":"other","model_version":"x","inputs":{},"prediction":1}
{"kind":"feedback","request_id":"c","time":"t7","model":"other","actual":1}
{"kind":"prediction","request_id":"torn"#;

    #[test]
    fn predictions_join_their_latest_feedback_once() {
        let (records, skipped) = parse_log(LOG);
        assert_eq!((records.len(), skipped), (8, 1));
        let rows = join(&records, Some("m"));
        assert_eq!(
            rows.len(),
            1,
            "b has no feedback, zzz no prediction, c is another model"
        );
        let row = &rows[0];
        assert_eq!(row.request_id, "a");
        assert_eq!(
            row.actual,
            Value::from("Gentoo"),
            "the later label corrects the first"
        );
        assert_eq!(row.shadow, Some(("v2".into(), Value::from("Gentoo"))));
        assert_eq!(join(&records, None).len(), 2);

        let metric = online_metric(&rows, false).unwrap();
        assert_eq!(
            (metric.name, metric.value, metric.samples),
            ("accuracy", 0.0, 1)
        );
        assert_eq!(
            paired_outcomes(&rows, false, "v2"),
            vec![PairedOutcome::Class {
                serving: false,
                candidate: true
            }]
        );
        assert!(paired_outcomes(&rows, false, "v3").is_empty());
    }

    #[test]
    fn replicas_stats_combine_weighted_by_their_windows() {
        let stats = |accuracy: f64, window: u64, labelled: u64| ServerStats {
            model: "m".into(),
            versions: vec![VersionStats {
                model_version: "v1".into(),
                role: Some("primary".into()),
                predictions: 1000,
                labelled,
                window,
                accuracy: Some(accuracy),
                rmse: None,
                mae: None,
                paired: None,
            }],
        };
        let (labelled, online) = combine(&[stats(0.9, 100, 150), stats(0.6, 50, 60)], "v1");
        assert_eq!(labelled, 210);
        let online = online.unwrap();
        assert_eq!((online.name, online.samples), ("accuracy", 150));
        assert!((online.value - 0.8).abs() < 1e-12);
        assert_eq!(combine(&[stats(0.9, 100, 150)], "v2"), (0, None));
    }

    #[test]
    fn labels_compare_across_json_types() {
        assert!(is_correct(&Value::from(1), &Value::from("1")));
        assert!(is_correct(&Value::from(1.0), &Value::from(1)));
        assert!(!is_correct(&Value::from("1"), &Value::from("2")));
    }

    fn row(island: &str, prediction: f64, actual: f64) -> Labelled {
        Labelled {
            request_id: String::new(),
            time: String::new(),
            model_version: "v1".into(),
            inputs: serde_json::json!({"island": island})
                .as_object()
                .unwrap()
                .clone(),
            prediction: Value::from(prediction),
            actual: Value::from(actual),
            shadow: None,
        }
    }

    #[test]
    fn slices_rank_where_the_model_errs_most() {
        let mut rows: Vec<Labelled> = (0..10).map(|_| row("Biscoe", 1.0, 1.0)).collect();
        rows.extend((0..10).map(|_| row("Dream", 1.0, 4.0)));
        rows.extend((0..2).map(|_| row("Torgersen", 1.0, 9.0)));
        let slices = error_slices(&rows, &["island".to_string()], true, 5, 10);
        assert_eq!(slices.len(), 2, "Torgersen has too few rows to judge");
        assert_eq!((slices[0].value.as_str(), slices[0].error), ("Dream", 3.0));
        assert_eq!(slices[1].error, 0.0);
        let rmse = online_metric(&rows, true).unwrap();
        assert_eq!(rmse.name, "rmse");
        assert!((slices[0].overall_error - rmse.value).abs() < 1e-12);
    }

    #[test]
    fn a_cut_keeps_records_logged_by_then_and_drops_unplaceable_ones() {
        let log = r#"{"kind":"prediction","request_id":"a","time":"2026-11-30T10:00:00Z","model":"m","model_version":"v1","inputs":{},"prediction":1}
{"kind":"feedback","request_id":"a","time":"2026-11-30T10:05:00Z","model":"m","actual":1}
{"kind":"prediction","request_id":"b","time":"2026-11-30T10:01:00Z","model":"m","model_version":"v1","inputs":{},"prediction":0}
{"kind":"feedback","request_id":"b","time":"2026-11-30T10:20:00Z","model":"m","actual":1}
{"kind":"feedback","request_id":"a","time":"yesterday","model":"m","actual":0}"#;
        let (records, _) = parse_log(log);
        let until: Timestamp = "2026-11-30T10:10:00Z".parse().unwrap();
        let kept = logged_until(records.clone(), Some(until));
        let rows = join(&kept, Some("m"));
        // b's label came after the cut; a's unplaceable relabel is ignored.
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].request_id.as_str(), &rows[0].actual),
            ("a", &Value::from(1))
        );
        assert_eq!(logged_until(records.clone(), None), records);
    }

    #[test]
    fn paired_counts_from_replicas_rebuild_the_outcomes() {
        let replica = |paired: PairedStats| ServerStats {
            model: "m".into(),
            versions: vec![VersionStats {
                model_version: "v2".into(),
                role: Some("shadow".into()),
                predictions: 10,
                labelled: paired.samples,
                window: paired.samples,
                accuracy: None,
                rmse: None,
                mae: None,
                paired: Some(paired),
            }],
        };
        let stats = [
            replica(PairedStats {
                serving_version: "v1".into(),
                samples: 6,
                both_right: 3,
                only_serving: 1,
                only_candidate: 2,
                ..PairedStats::default()
            }),
            replica(PairedStats {
                serving_version: "v1".into(),
                samples: 4,
                only_candidate: 3,
                neither_right: 1,
                ..PairedStats::default()
            }),
            // Paired with an older primary: not evidence against v1.
            replica(PairedStats {
                serving_version: "v0".into(),
                samples: 9,
                only_serving: 9,
                ..PairedStats::default()
            }),
        ];
        let outcomes = paired_from_stats(&stats, "v1", "v2");
        assert_eq!(outcomes.len(), 10);
        let count = |s: bool, c: bool| {
            outcomes
                .iter()
                .filter(|o| {
                    **o == PairedOutcome::Class {
                        serving: s,
                        candidate: c,
                    }
                })
                .count()
        };
        assert_eq!(
            (
                count(true, true),
                count(true, false),
                count(false, true),
                count(false, false)
            ),
            (3, 1, 5, 1)
        );
        assert!(paired_from_stats(&stats, "v1", "v3").is_empty());

        let regression = [replica(PairedStats {
            serving_version: "v1".into(),
            samples: 2,
            absolute_errors: vec![[1.0, 0.5], [2.0, 2.5]],
            ..PairedStats::default()
        })];
        assert_eq!(
            paired_from_stats(&regression, "v1", "v2"),
            vec![
                PairedOutcome::Value {
                    serving: 1.0,
                    candidate: 0.5
                },
                PairedOutcome::Value {
                    serving: 2.0,
                    candidate: 2.5
                }
            ]
        );
    }

    #[test]
    fn a_production_summary_counts_every_version_and_slices_the_serving_one() {
        let (records, _) = parse_log(LOG);
        let summary = summarize_production(
            &records,
            "m",
            "v1",
            &["island".to_string()],
            false,
            Some("t9".into()),
        );
        assert_eq!((summary.labelled_rows, summary.serving_rows), (1, 1));
        assert_eq!(summary.online.get("accuracy"), Some(&0.0));
        let other = summarize_production(&records, "m", "v9", &[], false, None);
        assert_eq!((other.labelled_rows, other.serving_rows), (1, 0));
        assert!(other.online.is_empty() && other.error_slices.is_empty());
    }
}
