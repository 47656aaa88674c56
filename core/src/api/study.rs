use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::Latency;
use crate::search::space::{Domain, Family, ParamValue, Params, Task};

/// A Study: "here is my table, predict this column, within this budget". The operator (or
/// `flywheel run` on one machine) expands it into Trials, each training one candidate model,
/// and promotes the winner.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flywheel.dev",
    version = "v1alpha1",
    kind = "Study",
    plural = "studies",
    namespaced,
    shortname = "st",
    category = "flywheel",
    status = "StudyStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Trials","type":"string","description":"finished / maxTrials","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"Best","type":"number","description":"best objective so far","jsonPath":".status.bestTrial.objective"}"#,
    printcolumn = r#"{"name":"Family","type":"string","description":"family of the best trial","jsonPath":".status.bestTrial.family"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct StudySpec {
    /// The table to learn from and the column to predict.
    pub dataset: DatasetSpec,
    /// The metric trials are ranked by.
    pub objective: Objective,
    /// Model families to try, each with optional hyper-parameter domains. Empty: every family
    /// that fits the task, each with its default space.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search_space: Vec<FamilySpace>,
    /// How the next configuration is chosen.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// When to stop unpromising trials before they finish.
    #[serde(default)]
    pub early_stopping: EarlyStopping,
    /// How much the study may spend.
    pub budget: Budget,
    /// Limits a model must meet to be the winner.
    #[serde(default, skip_serializing_if = "Constraints::is_empty")]
    pub constraints: Constraints,
    /// How trial workloads run (image, resources, GPUs, scheduling).
    #[serde(default, skip_serializing_if = "TrialTemplate::is_empty")]
    pub trial: TrialTemplate,
    /// Where the winner goes when the study succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<Promotion>,
    /// What earlier work seeds this study.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_start: Option<WarmStart>,
    /// Set on a retraining study: the study it continues and why it was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<StudyOrigin>,
    /// How each trial scores its model: a holdout split (the default) or k-fold
    /// cross-validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Evaluation>,
    /// The ensemble built from the finished trials after the search (on by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<EnsembleSpec>,
}

/// After the search, the finished trials' models are combined by greedy ensemble selection on
/// their validation (or out-of-fold) predictions and exported as one ONNX model; it replaces
/// the best single trial as the winner only when it scores better on validation and meets the
/// latency ceiling and `constraints`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnsembleSpec {
    /// Build an ensemble (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Most distinct trials in the ensemble (default 5): each adds its latency to every
    /// prediction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50))]
    pub max_members: Option<u32>,
    /// Largest acceptable p99 single-row latency of the ensemble under ONNX Runtime; unset:
    /// `constraints.maxPredictLatencyMicros`, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_predict_latency_micros: Option<u64>,
}

impl EnsembleSpec {
    pub const DEFAULT_MAX_MEMBERS: u32 = 5;

    /// The settings of `spec.ensemble`, an absent one meaning the defaults.
    pub fn of(spec: &StudySpec) -> EnsembleSpec {
        spec.ensemble.clone().unwrap_or_default()
    }

    pub fn enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }

    pub fn max_members(&self) -> u32 {
        self.max_members.unwrap_or(Self::DEFAULT_MAX_MEMBERS)
    }

    /// The latency ceiling the ensemble must meet, if any.
    pub fn latency_ceiling(&self, constraints: &Constraints) -> Option<u64> {
        self.max_predict_latency_micros
            .or(constraints.max_predict_latency_micros)
    }
}

/// How trials are scored.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// Number of cross-validation folds (stratified for classification). Unset: automatic —
    /// a table under 10,000 rows is selected by repeated 5-fold cross-validation on the rows
    /// outside a final holdout (`holdoutFraction`), which only measures the winner; a larger
    /// one by one holdout split. Set: N-fold over every row, the exported model refit on all
    /// of them (no final holdout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 20))]
    pub folds: Option<u32>,
    /// Fraction of rows held out for validation when not cross-validating (default 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0 && self < 1.0").message("holdoutFraction must be between 0 and 1, e.g. 0.2"))]
    pub holdout_fraction: Option<f64>,
}

