//! One trial from flags to artifacts: load, featurise, train with progress reports, export,
//! check parity, write the model card, and move everything into place at once.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use flywheel_core::api::{Metric, Report};
use flywheel_core::ensemble::{
    MemberPredictions, PREDICTIONS_FILE, PREDICTIONS_VERSION, PredictionKind,
};
use flywheel_core::model_card::{Lineage, MODEL_CARD_VERSION, ModelCard};
use flywheel_core::protocol::{Message, Outcome, RESULT_FILE, Timings, TrialResult};
use flywheel_core::search::space::{Family, Params, Task};
use flywheel_store::{BlockingStore, Store, StoreError};

use crate::boost::{self, BoostParams, Loss, Targets};
use crate::cache::{CacheKey, FeatureCache, Lookup};
use crate::cli::{Args, Output};
use crate::data::{self, Dataset, Target};
use crate::error::{Result, TrainerError};
use crate::features::{self, Matrix};
use crate::linear::{self, Penalty};
use crate::metrics;
use crate::mlp::{self, Activation, Head, MlpParams, MlpTargets};
use crate::model::{Model, Prediction, accumulate, mlp_prediction};
use crate::onnx::export;
use crate::params;
use crate::parity;
use crate::production;
use crate::svm;
use crate::tree::{self, Binned, ForestParams, Labels, Objective, TreeParams};

pub const MODEL_FILE: &str = "model.onnx";
pub const CARD_FILE: &str = "model.json";
pub const SCHEMA_FILE: &str = "schema.json";
pub const HOLDOUT_FILE: &str = "holdout.json";
/// Single-row predictions timed for the model card.
const LATENCY_SAMPLES: usize = 200;

/// The validated flags.
struct Plan {
    family: Family,
    task: Task,
    metric: Option<Metric>,
    params: Params,
}

fn plan(args: &Args) -> Result<Plan> {
    let family = Family::parse(&args.family).ok_or_else(|| {
        let known: Vec<&str> = Family::ALL.iter().map(|f| f.as_str()).collect();
        TrainerError::bad_input(format!(
            "unknown family {:?} (known: {})",
            args.family,
            known.join(", ")
        ))
    })?;
    let task = match args.task.as_str() {
        "auto" => Task::Auto,
        "binary" => Task::Binary,
        "multiclass" => Task::Multiclass,
        "regression" => Task::Regression,
        other => {
            return Err(TrainerError::bad_input(format!(
                "unknown task {other:?} (auto, binary, multiclass, regression)"
            )));
        }
    };
    let metric = args
        .metric
        .as_deref()
        .map(|name| {
            Metric::ALL
                .into_iter()
                .find(|m| m.as_str() == name)
                .ok_or_else(|| TrainerError::bad_input(format!("unknown metric {name:?}")))
        })
        .transpose()?;
    if args.threads == 0 {
        return Err(TrainerError::bad_input("--threads must be at least 1"));
    }
    let params = params::resolve(family, &args.params, args.budget)?;
    Ok(Plan {
        family,
        task,
        metric,
        params,
    })
}

/// The feature cache as one trial uses it. It only ever saves work: a missing, unreadable or
/// damaged entry means preparing as without a cache, and a failure to write one is logged, never
/// fatal.
struct TrialCache {
    cache: FeatureCache,
    key: CacheKey,
    /// The last lookup found an entry it could not use: the store overwrites it.
    replace: bool,
}

impl TrialCache {
    fn open(
        args: &Args,
        plan: &Plan,
        source: &data::Source,
        format: data::Format,
    ) -> Result<Option<TrialCache>> {
        // Empty counts as unset, so a pod template can always carry the variable.
        let Some(uri) = args
            .feature_cache
            .as_deref()
            .filter(|u| !u.trim().is_empty())
        else {
            return Ok(None);
        };
        Ok(Some(TrialCache {
            cache: FeatureCache::open(uri)?,
            key: CacheKey::new(&source.digest, format.as_str(), &args.target, plan.task),
            replace: false,
        }))
    }

    fn lookup(&mut self) -> Option<Dataset> {
        let location = self.cache.location(&self.key);
        match self.cache.load(&self.key) {
            Lookup::Hit(data) => {
                eprintln!("feature cache hit: {location}");
                return Some(*data);
            }
            Lookup::Miss => eprintln!("feature cache miss: {location}"),
            Lookup::Unusable(reason) => {
                eprintln!("feature cache entry ignored, recomputing: {reason}");
                self.replace = true;
            }
        }
        None
    }

    fn store(&self, data: &Dataset) {
        match self.cache.save(&self.key, data, self.replace) {
            Ok(true) => eprintln!("feature cache stored: {}", self.cache.location(&self.key)),
            Ok(false) => eprintln!("feature cache entry already written by another trial"),
            Err(e) => eprintln!("feature cache not stored: {e}"),
        }
    }
}

/// Below this many rows (with a target) selection is by repeated k-fold unless `--folds` says
/// otherwise. A 20 % holdout of n rows estimates accuracy with a standard error of about
/// sqrt(0.25 / 0.2n): 1.1 points at 10,000 rows, 3.5 at 1,000. The best of hundreds of
/// configurations ranked on one such split is biased upwards by a few standard errors (issue
/// 17 measured 4 to 9 points on 500 to 1,000 rows); cross-validating over the selection rows
/// and repeating it divides the error by about sqrt(folds × repeats / 1.25) at folds × repeats
/// times the training cost, which on tables this small is seconds.
pub const SMALL_DATA_ROWS: usize = 10_000;
/// Folds of the automatic cross-validation.
pub const AUTO_FOLDS: usize = 5;
/// Repeats (other fold seeds) of the automatic cross-validation under this many rows.
pub const REPEAT_BELOW_ROWS: usize = 2_000;
pub const AUTO_REPEATS: usize = 2;

