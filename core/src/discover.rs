//! Data discovery: from samples of the tables in a folder or bucket, each table's profile, the
//! columns worth predicting (with the task each implies and why), the columns that join tables,
//! and a draft Study per proposed target. `flywheel discover` reads the tables; everything it
//! decides is here, without I/O.
//!
//! The rules are documented for users in docs/discover.md; keep the two in step.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::api::{
    Algorithm, Budget, DataFormat, DatasetSpec, EarlyStopping, Metric, Objective, Study, StudySpec,
};
use crate::infer::{ColumnType, infer_column, looks_like_id, numbers_are_classes, parse_number};
use crate::search::space::Task;
use crate::validate::{format_from_uri, study_name_errors};

/// Rows read from one table when no limit is given.
pub const DEFAULT_SAMPLE_ROWS: usize = 50_000;
/// Least share of a column's distinct values found in another table's key to call it a join.
pub const DEFAULT_MIN_OVERLAP: f64 = 0.5;
/// Target proposals kept per table, best first.
pub const DEFAULT_MAX_TARGETS: usize = 3;
/// Trials in a drafted study: enough for the search to compare every family a few times.
pub const DRAFT_MAX_TRIALS: u32 = 20;

/// Least points a column needs (see [`propose_targets`]) to be proposed as a target.
const MIN_TARGET_SCORE: u32 = 2;
/// A categorical column with more classes than this is not proposed as a target.
const MAX_PROPOSED_CLASSES: usize = 50;
/// A numeric column correlated at least this strongly with another has signal to learn from.
const MIN_SIGNAL_CORRELATION: f64 = 0.3;
/// ... and one correlated more strongly than this is a copy or a derived column, not a target.
const MAX_SIGNAL_CORRELATION: f64 = 0.99;
/// Longest drafted study name, leaving room for trial suffixes.
const MAX_DRAFT_NAME_LEN: usize = 40;

/// Words that name a label, whole or as the last word of a column name (`is_fraud`,
/// `sale_price`).
pub const LABEL_WORDS: &[&str] = &[
    "target",
    "label",
    "labels",
    "class",
    "y",
    "outcome",
    "churn",
    "churned",
    "response",
    "result",
    "income",
    "diagnosis",
    "species",
    "survived",
    "fraud",
    "default",
    "defaulted",
    "price",
    "salary",
    "wage",
    "progression",
    "grade",
    "rating",
    "quality",
    "revenue",
    "sales",
];

/// A table as read: its column names and the cells of the first `rows` rows (`None` is
/// missing), with the table's total row count.
#[derive(Clone, Debug, PartialEq)]
pub struct TableSample {
    /// Path or URI, as the user will put it in `spec.dataset.uri`.
    pub location: String,
    /// `csv` or `parquet`.
    pub format: String,
    pub names: Vec<String>,
    /// One vector per column, each as long as the sample.
    pub columns: Vec<Vec<Option<String>>>,
    /// Rows in the whole table (at least the sample's).
    pub total_rows: u64,
}

impl TableSample {
    pub fn sample_rows(&self) -> usize {
        self.columns.first().map_or(0, Vec::len)
    }
}

/// How discovery decides.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscoverOptions {
    pub max_targets_per_table: usize,
    pub min_overlap: f64,
}