/// Why a retraining study exists: production feedback fired a trigger of the parent's
/// ModelDeployment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StudyOrigin {
    /// The study whose model was serving when the trigger fired.
    pub parent_study: String,
    /// 1 for the first retraining of an original study, then one more per retraining.
    #[schemars(range(min = 1))]
    pub generation: u32,
    /// Every earlier study of the family, nearest first (the parent, its parent, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<String>,
    /// The trigger that fired: NewLabels, MetricThreshold, Degradation or ModelAge.
    pub trigger: String,
    /// The trigger's explanation, with the numbers behind it.
    pub message: String,
    /// Labelled production rows added to the parent's dataset.
    #[serde(default)]
    pub production_rows: u64,
    /// Where the serving model erred most in production, worst first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_slices: Vec<crate::feedback::ErrorSlice>,
}

/// The training table.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatasetSpec {
    /// Where the table is: `file:///path/data.csv`, a plain path, or an object-store URI such
    /// as `s3://bucket/key.parquet`.
    #[x_kube(validation = Rule::new("self.size() > 0").message("uri must not be empty; set it to the table's location, e.g. file:///data/train.csv"))]
    pub uri: String,
    /// The column to predict.
    #[x_kube(validation = Rule::new("self.size() > 0").message("target must name the column to predict"))]
    pub target: String,
    /// binary, multiclass, regression, or auto (decided from the target column).
    #[serde(default)]
    pub task: Task,
    /// File format; auto decides from the URI's extension.
    #[serde(default)]
    pub format: DataFormat,
    /// Labelled production rows appended to the table: the prediction log of a served model
    /// joined with its feedback. The operator sets this on a retraining study; the trainer
    /// reads the archived log segments and adds one row per labelled prediction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feedback: Vec<FeedbackSource>,
}

/// A served model's archived prediction log, read as extra training rows.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackSource {
    /// The folder the server archives its prediction-log segments to (its
    /// `--log-archive-uri`), e.g. `s3://bucket/flywheel/default/logs/churn`.
    #[x_kube(validation = Rule::new("self.size() > 0").message("uri must name the prediction log archive, e.g. s3://bucket/flywheel/default/logs/churn"))]
    pub uri: String,
    /// The model name the predictions were logged under.
    #[x_kube(validation = Rule::new("self.size() > 0").message("model must name the served model whose predictions to read"))]
    pub model: String,
    /// Records logged after this time (RFC 3339) are left out, so every trial of the study
    /// reads the same rows however much the log has grown since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// The dataset's file format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    #[default]
    Auto,
    Csv,
    Parquet,
}

/// The metric trials are ranked by. Its direction (maximise or minimise) follows from the metric.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Objective {
    /// accuracy, balanced_accuracy, f1_macro, roc_auc, log_loss (classification); rmse, mae, r2
    /// (regression).
    pub metric: Metric,
    /// Stop the study as soon as a trial reaches this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<f64>,
}

/// An evaluation metric.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Accuracy,
    BalancedAccuracy,
    F1Macro,
    RocAuc,
    LogLoss,
    Rmse,
    Mae,
    R2,
}

/// Whether larger or smaller values are better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Maximize,
    Minimize,
}

impl Metric {
    pub const ALL: [Metric; 8] = [
        Metric::Accuracy,
        Metric::BalancedAccuracy,
        Metric::F1Macro,
        Metric::RocAuc,
        Metric::LogLoss,
        Metric::Rmse,
        Metric::Mae,
        Metric::R2,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::BalancedAccuracy => "balanced_accuracy",
            Metric::F1Macro => "f1_macro",
            Metric::RocAuc => "roc_auc",
            Metric::LogLoss => "log_loss",
            Metric::Rmse => "rmse",
            Metric::Mae => "mae",
            Metric::R2 => "r2",
        }
    }

    pub fn direction(self) -> Direction {
        match self {
            Metric::LogLoss | Metric::Rmse | Metric::Mae => Direction::Minimize,
            _ => Direction::Maximize,
        }
    }

    pub fn is_regression(self) -> bool {
        matches!(self, Metric::Rmse | Metric::Mae | Metric::R2)
    }

    /// Whether the metric needs class probabilities rather than labels.
    pub fn needs_probabilities(self) -> bool {
        matches!(self, Metric::RocAuc | Metric::LogLoss)
    }
}