/// How the trial scores its model, from `--folds` and the data's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Evaluation {
    /// One holdout split.
    Holdout,
    /// N-fold over every row, refit on every row.
    KFold(usize),
    /// Repeated k-fold on the rows outside a final holdout; the holdout scores the export.
    Selected { folds: usize, repeats: usize },
}

fn evaluation(folds: Option<usize>, rows: usize) -> Evaluation {
    match folds {
        Some(0) => Evaluation::Holdout,
        Some(n) => Evaluation::KFold(n),
        None if rows < SMALL_DATA_ROWS => Evaluation::Selected {
            folds: AUTO_FOLDS,
            repeats: if rows < REPEAT_BELOW_ROWS {
                AUTO_REPEATS
            } else {
                1
            },
        },
        None => Evaluation::Holdout,
    }
}

/// The trained model and what was measured about it.
struct Fitted {
    featurizer: features::Featurizer,
    model: Model,
    /// The reported metrics: on the holdout split, or the mean over folds (with `<name>_std`
    /// and `<name>_n`, the number of fold scores).
    metrics: BTreeMap<String, f64>,
    /// The exported model's metrics on the final holdout, when selection did not use it.
    holdout_metrics: BTreeMap<String, f64>,
    /// The rows the parity gate and latency probe run on, ascending (`holdout.json`'s rows):
    /// the validation split, or under k-fold a seeded sample of the rows the model was refit on.
    check_rows: Vec<usize>,
    /// The trainer's own prediction for `check_rows`.
    prediction: Prediction,
    /// Predictions on rows the predicting model did not train on, for ensemble selection.
    member: MemberPredictions,
}

/// The featurisation of the linear, SVM and MLP families: scaled numbers, one-hot categories.
fn linear_features(family: Family) -> bool {
    matches!(
        family,
        Family::Linear | Family::Logistic | Family::Svm | Family::Mlp
    )
}

/// One seeded, stratified holdout split: train on the rest, report and score on it.
fn fit_holdout(plan: &Plan, args: &Args, data: &Dataset, timings: &mut Timings) -> Result<Fitted> {
    let stage = Instant::now();
    let split = features::holdout(&data.target, data.rows, args.holdout, args.seed)?;
    let (featurizer, train, valid) =
        features::fit_transform(data, &split, linear_features(plan.family));
    timings.featurize_seconds = stage.elapsed().as_secs_f64();

    let stage = Instant::now();
    let mut reporter = Reporter::new(Reports::Print);
    let model = fit_split(plan, args, data, &split, &train, &valid, &mut reporter)?;
    timings.train_seconds = stage.elapsed().as_secs_f64();

    let prediction = model.predict(&valid);
    let metrics = evaluate(&data.target, &split.valid, &prediction);
    let member = member_predictions(
        data,
        PredictionKind::Holdout,
        split
            .valid
            .iter()
            .copied()
            .zip(prediction_rows(&prediction)),
    );
    Ok(Fitted {
        featurizer,
        model,
        metrics,
        holdout_metrics: BTreeMap::new(),
        check_rows: split.valid,
        prediction,
        member,
    })
}

/// Rows the parity gate checks when the model is refit on every row: enough to catch an export
/// that disagrees, few enough to keep the gate quick on large tables.
const PARITY_SAMPLE: usize = 2000;

/// `--folds` cross-validation: one model per fold, each featurised on its own training rows
/// and scored on its fold; the metrics are the mean over folds (and `<name>_std`, their
/// population standard deviation). The exported model is then refit on every row.
///
/// Report lines: the first fold's, as it trains (the same resource steps as a holdout trial,
/// so early stopping judges that fold's learning curve and a stopped trial never trains the
/// other folds), except its last, which the fold mean replaces at the same step. The other
/// folds and the refit report nothing.
fn cross_validate(
    plan: &Plan,
    args: &Args,
    data: &Dataset,
    folds: usize,
    timings: &mut Timings,
) -> Result<Fitted> {
    let linear = linear_features(plan.family);
    let all: Vec<usize> = (0..data.rows).collect();
    let splits = features::kfold(&data.target, data.rows, folds, args.seed)?;
    let (metrics, out_of_fold) = score_folds(plan, args, data, &splits, timings)?;

    let stage = Instant::now();
    let featurizer = features::Featurizer::fit(&data.features, &all, linear);
    let train = featurizer.transform(&data.features, &all);
    timings.featurize_seconds += stage.elapsed().as_secs_f64();
    let stage = Instant::now();
    let model = refit(plan, args, data, &all, &train)?;
    timings.train_seconds += stage.elapsed().as_secs_f64();
    let check_rows = features::sample_rows(data.rows, PARITY_SAMPLE, args.seed);
    let prediction = model.predict(&featurizer.transform(&data.features, &check_rows));
    Ok(Fitted {
        featurizer,
        model,
        metrics,
        holdout_metrics: BTreeMap::new(),
        check_rows,
        prediction,
        member: member_predictions(data, PredictionKind::OutOfFold, out_of_fold),
    })
}

