//! Featurisation: the holdout split and the fitted transforms from raw columns to the model's
//! float matrix. Every transform here has an exact ONNX counterpart in `onnx::export`, and the
//! arithmetic is done in f32 in the same order so the exported graph reproduces it bit for bit.

use std::collections::HashMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::data::{Dataset, Feature, FeatureKind, MISSING_CODE, Target};
use crate::error::{Result, TrainerError};

/// At most this many string levels get their own code; the rest share "other".
pub const MAX_LEVELS: usize = 32;
/// Levels seen fewer times than this in training go to "other" rather than overfit.
pub const MIN_LEVEL_COUNT: usize = 2;

/// Row indices of the training and validation parts.
pub struct Split {
    pub train: Vec<usize>,
    pub valid: Vec<usize>,
}

/// A seeded holdout split, stratified by class so rare classes appear on both sides.
pub fn holdout(target: &Target, rows: usize, fraction: f64, seed: u64) -> Result<Split> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(TrainerError::bad_input(format!(
            "--holdout must lie strictly between 0 and 1, got {fraction}"
        )));
    }
    if rows < 4 {
        return Err(TrainerError::bad_input(format!(
            "dataset has {rows} rows with a target: too few to train and validate"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let groups = class_groups(target, rows);
    let mut train = Vec::with_capacity(rows);
    let mut valid = Vec::new();
    for mut group in groups {
        group.shuffle(&mut rng);
        let n = group.len();
        let mut take = (n as f64 * fraction).round() as usize;
        if n >= 2 {
            take = take.clamp(1, n - 1);
        } else {
            take = 0;
        }
        valid.extend_from_slice(&group[..take]);
        train.extend_from_slice(&group[take..]);
    }
    if valid.is_empty() || train.is_empty() {
        return Err(TrainerError::bad_input(
            "dataset is too small for a holdout split",
        ));
    }
    train.sort_unstable();
    valid.sort_unstable();
    Ok(Split { train, valid })
}

/// `folds` seeded cross-validation splits: every row is validated in exactly one fold. For
/// classification the rows of each class are shuffled and dealt to the folds in turn (class
/// after class), so each fold holds every class in proportion (counts differ by at most one)
/// and fold sizes differ by at most one; for regression all rows are shuffled and dealt.
pub fn kfold(target: &Target, rows: usize, folds: usize, seed: u64) -> Result<Vec<Split>> {
    let all: Vec<usize> = (0..rows).collect();
    kfold_within(target, &all, folds, seed)
}

/// [`kfold`] over `within` only (ascending data-row indices, e.g. the rows outside a final
/// holdout): the folds partition `within`, the other rows are in no split.
pub fn kfold_within(
    target: &Target,
    within: &[usize],
    folds: usize,
    seed: u64,
) -> Result<Vec<Split>> {
    let rows = within.len();
    if folds < 2 {
        return Err(TrainerError::bad_input(format!(
            "--folds must be 0 (one holdout split) or at least 2, got {folds}"
        )));
    }
    if rows < 2 * folds {
        return Err(TrainerError::bad_input(format!(
            "dataset has {rows} rows with a target: too few for {folds} folds (at least two rows \
             per fold); lower --folds or use a holdout split (--folds 0)"
        )));
    }
    let universe = within.last().map_or(0, |last| last + 1);
    let mut member = vec![false; universe];
    for &row in within {
        member[row] = true;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = Vec::with_capacity(rows);
    for mut group in class_groups(target, universe) {
        group.retain(|&row| member.get(row).copied().unwrap_or(false));
        group.shuffle(&mut rng);
        order.extend(group);
    }
    let mut valid: Vec<Vec<usize>> = vec![Vec::new(); folds];
    for (position, row) in order.into_iter().enumerate() {
        valid[position % folds].push(row);
    }
    Ok(valid
        .into_iter()
        .map(|mut valid| {
            valid.sort_unstable();
            let mut held = vec![false; universe];
            for &row in &valid {
                held[row] = true;
            }
            let train = within.iter().copied().filter(|&row| !held[row]).collect();
            Split { train, valid }
        })
        .collect())
}

/// Row indices by class (one group for regression), ascending within each group.
fn class_groups(target: &Target, rows: usize) -> Vec<Vec<usize>> {
    match target {
        Target::Classes { classes, y } => {
            let mut groups = vec![Vec::new(); classes.len()];
            for (row, &class) in y.iter().enumerate() {
                groups[class as usize].push(row);
            }
            groups
        }
        Target::Values { .. } => vec![(0..rows).collect()],
    }
}

/// At most `count` rows of `0..rows`, seeded, ascending: the rows the parity gate and the latency
/// probe use when the model is refit on every row (k-fold), where no row is held out.
pub fn sample_rows(rows: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut all: Vec<usize> = (0..rows).collect();
    if rows > count {
        all.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        all.truncate(count);
        all.sort_unstable();
    }
    all
}

/// How one raw column becomes model features.
#[derive(Clone, Debug)]
pub enum ColumnPlan {
    /// Numeric or boolean: impute, optionally standardise.
    Number {
        impute: f32,
        indicator: bool,
        /// `(offset, scale)`: `(x - offset) * scale`, as ONNX's Scaler computes it.
        scale: Option<(f32, f32)>,
    },
    /// Integer category codes: impute the mode; one-hot over `onehot` values for linear models,
    /// the code itself for trees.
    Codes {
        impute: f32,
        indicator: bool,
        onehot: Option<Vec<f32>>,
    },
    /// String categories mapped to integer codes: kept levels 0..k, unseen/rare `other`,
    /// missing `missing` (its own code when training saw missing values, else the mode's).
    Strings {
        levels: Vec<String>,
        other: i64,
        missing: i64,
        /// One-hot width for linear models (codes `0..width`); `None` for trees (the code as a
        /// number).
        onehot: Option<usize>,
    },
}

#[derive(Clone, Debug)]
pub struct Featurizer {
    /// One plan per dataset feature, same order.
    pub plans: Vec<ColumnPlan>,
    pub names: Vec<String>,
}

/// Features in column-major f32.
pub struct Matrix {
    pub rows: usize,
    pub columns: Vec<Vec<f32>>,
}

impl Matrix {
    /// A matrix of equally long `columns` (no rows when there are no columns).
    pub fn from_columns(columns: Vec<Vec<f32>>) -> Matrix {
        Matrix {
            rows: columns.first().map_or(0, Vec::len),
            columns,
        }
    }

    pub fn width(&self) -> usize {
        self.columns.len()
    }
}

impl Featurizer {
    /// Fits the transforms on the training rows. `linear`: scaling and one-hot (for linear,
    /// SVM and MLP families); otherwise codes stay ordinal for trees.
    pub fn fit(features: &[Feature], train: &[usize], linear: bool) -> Featurizer {
        let mut plans = Vec::with_capacity(features.len());
        let mut names = Vec::new();
        for feature in features {
            let missing = train.iter().any(|&row| feature.is_missing(row));
            let plan = match &feature.kind {
                FeatureKind::Numeric | FeatureKind::Boolean => {
                    let present: Vec<f32> = train
                        .iter()
                        .map(|&row| feature.values[row])
                        .filter(|v| !v.is_nan())
                        .collect();
                    let impute = if feature.kind == FeatureKind::Boolean {
                        mode(&present)
                    } else {
                        median(present)
                    };
                    let scale = (linear && feature.kind == FeatureKind::Numeric).then(|| {
                        let values = train.iter().map(|&row| {
                            let v = feature.values[row];
                            f64::from(if v.is_nan() { impute } else { v })
                        });
                        let (mean, std) = mean_std(values);
                        let scale = if std > 1e-12 { 1.0 / std } else { 1.0 };
                        (mean as f32, scale as f32)
                    });
                    names.push(feature.name.clone());
                    ColumnPlan::Number {
                        impute,
                        indicator: missing,
                        scale,
                    }
                }
                FeatureKind::IntegerCodes => {
                    let present: Vec<f32> = train
                        .iter()
                        .map(|&row| feature.values[row])
                        .filter(|v| !v.is_nan())
                        .collect();
                    let impute = mode(&present);
                    let onehot = linear.then(|| {
                        let mut values = present.clone();
                        values.sort_by(f32::total_cmp);
                        values.dedup();
                        values
                    });
                    match &onehot {
                        Some(values) => {
                            names.extend(values.iter().map(|v| format!("{}={v}", feature.name)));
                        }
                        None => names.push(feature.name.clone()),
                    }
                    ColumnPlan::Codes {
                        impute,
                        indicator: missing,
                        onehot,
                    }
                }
                FeatureKind::Strings { levels } => {
                    let mut counts = vec![0usize; levels.len()];
                    for &row in train {
                        let code = feature.codes[row];
                        if code != MISSING_CODE {
                            counts[code as usize] += 1;
                        }
                    }
                    let mut order: Vec<usize> = (0..levels.len()).collect();
                    // Most frequent first; ties keep first-seen order (stable sort).
                    order.sort_by(|&a, &b| counts[b].cmp(&counts[a]));
                    let kept: Vec<usize> = order
                        .into_iter()
                        .take(MAX_LEVELS)
                        .filter(|&level| counts[level] >= MIN_LEVEL_COUNT)
                        .collect();
                    let kept_count: usize = kept.iter().map(|&l| counts[l]).sum();
                    let present: usize = counts.iter().sum();
                    let has_other = kept_count < present;
                    let other = kept.len() as i64;
                    let missing_code = if missing {
                        other + 1
                    } else {
                        // Unseen missing values take the most frequent level.
                        if kept.is_empty() { other } else { 0 }
                    };
                    let width = kept.len() + usize::from(has_other) + usize::from(missing);
                    let kept_levels: Vec<String> =
                        kept.iter().map(|&l| levels[l].clone()).collect();
                    if linear {
                        names.extend(kept_levels.iter().map(|l| format!("{}={l}", feature.name)));
                        if has_other {
                            names.push(format!("{}=<other>", feature.name));
                        }
                        if missing {
                            names.push(format!("{}=<missing>", feature.name));
                        }
                    } else {
                        names.push(feature.name.clone());
                    }
                    ColumnPlan::Strings {
                        levels: kept_levels,
                        other,
                        missing: missing_code,
                        onehot: linear.then_some(width),
                    }
                }
            };
            if let ColumnPlan::Number {
                indicator: true, ..
            }
            | ColumnPlan::Codes {
                indicator: true, ..
            } = &plan
            {
                names.push(format!("{}=<missing>", feature.name));
            }
            plans.push(plan);
        }
        Featurizer { plans, names }
    }

    /// The feature matrix for `rows` (indices into the dataset).
    pub fn transform(&self, features: &[Feature], rows: &[usize]) -> Matrix {
        let mut columns = Vec::with_capacity(self.names.len());
        for (feature, plan) in features.iter().zip(&self.plans) {
            match plan {
                ColumnPlan::Number {
                    impute,
                    indicator,
                    scale,
                } => {
                    columns.push(
                        rows.iter()
                            .map(|&row| {
                                let v = feature.values[row];
                                let v = if v.is_nan() { *impute } else { v };
                                match scale {
                                    Some((offset, scale)) => (v - offset) * scale,
                                    None => v,
                                }
                            })
                            .collect(),
                    );
                    if *indicator {
                        columns.push(indicator_column(feature, rows));
                    }
                }
                ColumnPlan::Codes {
                    impute,
                    indicator,
                    onehot,
                } => {
                    let imputed = rows.iter().map(|&row| {
                        let v = feature.values[row];
                        if v.is_nan() { *impute } else { v }
                    });
                    match onehot {
                        Some(values) => {
                            let imputed: Vec<f32> = imputed.collect();
                            for value in values {
                                columns.push(
                                    imputed
                                        .iter()
                                        .map(|v| if v == value { 1.0 } else { 0.0 })
                                        .collect(),
                                );
                            }
                        }
                        None => columns.push(imputed.collect()),
                    }
                    if *indicator {
                        columns.push(indicator_column(feature, rows));
                    }
                }
                ColumnPlan::Strings {
                    levels,
                    other,
                    missing,
                    onehot,
                } => {
                    let FeatureKind::Strings { levels: all } = &feature.kind else {
                        continue;
                    };
                    let lookup: HashMap<&str, i64> = levels
                        .iter()
                        .enumerate()
                        .map(|(i, l)| (l.as_str(), i as i64))
                        .collect();
                    let code_of: Vec<i64> = all
                        .iter()
                        .map(|l| lookup.get(l.as_str()).copied().unwrap_or(*other))
                        .collect();
                    let codes: Vec<i64> = rows
                        .iter()
                        .map(|&row| match feature.codes[row] {
                            MISSING_CODE => *missing,
                            code => code_of[code as usize],
                        })
                        .collect();
                    match onehot {
                        Some(width) => {
                            for slot in 0..*width as i64 {
                                columns.push(
                                    codes
                                        .iter()
                                        .map(|&c| if c == slot { 1.0 } else { 0.0 })
                                        .collect(),
                                );
                            }
                        }
                        None => columns.push(codes.iter().map(|&c| c as f32).collect()),
                    }
                }
            }
        }
        Matrix {
            rows: rows.len(),
            columns,
        }
    }
}

fn indicator_column(feature: &Feature, rows: &[usize]) -> Vec<f32> {
    rows.iter()
        .map(|&row| {
            if feature.values[row].is_nan() {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

fn median(mut values: Vec<f32>) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f32::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        ((f64::from(values[n / 2 - 1]) + f64::from(values[n / 2])) / 2.0) as f32
    }
}

fn mode(values: &[f32]) -> f32 {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for v in values {
        *counts.entry(v.to_bits()).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|a, b| {
            a.1.cmp(&b.1)
                .then(f32::from_bits(b.0).total_cmp(&f32::from_bits(a.0)))
        })
        .map_or(0.0, |(bits, _)| f32::from_bits(bits))
}

fn mean_std(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let (n, sum) = values
        .clone()
        .fold((0usize, 0.0), |(n, s), v| (n + 1, s + v));
    if n == 0 {
        return (0.0, 1.0);
    }
    let mean = sum / n as f64;
    let var = values.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
    (mean, var.sqrt())
}

/// Rows per class among `rows` (empty for regression): how a split's stratification is checked.
pub fn class_counts(target: &Target, rows: &[usize]) -> Vec<usize> {
    match target {
        Target::Classes { classes, y } => {
            let mut counts = vec![0; classes.len()];
            for &row in rows {
                counts[y[row] as usize] += 1;
            }
            counts
        }
        Target::Values { .. } => Vec::new(),
    }
}

/// Fits on the training rows only (no validation statistics leak into imputation or scaling)
/// and transforms both sides.
pub fn fit_transform(data: &Dataset, split: &Split, linear: bool) -> (Featurizer, Matrix, Matrix) {
    let featurizer = Featurizer::fit(&data.features, &split.train, linear);
    let train = featurizer.transform(&data.features, &split.train);
    let valid = featurizer.transform(&data.features, &split.valid);
    (featurizer, train, valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_split_is_deterministic_and_keeps_every_class() {
        let y: Vec<u32> = (0..100).map(|i| if i < 90 { 0 } else { 1 }).collect();
        let target = Target::Classes {
            classes: vec!["a".into(), "b".into()],
            y,
        };
        let a = holdout(&target, 100, 0.2, 7).unwrap();
        let b = holdout(&target, 100, 0.2, 7).unwrap();
        assert_eq!(a.valid, b.valid);
        assert_eq!(class_counts(&target, &a.valid), vec![18, 2]);
        assert_eq!(a.train.len(), 80);
        let c = holdout(&target, 100, 0.2, 8).unwrap();
        assert_ne!(a.valid, c.valid);
    }

    #[test]
    fn kfold_is_stratified_deterministic_and_covers_every_row_once() {
        let y: Vec<u32> = (0..103).map(|i| if i < 90 { 0 } else { 1 }).collect();
        let target = Target::Classes {
            classes: vec!["a".into(), "b".into()],
            y,
        };
        let folds = kfold(&target, 103, 5, 7).unwrap();
        assert_eq!(folds.len(), 5);
        let mut seen = vec![0; 103];
        for fold in &folds {
            for &row in &fold.valid {
                seen[row] += 1;
            }
            assert_eq!(fold.train.len() + fold.valid.len(), 103);
            assert!(
                fold.train
                    .iter()
                    .all(|r| fold.valid.binary_search(r).is_err())
            );
            // 90 and 13 rows over 5 folds: 18 and 2 or 3 of each class per fold.
            let counts = class_counts(&target, &fold.valid);
            assert_eq!(counts[0], 18, "{counts:?}");
            assert!((2..=3).contains(&counts[1]), "{counts:?}");
        }
        assert!(seen.iter().all(|&n| n == 1));
        let sizes: Vec<usize> = folds.iter().map(|f| f.valid.len()).collect();
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
            "{sizes:?}"
        );
        let again = kfold(&target, 103, 5, 7).unwrap();
        assert!(folds.iter().zip(&again).all(|(a, b)| a.valid == b.valid));
        let other = kfold(&target, 103, 5, 8).unwrap();
        assert_ne!(folds[0].valid, other[0].valid);

        let values = Target::Values { y: vec![0.0; 10] };
        assert_eq!(kfold(&values, 10, 3, 0).unwrap().len(), 3);
        assert!(kfold(&values, 10, 6, 0).is_err());
        assert!(kfold(&values, 10, 1, 0).is_err());
    }

    #[test]
    fn kfold_within_partitions_only_the_given_rows() {
        let target = Target::Classes {
            classes: vec!["a".into(), "b".into()],
            y: (0..40).map(|i| u32::from(i % 4 == 0)).collect(),
        };
        let within: Vec<usize> = (0..40).filter(|r| r % 5 != 0).collect();
        let folds = kfold_within(&target, &within, 4, 3).unwrap();
        let mut seen: Vec<usize> = folds.iter().flat_map(|f| f.valid.clone()).collect();
        seen.sort_unstable();
        assert_eq!(
            seen, within,
            "every selection row is validated once, no other row"
        );
        for fold in &folds {
            assert!(
                fold.train
                    .iter()
                    .all(|r| r % 5 != 0 && !fold.valid.contains(r))
            );
            assert_eq!(fold.train.len() + fold.valid.len(), within.len());
        }
        // Over every row it is plain k-fold.
        let all: Vec<usize> = (0..40).collect();
        let a = kfold_within(&target, &all, 4, 3).unwrap();
        let b = kfold(&target, 40, 4, 3).unwrap();
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.valid == y.valid && x.train == y.train)
        );
    }

    #[test]
    fn samples_are_seeded_sorted_and_capped() {
        assert_eq!(sample_rows(5, 10, 1), vec![0, 1, 2, 3, 4]);
        let a = sample_rows(1000, 50, 3);
        assert_eq!(a.len(), 50);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, sample_rows(1000, 50, 3));
        assert_ne!(a, sample_rows(1000, 50, 4));
    }

    #[test]
    fn median_and_mode() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(mode(&[1.0, 2.0, 2.0, 3.0]), 2.0);
    }
}