impl Direction {
    /// Whether `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::Maximize => a > b,
            Direction::Minimize => a < b,
        }
    }

    /// Whether `value` meets `goal`.
    pub fn reaches(self, value: f64, goal: f64) -> bool {
        match self {
            Direction::Maximize => value >= goal,
            Direction::Minimize => value <= goal,
        }
    }
}

/// One model family in the search space.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FamilySpace {
    /// linear, logistic, svm, decision_tree, random_forest, gradient_boosting or mlp.
    pub family: Family,
    /// Domains for this family's hyper-parameters; a parameter left out is searched over its
    /// documented default domain (see docs/search-space.md).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, ParamDomain>,
    /// Hyper-parameters pinned to one value for every trial of this family.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fixed: BTreeMap<String, ParamValue>,
}

/// The domain of one hyper-parameter: exactly one of `float`, `int` or `categorical`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.float) ? 1 : 0) + (has(self.int) ? 1 : 0) + (has(self.categorical) ? 1 : 0) == 1").message("set exactly one of float, int or categorical"))]
#[serde(rename_all = "camelCase")]
pub struct ParamDomain {
    /// Real values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub float: Option<FloatDomain>,
    /// Integers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int: Option<IntDomain>,
    /// A fixed set of choices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categorical: Option<CategoricalDomain>,
}

/// Real values between `low` and `high`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.low < self.high").message("low must be less than high"))]
#[x_kube(validation = Rule::new("!has(self.log) || !self.log || self.low > 0.0").message("a log domain needs low > 0"))]
#[serde(rename_all = "camelCase")]
pub struct FloatDomain {
    /// Smallest value.
    pub low: f64,
    /// Largest value.
    pub high: f64,
    /// Sample uniformly in log space (for rates and regularisation strengths).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log: bool,
    /// Number of grid points, required for the grid algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub steps: Option<u32>,
}

/// Integers between `low` and `high`, both included.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.low < self.high").message("low must be less than high"))]
#[x_kube(validation = Rule::new("!has(self.log) || !self.log || self.low > 0").message("a log domain needs low > 0"))]
#[serde(rename_all = "camelCase")]
pub struct IntDomain {
    /// Smallest value (included).
    pub low: i64,
    /// Largest value (included).
    pub high: i64,
    /// Sample uniformly in log space.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log: bool,
}

/// A fixed set of values.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CategoricalDomain {
    /// The choices (strings, numbers or booleans).
    #[schemars(length(min = 1))]
    pub values: Vec<ParamValue>,
}

impl ParamDomain {
    /// The domain as the search engine sees it; `None` unless exactly one kind is set.
    pub fn to_domain(&self) -> Option<Domain> {
        match (&self.float, &self.int, &self.categorical) {
            (Some(f), None, None) => Some(Domain::Float {
                low: f.low,
                high: f.high,
                log: f.log,
                steps: f.steps,
            }),
            (None, Some(i), None) => Some(Domain::Int {
                low: i.low,
                high: i.high,
                log: i.log,
            }),
            (None, None, Some(c)) => Some(Domain::Categorical {
                values: c.values.clone(),
            }),
            _ => None,
        }
    }
}

/// The search algorithm.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.tpe) || self.name == 'tpe'").message("tpe settings need name: tpe"))]
#[serde(rename_all = "camelCase")]
pub struct Algorithm {
    /// random, grid or tpe (Tree-structured Parzen Estimator, the default).
    #[serde(default)]
    pub name: AlgorithmName,
    /// Seed for every random choice; the same seed and observations give the same suggestions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// TPE settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpe: Option<TpeSettings>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmName {
    Random,
    Grid,
    #[default]
    Tpe,
}