/// Small-data selection: a final holdout (`--holdout`, stratified, seeded like a holdout
/// trial's) is set aside; `repeats` rounds of `folds`-fold cross-validation on the other rows,
/// each round with its own fold seed, give the reported metrics (mean, `_std` and `_n` over
/// every fold score); the model trained on all of those rows is exported, and its scores on
/// the untouched holdout are `holdout_metrics`. A study ranks trials on the first and can show
/// the second next to it: the gap is the optimism of selection. Reports as [`cross_validate`]
/// (the first fold's curve); the parity gate runs on the holdout, as for a holdout trial.
fn select_by_folds(
    plan: &Plan,
    args: &Args,
    data: &Dataset,
    folds: usize,
    repeats: usize,
    timings: &mut Timings,
) -> Result<Fitted> {
    let stage = Instant::now();
    let outer = features::holdout(&data.target, data.rows, args.holdout, args.seed)?;
    timings.featurize_seconds += stage.elapsed().as_secs_f64();
    let mut splits = Vec::with_capacity(folds * repeats);
    for repeat in 0..repeats as u64 {
        // A different seed per round deals the rows into other folds.
        let seed = args
            .seed
            .wrapping_add(repeat.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        splits.extend(features::kfold_within(
            &data.target,
            &outer.train,
            folds,
            seed,
        )?);
    }
    let (metrics, out_of_fold) = score_folds(plan, args, data, &splits, timings)?;

    let stage = Instant::now();
    let (featurizer, train, valid) =
        features::fit_transform(data, &outer, linear_features(plan.family));
    timings.featurize_seconds += stage.elapsed().as_secs_f64();
    let stage = Instant::now();
    let model = refit(plan, args, data, &outer.train, &train)?;
    timings.train_seconds += stage.elapsed().as_secs_f64();
    let prediction = model.predict(&valid);
    let holdout_metrics = evaluate(&data.target, &outer.valid, &prediction);
    eprintln!(
        "final holdout: {} rows, {holdout_metrics:?}",
        outer.valid.len()
    );
    Ok(Fitted {
        featurizer,
        model,
        metrics,
        holdout_metrics,
        check_rows: outer.valid,
        prediction,
        member: member_predictions(data, PredictionKind::OutOfFold, out_of_fold),
    })
}

/// Trains and scores one model per split; the metrics are the mean over splits, with
/// `<name>_std` (population standard deviation) and `<name>_n` (how many splits scored it).
/// Report lines: the first split's as it trains, except its last, which the mean replaces at
/// the same step; the other splits report nothing.
fn score_folds(
    plan: &Plan,
    args: &Args,
    data: &Dataset,
    splits: &[features::Split],
    timings: &mut Timings,
) -> Result<(BTreeMap<String, f64>, Vec<RowPrediction>)> {
    let linear = linear_features(plan.family);
    let mut per_fold = Vec::with_capacity(splits.len());
    let mut out_of_fold = Vec::with_capacity(data.rows);
    let mut last_step = 1;
    for (index, split) in splits.iter().enumerate() {
        let stage = Instant::now();
        let (_, train, valid) = features::fit_transform(data, split, linear);
        timings.featurize_seconds += stage.elapsed().as_secs_f64();
        let stage = Instant::now();
        let mut reporter = Reporter::new(if index == 0 {
            Reports::AllButLast
        } else {
            Reports::Silent
        });
        let model = fit_split(plan, args, data, split, &train, &valid, &mut reporter)?;
        if index == 0 {
            last_step = reporter.last_step.max(1);
        }
        let prediction = model.predict(&valid);
        let metrics = evaluate(&data.target, &split.valid, &prediction);
        out_of_fold.extend(
            split
                .valid
                .iter()
                .copied()
                .zip(prediction_rows(&prediction)),
        );
        timings.train_seconds += stage.elapsed().as_secs_f64();
        eprintln!(
            "fold {}/{}: {} validation rows, {metrics:?}",
            index + 1,
            splits.len(),
            split.valid.len()
        );
        per_fold.push(metrics);
    }
    let (mean, std, n) = fold_summary(&per_fold);
    report(last_step, &mean);
    let mut metrics = mean;
    metrics.extend(std.into_iter().map(|(name, v)| (format!("{name}_std"), v)));
    metrics.extend(n.into_iter().map(|(name, v)| (format!("{name}_n"), v)));
    Ok((metrics, out_of_fold))
}

/// The model to export, trained on `rows` with nothing held out to report on.
fn refit(
    plan: &Plan,
    args: &Args,
    data: &Dataset,
    rows: &[usize],
    train: &Matrix,
) -> Result<Model> {
    let empty = Matrix {
        rows: 0,
        columns: vec![Vec::new(); train.width()],
    };
    let mut model = train_model(
        plan,
        args,
        data,
        Part::new(rows, train),
        Part::new(&[], &empty),
        &mut Reporter::new(Reports::Silent),
    )?;
    model.round_to_f32();
    Ok(model)
}

/// Mean and population standard deviation of each metric over the folds where it is defined
/// (AUC is undefined on a fold with one class).
type Summary = BTreeMap<String, f64>;

fn fold_summary(per_fold: &[BTreeMap<String, f64>]) -> (Summary, Summary, Summary) {
    let mut values: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for metrics in per_fold {
        for (name, &value) in metrics {
            values.entry(name).or_default().push(value);
        }
    }
    let mut mean = BTreeMap::new();
    let mut std = BTreeMap::new();
    let mut count = BTreeMap::new();
    for (name, values) in values {
        let n = values.len() as f64;
        let m = values.iter().sum::<f64>() / n;
        let variance = values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n;
        mean.insert(name.to_string(), m);
        std.insert(name.to_string(), variance.sqrt());
        count.insert(name.to_string(), n);
    }
    (mean, std, count)
}

/// What happens to a training run's progress reports.
enum Reports {
    /// Printed as they come (a holdout trial).
    Print,
    /// Printed one behind, and the last dropped (the first fold under k-fold: the fold mean
    /// takes the last step).
    AllButLast,
    /// Not computed at all (later folds, the refit).
    Silent,
}

struct Reporter {
    mode: Reports,
    held: Option<(u64, BTreeMap<String, f64>)>,
    /// The step of the latest report, printed or not.
    last_step: u64,
}

impl Reporter {
    fn new(mode: Reports) -> Reporter {
        Reporter {
            mode,
            held: None,
            last_step: 0,
        }
    }

    /// Reports `metrics` at `step`; the metrics are only computed when they are printed.
    fn report(&mut self, step: u64, metrics: impl FnOnce() -> BTreeMap<String, f64>) {
        self.last_step = step;
        match self.mode {
            Reports::Print => report(step, &metrics()),
            Reports::AllButLast => {
                if let Some((step, metrics)) = self.held.replace((step, metrics())) {
                    report(step, &metrics);
                }
            }
            Reports::Silent => {}
        }
    }
}

/// Prints a protocol report line.
fn report(step: u64, metrics: &BTreeMap<String, f64>) {
    let line = Message::Report(Report {
        step,
        metrics: metrics.clone(),
    })
    .to_line();
    let mut stdout = std::io::stdout().lock();
    // A closed stdout must not kill the trial: the result file still records the outcome.
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

fn evaluate(target: &Target, rows: &[usize], prediction: &Prediction) -> BTreeMap<String, f64> {
    match (target, prediction) {
        (Target::Classes { y, .. }, Prediction::Classes(p)) => {
            let truth: Vec<u32> = rows.iter().map(|&r| y[r]).collect();
            metrics::classification(&truth, p)
        }
        (Target::Values { y }, Prediction::Values(p)) => {
            let truth: Vec<f64> = rows.iter().map(|&r| y[r]).collect();
            metrics::regression(&truth, p)
        }
        _ => BTreeMap::new(),
    }
}

/// Where the artifacts are put together before they are published: a folder inside a local
/// output folder (publishing is then a rename), or a fresh folder under the temp dir for an
/// object-store output (publishing uploads from it). Removed on drop.
pub(crate) struct Staging {
    dir: PathBuf,
}

impl Staging {
    pub(crate) fn new(output: &Output) -> Result<Staging> {
        let dir = match output {
            Output::Local(output) => {
                std::fs::create_dir_all(output).map_err(TrainerError::io(format!(
                    "create the output folder {}",
                    output.display()
                )))?;
                output.join(format!(".partial-{}", std::process::id()))
            }
            Output::Store(location) => {
                // Missing credentials fail the trial now, not after minutes of training.
                Store::from_env().check(location).map_err(publish_error)?;
                std::env::temp_dir().join(format!("flywheel-trial-{}", std::process::id()))
            }
        };
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(TrainerError::io(format!(
            "create the staging folder {}",
            dir.display()
        )))?;
        Ok(Staging { dir })
    }

    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).map_err(TrainerError::io(format!("write {}", path.display())))
    }

    /// Renames (local) or uploads (object store) every staged file into `output`, in the order
    /// given; the model card goes last so a reader that sees it also sees the model. result.json
    /// follows later ([`write_result`]) and marks the folder complete.
    pub(crate) fn publish(&self, output: &Output, names: &[&str]) -> Result<()> {
        match output {
            Output::Local(output) => {
                for name in names {
                    std::fs::rename(self.dir.join(name), output.join(name)).map_err(
                        TrainerError::io(format!("move {name} into {}", output.display())),
                    )?;
                }
                Ok(())
            }
            Output::Store(location) => BlockingStore::from_env()
                .and_then(|store| store.upload_dir(&self.dir, names, location))
                .map_err(publish_error),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A failure to publish to the artifact store: configuration the caller can fix (credentials,
/// the URI, permissions) is bad input; the rest (the service unreachable after retries) internal.
fn publish_error(error: StoreError) -> TrainerError {
    match error {
        StoreError::MissingCredentials { .. }
        | StoreError::Denied { .. }
        | StoreError::InvalidUri { .. }
        | StoreError::UnsupportedScheme { .. } => {
            TrainerError::bad_input(format!("failed to publish the artifacts: {error}"))
        }
        _ => TrainerError::Internal(format!("failed to publish the artifacts: {error}")),
    }
}

/// The result document's `artifact_uri`: a canonical `file://` URI for a local folder, the
/// `s3://` URI for an object-store one.
pub(crate) fn artifact_uri(output: &Output) -> String {
    match output {
        Output::Local(path) => {
            let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            format!("file://{}", path.display())
        }
        Output::Store(location) => location.to_string(),
    }
}

pub(crate) fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value)
        .map_err(|e| TrainerError::Internal(format!("failed to serialise json: {e}")))
}

/// One line: the member predictions hold a row per validation row, where pretty-printing
/// would triple the file.
pub(crate) fn json_compact<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| TrainerError::Internal(format!("failed to serialise json: {e}")))
}