impl Default for DiscoverOptions {
    fn default() -> Self {
        DiscoverOptions {
            max_targets_per_table: DEFAULT_MAX_TARGETS,
            min_overlap: DEFAULT_MIN_OVERLAP,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnProfile {
    pub name: String,
    /// The type by the trainer's rules (core::infer).
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    /// Share of the sampled rows with no value.
    pub missing_rate: f64,
    /// Distinct values in the sample.
    pub distinct: usize,
    /// Unique and never missing in the sample, and not a fractional number.
    pub candidate_key: bool,
    /// Why the type, in words.
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableProfile {
    pub location: String,
    /// The file name without its extension: how joins and drafts name the table.
    pub name: String,
    pub format: String,
    /// Rows in the table.
    pub rows: u64,
    /// Rows profiled: all of them unless the table is larger than the sample limit.
    pub sample_rows: usize,
    pub sampled: bool,
    pub columns: Vec<ColumnProfile>,
    pub candidate_keys: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetProposal {
    /// The table's location.
    pub table: String,
    pub column: String,
    /// The task the column implies: binary, multiclass or regression.
    pub task: Task,
    /// Distinct labels, for classification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<usize>,
    /// Points from the rules that matched; the highest is the most likely target.
    pub score: u32,
    /// The rules that matched, in words.
    pub why: Vec<String>,
}

/// `from_table.from_column` values found in `to_table.to_column`, a key of its table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Join {
    pub from_table: String,
    pub from_column: String,
    pub to_table: String,
    pub to_column: String,
    /// Distinct values of the from column (in the sample).
    pub distinct: usize,
    /// Of those, how many the key holds.
    pub matched: usize,
    /// matched / distinct.
    pub overlap: f64,
}

/// A file that could not be read as a table, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    pub location: String,
    pub reason: String,
}

/// Everything `flywheel discover` found under one root.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Discovery {
    pub root: String,
    /// Rows profiled per table at most.
    pub sample_limit: usize,
    pub tables: Vec<TableProfile>,
    pub targets: Vec<TargetProposal>,
    pub joins: Vec<Join>,
    pub skipped: Vec<Skipped>,
}

/// Profiles every table, proposes targets and finds joins.
pub fn discover(
    root: &str,
    sample_limit: usize,
    samples: &[TableSample],
    skipped: Vec<Skipped>,
    options: &DiscoverOptions,
) -> Discovery {
    let tables: Vec<TableProfile> = samples.iter().map(profile_table).collect();
    let targets = samples
        .iter()
        .zip(&tables)
        .flat_map(|(sample, profile)| {
            propose_targets(sample, profile, options.max_targets_per_table)
        })
        .collect();
    let joins = find_joins(samples, &tables, options.min_overlap);
    Discovery {
        root: root.to_string(),
        sample_limit,
        tables,
        targets,
        joins,
        skipped,
    }
}

/// The file name of a location without folders and extension.
pub fn table_name(location: &str) -> String {
    let file = location.rsplit(['/', '\\']).next().unwrap_or(location);
    let file = file.strip_suffix(".gz").unwrap_or(file);
    match file.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem.to_string(),
        _ => file.to_string(),
    }
}

fn cells(column: &[Option<String>]) -> Vec<Option<&str>> {
    column.iter().map(Option::as_deref).collect()
}

pub fn profile_table(sample: &TableSample) -> TableProfile {
    let rows = sample.sample_rows();
    let columns: Vec<ColumnProfile> = sample
        .names
        .iter()
        .zip(&sample.columns)
        .map(|(name, column)| {
            let inferred = infer_column(name, &cells(column));
            let candidate_key = rows >= 2
                && inferred.missing == 0
                && inferred.distinct == rows
                && !matches!(
                    inferred.column_type,
                    ColumnType::NumericBoolean | ColumnType::WordBoolean
                )
                && column
                    .iter()
                    .flatten()
                    .all(|v| parse_number(v).is_none_or(|n| n.fract() == 0.0));
            ColumnProfile {
                name: name.clone(),
                column_type: inferred.column_type,
                missing_rate: if rows == 0 {
                    0.0
                } else {
                    inferred.missing as f64 / rows as f64
                },
                distinct: inferred.distinct,
                candidate_key,
                reason: inferred.reason,
            }
        })
        .collect();
    TableProfile {
        location: sample.location.clone(),
        name: table_name(&sample.location),
        format: sample.format.clone(),
        rows: sample.total_rows.max(rows as u64),
        sample_rows: rows,
        sampled: (rows as u64) < sample.total_rows,
        candidate_keys: columns
            .iter()
            .filter(|c| c.candidate_key)
            .map(|c| c.name.clone())
            .collect(),
        columns,
    }
}

/// Whether a column name says "label": the whole name or its last word is one of
/// [`LABEL_WORDS`].
pub fn named_like_label(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let last = lower
        .rsplit(|c: char| !c.is_ascii_alphanumeric())
        .find(|w| !w.is_empty())
        .unwrap_or_default();
    LABEL_WORDS.contains(&lower.as_str()) || LABEL_WORDS.contains(&last)
}

/// The columns worth predicting, best first, at most `max` of them. A column scores points:
///
/// - 3: named like a label ([`named_like_label`]);
/// - 1: categorical (text, boolean or integer codes) with 2 to 50 classes;
/// - 1: the only text column among numeric ones;
/// - 1: the last column, where tables conventionally keep the label;
/// - 1: numeric with clear signal: correlated with another column (0.3 ≤ |r| < 0.99).
///
/// Identifiers, constants and mostly-missing columns never qualify; a column needs 2 points.
pub fn propose_targets(
    sample: &TableSample,
    profile: &TableProfile,
    max: usize,
) -> Vec<TargetProposal> {
    let text_columns = profile
        .columns
        .iter()
        .filter(|c| c.column_type == ColumnType::Text)
        .count();
    let numeric_columns = profile
        .columns
        .iter()
        .filter(|c| {
            matches!(
                c.column_type,
                ColumnType::Numeric | ColumnType::IntegerCodes | ColumnType::NumericBoolean
            )
        })
        .count();
    let last = profile.columns.len().saturating_sub(1);
    let mut proposals = Vec::new();
    for (index, column) in profile.columns.iter().enumerate() {
        let Some((task, classes)) = implied_task(column, &sample.columns[index]) else {
            continue;
        };
        let mut score = 0;
        let mut why = Vec::new();
        if named_like_label(&column.name) {
            score += 3;
            why.push(format!("named like a label ({:?})", column.name));
        }
        if let Some(classes) = classes
            && column.column_type != ColumnType::Numeric
        {
            if classes > MAX_PROPOSED_CLASSES {
                continue;
            }
            score += 1;
            why.push(format!("categorical with {classes} classes"));
        }
        if column.column_type == ColumnType::Text && text_columns == 1 && numeric_columns > 0 {
            score += 1;
            why.push("the only text column among numeric ones".into());
        }
        if index == last {
            score += 1;
            why.push("the last column, where tables conventionally keep the label".into());
        }
        if task == Task::Regression
            && let Some((other, r)) = strongest_correlation(sample, profile, index)
            && (MIN_SIGNAL_CORRELATION..MAX_SIGNAL_CORRELATION).contains(&r.abs())
        {
            score += 1;
            why.push(format!(
                "numeric with clear signal: |r| = {:.2} with {other:?}",
                r.abs()
            ));
        }
        if score >= MIN_TARGET_SCORE {
            proposals.push(TargetProposal {
                table: profile.location.clone(),
                column: column.name.clone(),
                task,
                classes,
                score,
                why,
            });
        }
    }
    // Stable: equal scores keep the table's column order.
    proposals.sort_by_key(|p| std::cmp::Reverse(p.score));
    proposals.truncate(max);
    proposals
}

/// The task a column implies as a target, with its class count, by the trainer's auto rule;
/// `None` for columns the trainer cannot learn.
fn implied_task(column: &ColumnProfile, cells: &[Option<String>]) -> Option<(Task, Option<usize>)> {
    let classification = |classes: usize| {
        let task = if classes == 2 {
            Task::Binary
        } else {
            Task::Multiclass
        };
        Some((task, Some(classes)))
    };
    match column.column_type {
        ColumnType::NumericBoolean | ColumnType::WordBoolean => classification(2),
        ColumnType::IntegerCodes | ColumnType::Text => classification(column.distinct),
        ColumnType::Numeric => {
            let numbers: Vec<f64> = cells
                .iter()
                .flatten()
                .filter_map(|c| parse_number(c))
                .collect();
            if numbers_are_classes(&numbers) {
                classification(column.distinct)
            } else {
                Some((Task::Regression, None))
            }
        }
        ColumnType::Empty
        | ColumnType::MostlyMissing
        | ColumnType::Constant
        | ColumnType::Identifier => None,
    }
}

/// The Pearson correlation of column `index` with the numeric column it tracks most closely
/// (by |r|), over rows where both have a value.
fn strongest_correlation<'a>(
    sample: &TableSample,
    profile: &'a TableProfile,
    index: usize,
) -> Option<(&'a str, f64)> {
    let values = |i: usize| -> Vec<Option<f64>> {
        sample.columns[i]
            .iter()
            .map(|c| c.as_deref().and_then(parse_number))
            .collect()
    };
    let target = values(index);
    profile
        .columns
        .iter()
        .enumerate()
        .filter(|(i, c)| {
            *i != index
                && matches!(
                    c.column_type,
                    ColumnType::Numeric | ColumnType::IntegerCodes | ColumnType::NumericBoolean
                )
        })
        .filter_map(|(i, c)| Some((c.name.as_str(), pearson(&target, &values(i))?)))
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
}