/// Settings of the Tree-structured Parzen Estimator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TpeSettings {
    /// Random suggestions before the model takes over (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub startup_trials: Option<u32>,
    /// Candidates drawn from the good-trial density per suggestion (default 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub candidates: Option<u32>,
    /// Fraction of finished trials counted as good (default 0.25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0 && self < 1.0").message("gamma must be between 0 and 1"))]
    pub gamma: Option<f64>,
}

/// Early stopping of unpromising trials, judged on their intermediate reports.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.median) || self.rule == 'median'").message("median settings need rule: median"))]
#[x_kube(validation = Rule::new("!has(self.asha) || self.rule == 'asha'").message("asha settings need rule: asha"))]
#[serde(rename_all = "camelCase")]
pub struct EarlyStopping {
    /// none, median (stop a trial worse than the median of others at the same step) or asha
    /// (asynchronous successive halving).
    #[serde(default)]
    pub rule: EarlyStoppingRule,
    /// Settings of the median rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median: Option<MedianSettings>,
    /// Settings of ASHA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asha: Option<AshaSettings>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EarlyStoppingRule {
    #[default]
    None,
    Median,
    Asha,
}

/// The median stopping rule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MedianSettings {
    /// Trials that must have reported a step before the rule judges it (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_trials: Option<u32>,
    /// Steps before which no trial is stopped (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<u64>,
}

/// Asynchronous successive halving: at rungs `minResource * reductionFactor^k` only the best
/// `1 / reductionFactor` of the trials that reached the rung continue.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AshaSettings {
    /// Resource (steps) at the first rung (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_resource: Option<u64>,
    /// How aggressively to cut at each rung (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2))]
    pub reduction_factor: Option<u32>,
}

/// What the study may spend.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// Trials to run in total (failed and pruned ones count).
    #[schemars(range(min = 1))]
    pub max_trials: u32,
    /// Trials running at once (default 1 in a cluster; the number of cores for `flywheel run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub parallelism: Option<u32>,
    /// The study stops once this many trials have failed for reasons outside their
    /// configuration (a crash, a timeout, an evicted pod; default 3). A configuration that
    /// cannot work (`BadInput`, `ParityMismatch`) fails only its trial and steers the sampler
    /// away, and counts here only while no trial has succeeded, so a broken dataset still ends
    /// the study early. A study stopped this way with a succeeded trial promotes its best.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_failed_trials: Option<u32>,
    /// Wall-clock limit for the whole study; running trials are stopped when it passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<u64>,
    /// Wall-clock limit for one trial, counted from its Job's start: time Pending (waiting
    /// for a node, a GPU, an image) counts, as with Kubernetes' `activeDeadlineSeconds`, so a
    /// trial the cluster cannot place ends instead of holding its slot forever. A trial that
    /// was never scheduled fails `Unschedulable` with the scheduler's message, not
    /// `TrialTimeout`. Give GPU studies on autoscaled pools time for a node to arrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub trial_timeout_seconds: Option<u64>,
}

impl Budget {
    pub const DEFAULT_MAX_FAILED_TRIALS: u32 = 3;

    pub fn max_failed_trials(&self) -> u32 {
        self.max_failed_trials
            .unwrap_or(Self::DEFAULT_MAX_FAILED_TRIALS)
    }
}

/// Limits the winner must meet; trials over a limit are kept but never promoted.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Constraints {
    /// Largest acceptable p99 single-row latency of the exported model under ONNX Runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_predict_latency_micros: Option<u64>,
    /// Largest acceptable size of the exported ONNX file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_model_bytes: Option<u64>,
}