/// A dataset row and what a model predicted for it: the class probabilities, or `[value]`.
type RowPrediction = (usize, Vec<f64>);

/// One array per row: the class probabilities, or `[value]`.
fn prediction_rows(prediction: &Prediction) -> Vec<Vec<f64>> {
    match prediction {
        Prediction::Classes(proba) => (0..proba.rows()).map(|r| proba.row(r).to_vec()).collect(),
        Prediction::Values(values) => values.iter().map(|&v| vec![v]).collect(),
    }
}

/// `predictions.json` from (dataset row, prediction) pairs in any order.
fn member_predictions(
    data: &Dataset,
    kind: PredictionKind,
    predicted: impl IntoIterator<Item = (usize, Vec<f64>)>,
) -> MemberPredictions {
    let mut predicted: Vec<(usize, Vec<f64>)> = predicted.into_iter().collect();
    // Stable: under repeated k-fold a row is predicted once per round, and keeps its first
    // round's prediction, so every member of a study covers the same rows once.
    predicted.sort_by_key(|(row, _)| *row);
    predicted.dedup_by_key(|(row, _)| *row);
    let (classes, targets): (Vec<String>, Vec<f64>) = match &data.target {
        Target::Classes { classes, y } => (
            classes.clone(),
            predicted.iter().map(|(r, _)| f64::from(y[*r])).collect(),
        ),
        Target::Values { y } => (Vec::new(), predicted.iter().map(|(r, _)| y[*r]).collect()),
    };
    MemberPredictions {
        version: PREDICTIONS_VERSION,
        trial: None,
        kind,
        rows: predicted
            .iter()
            .map(|(r, _)| data.source_rows[*r] as u64)
            .collect(),
        targets,
        classes,
        predictions: predicted.into_iter().map(|(_, p)| p).collect(),
    }
}

