//! Command-line flags. Every flag has an environment fallback so the operator can configure a
//! trial pod through `env:` alone.

use std::path::PathBuf;

use clap::Parser;
use flywheel_store::Location;

/// Train one model family on a tabular dataset, export the whole pipeline to ONNX and check that
/// the export reproduces the trained model. Speaks the Flywheel trial protocol
/// (docs/trial-protocol.md).
#[derive(Debug, Clone, Parser)]
#[command(name = "flywheel-trainer", version)]
pub struct Args {
    /// Dataset location: a plain path, a `file://` URI or an `s3://bucket/key` URI of a CSV file
    /// with a header row or a Parquet file (see --format).
    #[arg(long, env = "FLYWHEEL_DATASET")]
    pub dataset: String,

    /// The column to predict.
    #[arg(long, env = "FLYWHEEL_TARGET")]
    pub target: String,

    /// auto, binary, multiclass or regression; auto decides from the target column.
    #[arg(long, env = "FLYWHEEL_TASK", default_value = "auto")]
    pub task: String,

    /// The metric reported as the objective (accuracy, balanced_accuracy, f1_macro, roc_auc,
    /// log_loss, rmse, mae, r2); defaults to accuracy or r2 by task. All applicable metrics are
    /// computed either way.
    #[arg(long, env = "FLYWHEEL_METRIC")]
    pub metric: Option<String>,

    /// Model family: linear, logistic, svm, decision_tree, random_forest, gradient_boosting or
    /// mlp.
    #[arg(long, env = "FLYWHEEL_FAMILY")]
    pub family: String,

    /// Hyper-parameters as a JSON object, e.g. '{"max_depth":6}'; names and limits follow the
    /// search-space catalogue, and a parameter left out takes its documented default.
    #[arg(long, env = "FLYWHEEL_PARAMS", default_value = "{}")]
    pub params: String,

    /// Seed for the holdout split and every random choice in training.
    #[arg(long, env = "FLYWHEEL_SEED", default_value_t = 0)]
    pub seed: u64,

    /// Fidelity cap on the family's resource parameter (trees, epochs): the trial trains at
    /// most this many units.
    #[arg(long, env = "FLYWHEEL_BUDGET")]
    pub budget: Option<u64>,

    /// Artifact folder: a path or a `file://` URI (created if missing), or an `s3://bucket/prefix`
    /// URI (credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional AWS_REGION and
    /// AWS_ENDPOINT_URL). model.onnx, model.json, schema.json, holdout.json, predictions.json and
    /// result.json land here, result.json last.
    #[arg(long, env = "FLYWHEEL_OUTPUT", value_parser = parse_output)]
    pub output: Output,

    /// Worker threads for training and inference; keep it at the pod's CPU limit so parallel
    /// trials do not oversubscribe the node.
    #[arg(long, env = "FLYWHEEL_THREADS", default_value_t = 1)]
    pub threads: usize,

    /// Study name, recorded in the model card's lineage.
    #[arg(long, env = "FLYWHEEL_STUDY")]
    pub study: Option<String>,

    /// Trial name, recorded in the model card's lineage.
    #[arg(long, env = "FLYWHEEL_TRIAL")]
    pub trial: Option<String>,

    /// Retraining generation of the study, recorded in the model card's lineage.
    #[arg(long, env = "FLYWHEEL_GENERATION", default_value_t = 0)]
    pub generation: u32,

    /// The studies this study retrained, nearest first (comma-separated), recorded in the
    /// model card's lineage.
    #[arg(long, env = "FLYWHEEL_PARENT_STUDIES", value_delimiter = ',')]
    pub parent_studies: Vec<String>,

    /// Labelled production rows to append to the dataset: a JSON list of prediction-log
    /// archives, as in the study's `spec.dataset.feedback`
    /// (`[{"uri":"s3://bucket/logs/churn","model":"churn","until":"2026-11-30T10:00:00Z"}]`).
    #[arg(long, env = "FLYWHEEL_FEEDBACK", default_value = "")]
    pub feedback: String,

    /// Fraction of rows held out for validation (stratified for classification).
    #[arg(long, env = "FLYWHEEL_HOLDOUT", default_value_t = 0.2)]
    pub holdout: f64,

    /// Cross-validation folds. Unset: automatic — under 10,000 rows, repeated 5-fold
    /// cross-validation (stratified for classification) on the rows outside a final holdout
    /// (--holdout) gives the reported metrics, and the model trained on those rows is scored on
    /// the holdout (`holdout_metrics`) and exported; from 10,000 rows, as 0. 0 scores the model
    /// on one holdout split (--holdout); N ≥ 2 scores it by N-fold cross-validation over every
    /// row, reports the mean over the folds, and exports a model refit on every row.
    #[arg(long, env = "FLYWHEEL_FOLDS")]
    pub folds: Option<usize>,

    /// Feature cache shared by trials: a folder path, a `file://` URI or an `s3://bucket/prefix`
    /// URI where the parsed and typed dataset is kept, keyed by the dataset's digest, the target
    /// and the task, so only the first trial on a dataset parses it. Unset or empty: no cache.
    #[arg(long, env = "FLYWHEEL_FEATURE_CACHE")]
    pub feature_cache: Option<String>,