impl Constraints {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// How each trial's workload runs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrialTemplate {
    /// Container image; defaults to the Flywheel trainer. A custom image must follow the trial
    /// protocol (docs/trial-protocol.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Command replacing the image's entrypoint (custom trials).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments for the command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// CPU and memory requests and limits of the trial container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// GPUs per trial, requested as `nvidia.com/gpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 16))]
    pub gpus: Option<u32>,
    /// Threads a trial may use; keeps parallel trials from oversubscribing cores (default: the
    /// CPU limit, or 1 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 512))]
    pub threads: Option<u32>,
    /// Node labels the trial pod must match (e.g. a GPU node pool).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the trial pod tolerates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Extra environment variables for the trial container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

impl TrialTemplate {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Where the winner goes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Promotion {
    /// Name of the ModelDeployment (same namespace) that serves the winner.
    #[x_kube(validation = Rule::new("self.size() > 0").message("deployment must name a ModelDeployment"))]
    pub deployment: String,
    /// auto: promote when the study succeeds; shadow: deploy the winner as the shadow model,
    /// promoted only if it beats the serving model on live feedback; manual: record the winner
    /// and wait.
    #[serde(default)]
    pub policy: PromotionPolicy,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PromotionPolicy {
    #[default]
    Auto,
    Shadow,
    Manual,
}

/// Earlier knowledge that seeds the study.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WarmStart {
    /// Earlier studies (same namespace) whose finished trials seed the sampler's history.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub studies: Vec<String>,
    /// Of each earlier study, how many best trials to re-run first (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Configurations tried before any sampled one, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configurations: Vec<Configuration>,
}

/// One explicit configuration: a family and its hyper-parameter values.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Configuration {
    /// The model family.
    pub family: Family,
    /// Hyper-parameter values; those left out take their documented defaults.
    #[serde(default)]
    pub params: Params,
}

/// Observed state of a Study.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StudyStatus {
    /// Pending, Running, Succeeded or Failed.
    #[serde(default)]
    pub phase: StudyPhase,
    /// Standard conditions: Running, Succeeded, Failed, Promoted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Trials by phase.
    #[serde(default)]
    pub trials: TrialCounts,
    /// Finished trials over `maxTrials`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The best finished trial that meets the constraints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_trial: Option<BestTrial>,
    /// The `metadata.generation` this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the first trial was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the study reached Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The ensemble built from the finished trials, and whether it replaced the best trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<EnsembleStatus>,
}

/// The ensemble built after the search.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnsembleStatus {
    /// Its name: the model card's version.
    pub name: String,
    /// Members as `trial=weight`, heaviest first.
    #[serde(default)]
    pub members: Vec<String>,
    /// The objective metric on the selection rows (validation or out-of-fold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<f64>,
    /// The best single member's objective on the same rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_single_objective: Option<f64>,
    /// The composed graph's prediction latency, measured like a trial's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// The size of the composed ONNX file in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_bytes: Option<u64>,
    /// Whether it is the study's winner instead of the best trial.
    pub promoted: bool,
    /// Why it was or was not promoted (or why it could not be built).
    #[serde(default)]
    pub message: String,
    /// Where the exported ensemble is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_uri: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StudyPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// Trials by phase.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrialCounts {
    /// Created, not yet running.
    pub pending: u32,
    /// Training now.
    pub running: u32,
    /// Finished with a scored model.
    pub succeeded: u32,
    /// Finished without a model (error, timeout).
    pub failed: u32,
    /// Stopped early by the early-stopping rule or the study.
    pub pruned: u32,
}

impl TrialCounts {
    pub fn finished(&self) -> u32 {
        self.succeeded + self.failed + self.pruned
    }

    pub fn total(&self) -> u32 {
        self.finished() + self.pending + self.running
    }
}

/// The winning trial so far.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BestTrial {
    /// The Trial's name.
    pub name: String,
    pub family: Family,
    /// Its hyper-parameter values.
    #[serde(default)]
    pub params: Params,
    /// The objective metric's value.
    pub objective: f64,
    /// Every metric the trial reported.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Where the exported model is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_uri: Option<String>,
    /// The trial's metrics on the final holdout, rows no trial was selected on (see
    /// `TrialStatus.holdoutMetrics`): the gap to `metrics` is the optimism of selection.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub holdout_metrics: BTreeMap<String, f64>,
    /// Set when trials tied on the objective within its noise and the cheaper one was chosen:
    /// `latency` (lower p99) or `size` (smaller ONNX file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_broken_by: Option<String>,
}