/// Runs the trial; the caller turns an error into a failed result.
pub fn run(args: &Args) -> Result<TrialResult> {
    let started = Instant::now();
    let plan = plan(args)?;
    let staging = Staging::new(&args.output)?;
    let mut timings = Timings::default();

    let source = data::fetch(&args.dataset)?;
    let format = args.format.resolve(&source);
    let feedback = production::parse_sources(&args.feedback)?;
    let mut cache = TrialCache::open(args, &plan, &source, format)?;
    // Without production rows the cache key is complete before parsing: a hit skips parsing
    // and inference both.
    let cached = match &mut cache {
        Some(cache) if feedback.is_empty() => cache.lookup(),
        _ => None,
    };
    let (data, production) = match cached {
        Some(data) => (data, None),
        None => {
            let mut table = data::parse(&source, format)?;
            let production = production::append(&mut table, &args.target, &feedback)?;
            // Production rows are known only once appended: their digest completes the key
            // here, so a hit saves inference but not parsing.
            let cached = match (&mut cache, &production) {
                (Some(cache), Some(appended)) => {
                    cache.key = cache.key.clone().extra("production", &appended.digest);
                    cache.lookup()
                }
                _ => None,
            };
            let data = match cached {
                Some(data) => data,
                None => {
                    let data = data::infer(table, &args.target, plan.task)?;
                    if let Some(cache) = &cache {
                        cache.store(&data);
                    }
                    data
                }
            };
            (data, production)
        }
    };
    // The model learnt from the table and the production rows: both name its data.
    let dataset_digest = match &production {
        Some(appended) => {
            data::sha256_hex(format!("{}+{}", source.digest, appended.digest).as_bytes())
        }
        None => source.digest.clone(),
    };
    timings.load_seconds = started.elapsed().as_secs_f64();
    if !plan.family.supports(data.task) {
        return Err(TrainerError::bad_input(format!(
            "family {} cannot learn a {} task",
            plan.family,
            data.task.as_str()
        )));
    }
    if let Some(metric) = plan.metric
        && metric.is_regression() != (data.task == Task::Regression)
    {
        return Err(TrainerError::bad_input(format!(
            "metric {} does not apply to a {} task",
            metric.as_str(),
            data.task.as_str()
        )));
    }
    eprintln!(
        "loaded {} rows, {} features, task {}",
        data.rows,
        data.features.len(),
        data.task.as_str()
    );

    let Fitted {
        featurizer,
        model,
        metrics,
        holdout_metrics,
        check_rows,
        prediction,
        mut member,
    } = match evaluation(args.folds, data.rows) {
        Evaluation::Holdout => fit_holdout(&plan, args, &data, &mut timings)?,
        Evaluation::KFold(folds) => cross_validate(&plan, args, &data, folds, &mut timings)?,
        Evaluation::Selected { folds, repeats } => {
            select_by_folds(&plan, args, &data, folds, repeats, &mut timings)?
        }
    };

    let stage = Instant::now();
    let exported = export::export(
        &data.features,
        &featurizer,
        &model,
        &format!("{} on {}", plan.family, args.dataset),
    );
    let env = parity::environment()?;
    let mut session = parity::session(&env, &exported.bytes, args.threads)?;
    let names: Vec<String> = exported.inputs.iter().map(|i| i.input.clone()).collect();
    let classification = data.task != Task::Regression;
    let inputs = parity::inputs(&data.features, &names, &check_rows)?;
    let onnx_prediction = parity::run(&mut session, inputs, classification)?;
    let rounding = model.rounding(&featurizer.transform(&data.features, &check_rows));
    parity::compare(&prediction, &onnx_prediction, &rounding)?;
    let latency = parity::latency(
        &mut session,
        &data.features,
        &names,
        &check_rows,
        classification,
        LATENCY_SAMPLES,
    )?;
    timings.export_seconds = stage.elapsed().as_secs_f64();

    let model_bytes = exported.bytes.len() as u64;
    let card = ModelCard {
        card_version: MODEL_CARD_VERSION,
        version: args
            .trial
            .clone()
            .unwrap_or_else(|| format!("{}-{}", plan.family, &source.digest[..12])),
        family: plan.family,
        params: plan.params.clone(),
        task: data.task,
        target: args.target.clone(),
        classes: match &data.target {
            Target::Classes { classes, .. } => classes.clone(),
            Target::Values { .. } => Vec::new(),
        },
        inputs: exported.inputs.clone(),
        outputs: exported.outputs.clone(),
        metrics: metrics.clone(),
        latency: Some(latency),
        model_bytes: Some(model_bytes),
        lineage: Lineage {
            study: args.study.clone(),
            trial: args.trial.clone(),
            dataset_uri: source.uri.clone(),
            dataset_digest,
            dataset_rows: data.rows as u64,
            trainer_version: env!("CARGO_PKG_VERSION").to_string(),
            created_at: jiff::Timestamp::now().to_string(),
            generation: args.generation,
            parent_studies: args.parent_studies.clone(),
            production_rows: production.as_ref().map_or(0, |p| p.rows),
        },
        ensemble: None,
    };
    member.trial = args.trial.clone();
    staging.write(MODEL_FILE, &exported.bytes)?;
    staging.write(SCHEMA_FILE, &json(&data.schema)?)?;
    staging.write(
        HOLDOUT_FILE,
        &json(&holdout_document(&data, &check_rows, &prediction))?,
    )?;
    staging.write(PREDICTIONS_FILE, &json_compact(&member)?)?;
    staging.write(CARD_FILE, &json(&card)?)?;
    staging.publish(
        &args.output,
        &[
            MODEL_FILE,
            SCHEMA_FILE,
            HOLDOUT_FILE,
            PREDICTIONS_FILE,
            CARD_FILE,
        ],
    )?;

    timings.total_seconds = started.elapsed().as_secs_f64();
    Ok(TrialResult {
        outcome: Outcome::Succeeded,
        reason: None,
        message: None,
        metrics,
        holdout_metrics,
        artifact_uri: Some(artifact_uri(&args.output)),
        latency: Some(latency),
        model_bytes: Some(model_bytes),
        timings,
    })
}