fn pearson(x: &[Option<f64>], y: &[Option<f64>]) -> Option<f64> {
    let pairs: Vec<(f64, f64)> = x
        .iter()
        .zip(y)
        .filter_map(|(a, b)| Some(((*a)?, (*b)?)))
        .collect();
    if pairs.len() < 3 {
        return None;
    }
    let n = pairs.len() as f64;
    let (mx, my) = pairs
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (a, b)| (sx + a / n, sy + b / n));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in &pairs {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// Values compared across tables: an integer written "7" or "7.0" is one value.
fn key_value(cell: &str) -> String {
    match parse_number(cell) {
        Some(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{}", n as i64),
        _ => cell.trim().to_string(),
    }
}

/// Columns of one table whose values are found in a key of another: for every column that is
/// key-like (a candidate key, or named like an identifier) and every candidate key of another
/// table, the share of the column's distinct values the key holds. Pairs reaching
/// `min_overlap` with at least two shared values are joins; when both sides are keys (one to
/// one), the pair is reported once, from the earlier table.
pub fn find_joins(samples: &[TableSample], tables: &[TableProfile], min_overlap: f64) -> Vec<Join> {
    let value_set = |table: usize, column: usize| -> HashSet<String> {
        samples[table].columns[column]
            .iter()
            .flatten()
            .map(|c| key_value(c))
            .collect()
    };
    let mut sets: HashMap<(usize, usize), HashSet<String>> = HashMap::new();
    let mut joins = Vec::new();
    for (from, from_table) in tables.iter().enumerate() {
        for (from_column, column) in from_table.columns.iter().enumerate() {
            let key_like = column.candidate_key
                || (looks_like_id(&column.name) && column.column_type != ColumnType::Constant);
            if !key_like || column.distinct < 2 {
                continue;
            }
            for (to, to_table) in tables.iter().enumerate() {
                if to == from {
                    continue;
                }
                for (to_column, key) in to_table.columns.iter().enumerate() {
                    if !key.candidate_key || (column.candidate_key && to < from) {
                        continue;
                    }
                    for (table, column) in [(from, from_column), (to, to_column)] {
                        sets.entry((table, column))
                            .or_insert_with(|| value_set(table, column));
                    }
                    let (Some(from_set), Some(to_set)) =
                        (sets.get(&(from, from_column)), sets.get(&(to, to_column)))
                    else {
                        continue;
                    };
                    let matched = from_set.iter().filter(|v| to_set.contains(*v)).count();
                    let overlap = matched as f64 / from_set.len().max(1) as f64;
                    if matched >= 2 && overlap >= min_overlap {
                        joins.push(Join {
                            from_table: from_table.location.clone(),
                            from_column: column.name.clone(),
                            to_table: to_table.location.clone(),
                            to_column: key.name.clone(),
                            distinct: from_set.len(),
                            matched,
                            overlap,
                        });
                    }
                }
            }
        }
    }
    joins.sort_by(|a, b| b.overlap.total_cmp(&a.overlap));
    joins
}

/// A study name from the table and column: lowercase letters, digits and dashes, starting with
/// a letter, short enough for trial names.
pub fn draft_name(table: &str, column: &str) -> String {
    let mut name = String::new();
    for c in format!("{table}-{column}").chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let mut name = name.trim_matches('-').to_string();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert_str(0, "t-");
    }
    name.truncate(MAX_DRAFT_NAME_LEN);
    let name = name.trim_end_matches('-').to_string();
    if study_name_errors(&name, DRAFT_MAX_TRIALS).is_empty() {
        name
    } else {
        "discovered".to_string()
    }
}

/// A draft Study for a proposal: the table and target, the implied task with its usual metric
/// (accuracy for classification, RMSE for regression), every family that fits, TPE with a
/// fixed seed, and a small budget to start from.
pub fn draft_study(proposal: &TargetProposal) -> Study {
    let metric = if proposal.task == Task::Regression {
        Metric::Rmse
    } else {
        Metric::Accuracy
    };
    let format = match format_from_uri(&proposal.table) {
        Some(_) => DataFormat::Auto,
        None if proposal.table.ends_with("parquet") => DataFormat::Parquet,
        None => DataFormat::Csv,
    };
    let spec = StudySpec {
        dataset: DatasetSpec {
            uri: proposal.table.clone(),
            target: proposal.column.clone(),
            task: proposal.task,
            format,
            feedback: Vec::new(),
        },
        objective: Objective { metric, goal: None },
        search_space: Vec::new(),
        algorithm: Algorithm {
            seed: Some(1),
            ..Algorithm::default()
        },
        early_stopping: EarlyStopping::default(),
        budget: Budget {
            max_trials: DRAFT_MAX_TRIALS,
            parallelism: None,
            max_failed_trials: None,
            timeout_seconds: None,
            trial_timeout_seconds: None,
        },
        constraints: Default::default(),
        trial: Default::default(),
        promotion: None,
        warm_start: None,
        origin: None,
        evaluation: None,
        ensemble: None,
    };
    Study::new(
        &draft_name(&table_name(&proposal.table), &proposal.column),
        spec,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::validate_study;

    fn sample(location: &str, header: &[&str], rows: &[Vec<String>]) -> TableSample {
        let columns = (0..header.len())
            .map(|c| {
                rows.iter()
                    .map(|row| {
                        let cell = row[c].clone();
                        (!crate::infer::is_missing(&cell)).then_some(cell)
                    })
                    .collect()
            })
            .collect();
        TableSample {
            location: location.into(),
            format: "csv".into(),
            names: header.iter().map(|h| h.to_string()).collect(),
            columns,
            total_rows: rows.len() as u64,
        }
    }

    fn customers_and_orders() -> Vec<TableSample> {
        let customers: Vec<Vec<String>> = (1..=40)
            .map(|i| {
                vec![
                    i.to_string(),
                    ["north", "south", "east"][i % 3].to_string(),
                    format!("{}", 20 + i % 37),
                ]
            })
            .collect();
        // Customers 31..=50 ordered but only 1..=40 exist: 30 of 40 distinct values match.
        let orders: Vec<Vec<String>> = (0..120)
            .map(|i| {
                vec![
                    (5000 + i).to_string(),
                    (11 + i % 40).to_string(),
                    format!("{:.2}", 3.5 + (i % 13) as f64 * 1.25),
                ]
            })
            .collect();
        vec![
            sample(
                "data/customers.csv",
                &["customer_id", "region", "age"],
                &customers,
            ),
            sample(
                "data/orders.csv",
                &["order_id", "customer_id", "amount"],
                &orders,
            ),
        ]
    }

    #[test]
    fn profiles_count_missing_distinct_and_keys() {
        let rows: Vec<Vec<String>> = (0..30)
            .map(|i| {
                vec![
                    format!("k{i}"),
                    if i % 5 == 0 {
                        String::new()
                    } else {
                        format!("{}.5", i % 4)
                    },
                    (i % 2).to_string(),
                ]
            })
            .collect();
        let mut table = sample("s3://b/p/t.csv", &["key", "x", "flag"], &rows);
        table.total_rows = 1000;
        let profile = profile_table(&table);
        assert_eq!(profile.name, "t");
        assert_eq!(
            (profile.rows, profile.sample_rows, profile.sampled),
            (1000, 30, true)
        );
        assert_eq!(profile.candidate_keys, vec!["key"]);
        let x = &profile.columns[1];
        assert_eq!(x.column_type, ColumnType::Numeric);
        assert!((x.missing_rate - 0.2).abs() < 1e-12);
        assert_eq!(x.distinct, 4);
        assert_eq!(profile.columns[2].column_type, ColumnType::NumericBoolean);
        assert!(!profile.columns[2].candidate_key);
    }

    #[test]
    fn join_keys_are_found_with_their_overlap() {
        let samples = customers_and_orders();
        let tables: Vec<TableProfile> = samples.iter().map(profile_table).collect();
        let joins = find_joins(&samples, &tables, DEFAULT_MIN_OVERLAP);
        assert_eq!(joins.len(), 1, "{joins:?}");
        let join = &joins[0];
        assert_eq!(
            (join.from_table.as_str(), join.from_column.as_str()),
            ("data/orders.csv", "customer_id")
        );
        assert_eq!(
            (join.to_table.as_str(), join.to_column.as_str()),
            ("data/customers.csv", "customer_id")
        );
        assert_eq!((join.matched, join.distinct), (30, 40));
        assert!((join.overlap - 0.75).abs() < 1e-12);
        assert!(find_joins(&samples, &tables, 0.8).is_empty());
    }

    #[test]
    fn a_label_name_beats_position_and_implies_the_task() {
        let rows: Vec<Vec<String>> = (0..60)
            .map(|i| {
                let x = i as f64 / 3.0;
                vec![
                    format!("{x:.3}"),
                    ["yes", "no"][i % 2].to_string(),
                    format!("{:.3}", 2.0 * x + (i % 7) as f64),
                    ["a", "b", "c", "d", "e", "f", "g"][i % 7].to_string(),
                ]
            })
            .collect();
        let table = sample("t.csv", &["x", "churn", "spend", "segment"], &rows);
        let profile = profile_table(&table);
        let proposals = propose_targets(&table, &profile, 5);
        let found: Vec<(&str, Task, u32)> = proposals
            .iter()
            .map(|p| (p.column.as_str(), p.task, p.score))
            .collect();
        // churn: named (3) + categorical (1); segment: categorical (1) + the only text column (1)
        // + last (1); spend and x: one point each for their signal, not enough.
        assert_eq!(
            found,
            vec![("churn", Task::Binary, 4), ("segment", Task::Multiclass, 3)]
        );
        assert!(proposals[0].why[0].contains("named like a label"));
        assert_eq!(propose_targets(&table, &profile, 1).len(), 1);
    }

    #[test]
    fn a_numeric_target_with_signal_is_regression() {
        let rows: Vec<Vec<String>> = (0..50)
            .map(|i| {
                vec![
                    (i / 2).to_string(),
                    format!("{}", 10.0 + i as f64 * 0.5 + (i % 7) as f64),
                ]
            })
            .collect();
        let table = sample("t.csv", &["a", "price"], &rows);
        let profile = profile_table(&table);
        let proposals = propose_targets(&table, &profile, 3);
        assert_eq!(proposals[0].column, "price");
        assert_eq!(proposals[0].task, Task::Regression);
        assert_eq!(proposals[0].score, 5, "{:?}", proposals[0].why);
        assert!(
            proposals[0]
                .why
                .iter()
                .any(|w| w.contains("clear signal") && w.contains("with \"a\"")),
            "{:?}",
            proposals[0].why
        );
    }

    #[test]
    fn identifiers_are_never_targets() {
        let rows: Vec<Vec<String>> = (0..30).map(|i| vec![i.to_string(), "1".into()]).collect();
        let table = sample("t.csv", &["a", "label_id"], &rows);
        let profile = profile_table(&table);
        assert!(propose_targets(&table, &profile, 3).is_empty());
    }

    #[test]
    fn drafts_pass_the_study_rules() {
        let samples = customers_and_orders();
        let discovery = discover(
            "data",
            100,
            &samples,
            Vec::new(),
            &DiscoverOptions::default(),
        );
        assert!(!discovery.targets.is_empty());
        for proposal in &discovery.targets {
            let study = draft_study(proposal);
            assert_eq!(validate_study(&study), Vec::new(), "{proposal:?}");
            assert_eq!(study.spec.dataset.target, proposal.column);
        }
    }

    #[test]
    fn draft_names_are_valid_study_names() {
        assert_eq!(
            draft_name("Orders 2024", "Customer ID"),
            "orders-2024-customer-id"
        );
        assert_eq!(draft_name("2024", "y"), "t-2024-y");
        let long = draft_name(&"x".repeat(80), "target");
        assert!(long.len() <= MAX_DRAFT_NAME_LEN);
        assert!(study_name_errors(&long, DRAFT_MAX_TRIALS).is_empty());
    }

    #[test]
    fn table_names_drop_folders_and_extensions() {
        assert_eq!(table_name("s3://b/x/orders.parquet"), "orders");
        assert_eq!(table_name("/d/a.b.csv.gz"), "a.b");
        assert_eq!(table_name("plain"), "plain");
    }
}