    /// Dataset format: auto (by the file extension: .parquet or .pq is Parquet; otherwise
    /// Parquet's magic bytes decide, else CSV), csv or parquet.
    #[arg(long, env = "FLYWHEEL_FORMAT", value_enum, default_value_t = crate::data::Format::Auto)]
    pub format: crate::data::Format,
}

/// Where a trial's artifacts go.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A local folder; files are renamed into it from a staging folder beside them.
    Local(PathBuf),
    /// An object-store folder (`s3://`); files are staged under the temp dir (a pod's root file
    /// system is read-only, /tmp an emptyDir) and uploaded.
    Store(Location),
}

impl Output {
    /// The folder as the result document's `artifact_uri` names it, before canonicalisation.
    pub fn uri(&self) -> String {
        match self {
            Output::Local(path) => format!("file://{}", path.display()),
            Output::Store(location) => location.to_string(),
        }
    }
}

/// The artifact folder of `--output`: the operator hands trials `file://` or `s3://` URIs (the
/// artifact store's forms), a person usually a path.
fn parse_output(value: &str) -> Result<Output, String> {
    match value.split_once("://") {
        None => Ok(Output::Local(PathBuf::from(value))),
        Some(("file", path)) if !path.is_empty() => Ok(Output::Local(PathBuf::from(path))),
        Some(("s3", _)) => match Location::parse(value) {
            Ok(location @ Location::S3 { .. }) => Ok(Output::Store(location)),
            Ok(Location::Local(path)) => Ok(Output::Local(path)),
            Err(error) => Err(error.to_string()),
        },
        Some((scheme, _)) => Err(format!(
            "unsupported artifact scheme {scheme:?}: pass a folder path, a file:// URI or an \
             s3://bucket/prefix URI"
        )),
    }
}

#[cfg(test)]
mod output_tests {
    use super::{Location, Output, parse_output};
    use std::path::PathBuf;

    #[test]
    fn output_takes_paths_file_and_s3_uris() {
        assert_eq!(
            parse_output("file:///artifacts/ml/s/s-0"),
            Ok(Output::Local(PathBuf::from("/artifacts/ml/s/s-0")))
        );
        assert_eq!(
            parse_output("out/t-1"),
            Ok(Output::Local(PathBuf::from("out/t-1")))
        );
        assert_eq!(
            parse_output("s3://bucket/ml/s/s-0/"),
            Ok(Output::Store(Location::S3 {
                bucket: "bucket".into(),
                key: "ml/s/s-0".into()
            }))
        );
        assert_eq!(
            parse_output("s3://bucket/ml/s/s-0")
                .map(|o| o.uri())
                .as_deref(),
            Ok("s3://bucket/ml/s/s-0")
        );
        assert!(parse_output("gs://bucket/x").unwrap_err().contains("s3://"));
        assert!(parse_output("s3:///x").unwrap_err().contains("bucket"));
        assert!(parse_output("file://").is_err());
    }
}

/// `flywheel-trainer ensemble`: compose finished trials into one ONNX model. The members'
/// weights are chosen by greedy ensemble selection on their `predictions.json` unless --weights
/// gives them.
#[derive(Debug, Clone, Parser)]
#[command(name = "flywheel-trainer ensemble", version)]
pub struct EnsembleArgs {
    /// The members' artifact folders (each with model.onnx, model.json and predictions.json),
    /// comma-separated or repeated.
    #[arg(long, env = "FLYWHEEL_MEMBERS", value_delimiter = ',', required = true)]
    pub members: Vec<PathBuf>,

    /// Fixed member weights, one per --members entry (normalised to sum 1); omitted: greedy
    /// selection on the members' predictions.
    #[arg(long, env = "FLYWHEEL_WEIGHTS", value_delimiter = ',')]
    pub weights: Vec<f64>,

    /// The metric the selection optimises (as --metric of a trial); defaults to accuracy or r2
    /// by task.
    #[arg(long, env = "FLYWHEEL_METRIC")]
    pub metric: Option<String>,

    /// Most distinct members the selection keeps (each adds its latency to every prediction).
    #[arg(long, env = "FLYWHEEL_MAX_MEMBERS", default_value_t = 5)]
    pub max_members: usize,

    /// Selection rounds: picks with replacement, so weights are multiples of 1/rounds at best.
    #[arg(long, env = "FLYWHEEL_ROUNDS", default_value_t = 25)]
    pub rounds: usize,

    /// The members' dataset (path, `file://` or `s3://` URI): the parity gate runs the members
    /// and the composed graph on its rows.
    #[arg(long, env = "FLYWHEEL_DATASET")]
    pub dataset: String,

    /// Dataset format, as for a trial.
    #[arg(long, env = "FLYWHEEL_FORMAT", value_enum, default_value_t = crate::data::Format::Auto)]
    pub format: crate::data::Format,

    /// Artifact folder for the ensemble (path, `file://` or `s3://`), laid out as a trial's.
    #[arg(long, env = "FLYWHEEL_OUTPUT", value_parser = parse_output)]
    pub output: Output,

    /// The ensemble's name: its model card's version.
    #[arg(long, env = "FLYWHEEL_TRIAL", default_value = "ensemble")]
    pub name: String,

    /// Study name, recorded in the model card's lineage.
    #[arg(long, env = "FLYWHEEL_STUDY")]
    pub study: Option<String>,

    /// Worker threads for ONNX Runtime.
    #[arg(long, env = "FLYWHEEL_THREADS", default_value_t = 1)]
    pub threads: usize,
}