/// `holdout.json`: the validation rows (0-based data-row indices in the file, header excluded,
/// ascending) with the trainer's own predictions for them, so a served model can be compared
/// with training exactly.
#[derive(serde::Serialize)]
pub(crate) struct HoldoutDocument {
    rows: Vec<usize>,
    predictions: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<Vec<Vec<f64>>>,
}

pub(crate) fn holdout_document(
    data: &Dataset,
    valid: &[usize],
    prediction: &Prediction,
) -> HoldoutDocument {
    // `valid` is sorted and `source_rows` ascends, so the rows come out in file order.
    let rows = valid.iter().map(|&r| data.source_rows[r]).collect();
    match (prediction, &data.target) {
        (Prediction::Classes(proba), Target::Classes { classes, .. }) => HoldoutDocument {
            rows,
            predictions: proba
                .labels()
                .into_iter()
                .map(|label| {
                    serde_json::Value::from(
                        classes
                            .get(label as usize)
                            .cloned()
                            .unwrap_or_else(|| label.to_string()),
                    )
                })
                .collect(),
            probabilities: Some(
                (0..proba.rows())
                    .map(|row| proba.row(row).to_vec())
                    .collect(),
            ),
        },
        (Prediction::Values(values), _) => HoldoutDocument {
            rows,
            predictions: values.iter().map(|&v| serde_json::Value::from(v)).collect(),
            probabilities: None,
        },
        (Prediction::Classes(proba), Target::Values { .. }) => HoldoutDocument {
            rows,
            predictions: proba
                .labels()
                .into_iter()
                .map(serde_json::Value::from)
                .collect(),
            probabilities: None,
        },
    }
}

/// Trains on `split`'s training rows, validating (and reporting) on its held-out rows; the
/// parameters are rounded to f32 as the export stores them.
fn fit_split(
    plan: &Plan,
    args: &Args,
    data: &Dataset,
    split: &features::Split,
    train: &Matrix,
    valid: &Matrix,
    reporter: &mut Reporter,
) -> Result<Model> {
    let mut model = train_model(
        plan,
        args,
        data,
        Part::new(&split.train, train),
        Part::new(&split.valid, valid),
        reporter,
    )?;
    model.round_to_f32();
    Ok(model)
}

/// Rows of the dataset and their feature matrix.
#[derive(Clone, Copy)]
struct Part<'a> {
    rows: &'a [usize],
    matrix: &'a Matrix,
}

impl<'a> Part<'a> {
    fn new(rows: &'a [usize], matrix: &'a Matrix) -> Self {
        Part { rows, matrix }
    }
}

fn train_model(
    plan: &Plan,
    args: &Args,
    data: &Dataset,
    train: Part,
    valid: Part,
    reporter: &mut Reporter,
) -> Result<Model> {
    let (train_rows, train) = (train.rows, train.matrix);
    let (valid_rows, valid) = (valid.rows, valid.matrix);
    let p = &plan.params;
    match plan.family {
        Family::Logistic | Family::Linear => {
            let penalty = Penalty::parse(params::string(p, "penalty"));
            let alpha = params::float(p, "alpha");
            let model = match &data.target {
                Target::Classes { classes, y } => {
                    let y: Vec<u32> = train_rows.iter().map(|&r| y[r]).collect();
                    Model::Linear {
                        model: linear::fit_logistic(
                            train,
                            &y,
                            classes.len(),
                            penalty,
                            alpha,
                            args.threads,
                        ),
                        classes: Some(classes.len()),
                    }
                }
                Target::Values { y } => {
                    let y: Vec<f64> = train_rows.iter().map(|&r| y[r]).collect();
                    Model::Linear {
                        model: linear::fit_linear(train, &y, penalty, alpha),
                        classes: None,
                    }
                }
            };
            let iterations = match &model {
                Model::Linear { model, .. } => model.iterations as u64,
                _ => 0,
            };
            reporter.report(iterations.max(1), || {
                evaluate(&data.target, valid_rows, &model.predict(valid))
            });
            Ok(model)
        }
        Family::Svm => {
            let c = params::float(p, "c");
            let model = match &data.target {
                Target::Classes { classes, y } => {
                    let y: Vec<u32> = train_rows.iter().map(|&r| y[r]).collect();
                    Model::Linear {
                        model: svm::fit_classifier(train, &y, classes.len(), c, args.threads),
                        classes: Some(classes.len()),
                    }
                }
                Target::Values { y } => {
                    let y: Vec<f64> = train_rows.iter().map(|&r| y[r]).collect();
                    Model::Linear {
                        model: svm::fit_regressor(
                            train,
                            &y,
                            c,
                            params::float(p, "epsilon"),
                            args.seed,
                        ),
                        classes: None,
                    }
                }
            };
            let epochs = match &model {
                Model::Linear { model, .. } => model.iterations as u64,
                _ => 0,
            };
            reporter.report(epochs.max(1), || {
                evaluate(&data.target, valid_rows, &model.predict(valid))
            });
            Ok(model)
        }
        Family::DecisionTree | Family::RandomForest => {
            let forest = plan.family == Family::RandomForest;
            let trees = if forest {
                usize::try_from(params::int(p, "n_estimators"))
                    .unwrap_or(1)
                    .max(1)
            } else {
                1
            };
            let tree = TreeParams {
                max_depth: usize::try_from(params::int(p, "max_depth")).unwrap_or(1),
                min_samples_leaf: usize::try_from(params::int(p, "min_samples_leaf")).unwrap_or(1),
                max_features: if forest {
                    params::float(p, "max_features")
                } else {
                    1.0
                },
            };
            let settings = ForestParams {
                trees,
                tree,
                bootstrap: forest,
                seed: args.seed,
                threads: args.threads,
            };
            let binned = Binned::new(train);
            let (objective, width) = match &data.target {
                Target::Classes { classes, .. } => {
                    (Objective::Classes(classes.len()), classes.len())
                }
                Target::Values { .. } => (Objective::Regression, 1),
            };
            let y_classes: Vec<u32>;
            let y_values: Vec<f64>;
            let labels = match &data.target {
                Target::Classes { y, .. } => {
                    y_classes = train_rows.iter().map(|&r| y[r]).collect();
                    Labels::Classes(&y_classes)
                }
                Target::Values { y } => {
                    y_values = train_rows.iter().map(|&r| y[r]).collect();
                    Labels::Values(&y_values)
                }
            };
            let scale = 1.0 / trees as f64;
            // Report about ten times, in chunks large enough to keep every thread busy.
            let chunk = trees.div_ceil(10).max(args.threads).max(1);
            let mut built = Vec::with_capacity(trees);
            let mut sums = vec![0.0; valid.rows * width];
            let mut start = 0;
            while start < trees {
                let end = (start + chunk).min(trees);
                let batch = tree::grow_many(&binned, &labels, objective, &settings, start..end);
                for t in &batch {
                    accumulate(t, valid, 1.0, width, &mut sums);
                }
                built.extend(batch);
                let done = built.len();
                reporter.report(done as u64, || {
                    let average: Vec<f64> = sums.iter().map(|s| s / done as f64).collect();
                    let prediction = match objective {
                        Objective::Classes(classes) => {
                            Prediction::Classes(metrics::Probabilities {
                                classes,
                                values: average,
                            })
                        }
                        Objective::Regression => Prediction::Values(average),
                    };
                    evaluate(&data.target, valid_rows, &prediction)
                });
                start = end;
            }
            Ok(Model::Trees {
                trees: built,
                objective,
                scale,
            })
        }
        Family::GradientBoosting => {
            let params = BoostParams {
                rounds: usize::try_from(params::int(p, "n_estimators"))
                    .unwrap_or(1)
                    .max(1),
                learning_rate: params::float(p, "learning_rate"),
                max_leaves: usize::try_from(params::int(p, "max_leaves")).unwrap_or(2),
                max_depth: usize::try_from(params::int(p, "max_depth")).unwrap_or(1),
                min_child_weight: params::float(p, "min_child_weight"),
                subsample: params::float(p, "subsample"),
                l2: params::float(p, "l2"),
                seed: args.seed,
                threads: args.threads,
            };
            let binned = Binned::new(train);
            let y_classes: Vec<u32>;
            let y_values: Vec<f64>;
            let (targets, loss) = match &data.target {
                Target::Classes { y, classes } => {
                    y_classes = train_rows.iter().map(|&r| y[r]).collect();
                    let loss = if classes.len() == 2 {
                        Loss::Logistic
                    } else {
                        Loss::Softmax(classes.len())
                    };
                    (Targets::Classes(&y_classes), loss)
                }
                Target::Values { y } => {
                    y_values = train_rows.iter().map(|&r| y[r]).collect();
                    (Targets::Values(&y_values), Loss::Squared)
                }
            };
            let every = params.rounds.div_ceil(10).max(1);
            let k = loss.outputs();
            let mut valid_scores: Vec<f64> = Vec::new();
            let mut counted = 0;
            let booster = boost::fit(train, &binned, &targets, loss, params, |round, booster| {
                if valid_scores.is_empty() {
                    valid_scores = (0..valid.rows)
                        .flat_map(|_| booster.base.iter().copied())
                        .collect();
                }
                for (t, tree) in booster.trees.iter().enumerate().skip(counted) {
                    boost::add_tree(tree, valid, t % k, k, &mut valid_scores);
                }
                counted = booster.trees.len();
                if round % every == 0 || round == params.rounds {
                    reporter.report(round as u64, || {
                        let values = boost::transform(loss, &valid_scores);
                        let prediction = match loss {
                            Loss::Squared => Prediction::Values(values),
                            _ => Prediction::Classes(metrics::Probabilities {
                                classes: values.len() / valid.rows.max(1),
                                values,
                            }),
                        };
                        evaluate(&data.target, valid_rows, &prediction)
                    });
                }
            });
            Ok(Model::Boosted(booster))
        }
        Family::Mlp => {
            let params = MlpParams {
                hidden_layers: usize::try_from(params::int(p, "hidden_layers")).unwrap_or(1),
                hidden_units: usize::try_from(params::int(p, "hidden_units")).unwrap_or(1),
                activation: Activation::parse(params::string(p, "activation")),
                learning_rate: params::float(p, "learning_rate"),
                batch_size: usize::try_from(params::int(p, "batch_size")).unwrap_or(1),
                epochs: usize::try_from(params::int(p, "epochs"))
                    .unwrap_or(1)
                    .max(1),
                weight_decay: params::float(p, "weight_decay"),
                seed: args.seed,
                threads: args.threads,
            };
            let y_classes: Vec<u32>;
            let y_values: Vec<f64>;
            let (targets, head) = match &data.target {
                Target::Classes { y, classes } => {
                    y_classes = train_rows.iter().map(|&r| y[r]).collect();
                    let head = if classes.len() == 2 {
                        Head::Binary
                    } else {
                        Head::Softmax(classes.len())
                    };
                    (MlpTargets::Classes(&y_classes), head)
                }
                Target::Values { y } => {
                    y_values = train_rows.iter().map(|&r| y[r]).collect();
                    (MlpTargets::Values(&y_values), Head::Regression)
                }
            };
            let every = params.epochs.div_ceil(10).max(1);
            let model = mlp::fit(train, &targets, head, params, |epoch, model| {
                if epoch % every == 0 || epoch == params.epochs {
                    reporter.report(epoch as u64, || {
                        let prediction = mlp_prediction(model.head, &model.scores(valid));
                        evaluate(&data.target, valid_rows, &prediction)
                    });
                }
            });
            Ok(Model::Mlp(model))
        }
    }
}

/// Writes the result document to the output folder (atomically: renamed into place locally, one
/// PUT in an object store) and, when present, the termination log.
pub fn write_result(output: &Output, termination_log: &Path, result: &TrialResult) {
    let body = serde_json::to_vec_pretty(result).unwrap_or_default();
    match output {
        Output::Local(output) => {
            if std::fs::create_dir_all(output).is_ok() {
                let partial = output.join(format!(".{RESULT_FILE}.partial"));
                let written = std::fs::write(&partial, &body)
                    .and_then(|()| std::fs::rename(&partial, output.join(RESULT_FILE)));
                if let Err(e) = written {
                    eprintln!("failed to write {RESULT_FILE}: {e}");
                }
            }
        }
        Output::Store(location) => {
            let written = BlockingStore::from_env()
                .and_then(|store| store.put(&location.join(RESULT_FILE), body.clone()));
            if let Err(e) = written {
                eprintln!("failed to write {RESULT_FILE}: {e}");
            }
        }
    }
    if termination_log.exists()
        && let Err(e) = std::fs::write(termination_log, result.to_termination_message())
    {
        eprintln!("failed to write {}: {e}", termination_log.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_summary_is_the_mean_and_spread_where_each_metric_is_defined() {
        let fold = |pairs: &[(&str, f64)]| -> BTreeMap<String, f64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let (mean, std, n) = fold_summary(&[
            fold(&[("accuracy", 0.8), ("roc_auc", 0.9)]),
            fold(&[("accuracy", 1.0)]),
            fold(&[("accuracy", 0.9), ("roc_auc", 0.7)]),
        ]);
        assert!((mean["accuracy"] - 0.9).abs() < 1e-12);
        assert!((std["accuracy"] - (0.02f64 / 3.0).sqrt()).abs() < 1e-12);
        // AUC was undefined on the second fold: averaged over the other two.
        assert!((mean["roc_auc"] - 0.8).abs() < 1e-12);
        assert!((std["roc_auc"] - 0.1).abs() < 1e-12);
        assert_eq!((n["accuracy"], n["roc_auc"]), (3.0, 2.0));
    }

    #[test]
    fn small_tables_are_selected_by_repeated_folds_unless_folds_is_given() {
        let selected = |repeats| Evaluation::Selected {
            folds: AUTO_FOLDS,
            repeats,
        };
        assert_eq!(evaluation(None, 150), selected(AUTO_REPEATS));
        assert_eq!(evaluation(None, REPEAT_BELOW_ROWS), selected(1));
        assert_eq!(evaluation(None, SMALL_DATA_ROWS - 1), selected(1));
        assert_eq!(evaluation(None, SMALL_DATA_ROWS), Evaluation::Holdout);
        assert_eq!(evaluation(Some(0), 150), Evaluation::Holdout);
        assert_eq!(evaluation(Some(3), 150), Evaluation::KFold(3));
    }

    #[test]
    fn all_but_last_holds_back_the_final_report() {
        let mut reporter = Reporter::new(Reports::AllButLast);
        let mut computed = 0;
        for step in [3, 6, 9] {
            reporter.report(step, || {
                computed += 1;
                BTreeMap::new()
            });
        }
        assert_eq!(reporter.last_step, 9);
        assert_eq!(reporter.held.as_ref().map(|(step, _)| *step), Some(9));
        assert_eq!(computed, 3);
        let mut silent = Reporter::new(Reports::Silent);
        silent.report(5, || unreachable!("silent reports are not computed"));
        assert_eq!(silent.last_step, 5);
    }
}
