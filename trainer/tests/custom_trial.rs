//! The Python custom-trial example (examples/custom-trial) speaks the same protocol as the
//! built-in trainer: its documents parse as the Rust wire types and it prints report lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use flywheel_core::model_card::ModelCard;
use flywheel_core::protocol::{FailureReason, Message, Outcome, TrialResult, exit_code};
use flywheel_core::search::space::{Family, Task};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The project's Python (scripts/setup-python.sh); `None` means skip, which CI never allows.
fn python() -> Option<PathBuf> {
    let python = root().join(".venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {} is missing: run scripts/setup-python.sh",
        python.display()
    );
    eprintln!(
        "SKIPPED custom trial test: {} is missing (run scripts/setup-python.sh)",
        python.display()
    );
    None
}

fn run(python: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(python)
        .arg(root().join("examples/custom-trial/train.py"))
        .args(extra)
        .env("FLYWHEEL_DATASET", root().join("examples/data/iris.csv"))
        .env("FLYWHEEL_TARGET", "species")
        .env("FLYWHEEL_OUTPUT", output)
        .env(
            "FLYWHEEL_TERMINATION_LOG",
            output.join("no-termination-log"),
        )
        .output()
        .expect("run train.py")
}

#[test]
fn custom_trial_follows_the_protocol_on_iris() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");
    // Flags and environment mix, as in a pod.
    let out = run(
        &python,
        &output,
        &[
            "--family",
            "random_forest",
            "--params",
            r#"{"n_estimators":30}"#,
            "--seed",
            "1",
            "--threads",
            "2",
            "--trial",
            "iris-custom-1",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(exit_code::SUCCESS),
        "stdout: {stdout}\nstderr: {stderr}"
    );

    let reports: Vec<_> = stdout
        .lines()
        .filter_map(Message::parse_line)
        .map(|Message::Report(report)| report)
        .collect();
    assert!(!reports.is_empty(), "no report line in {stdout}");
    assert!(reports.windows(2).all(|w| w[0].step < w[1].step));
    assert_eq!(reports.last().unwrap().step, 30);
    assert!(reports.last().unwrap().metrics.contains_key("accuracy"));

    let result: TrialResult =
        serde_json::from_str(&std::fs::read_to_string(output.join("result.json")).unwrap())
            .expect("result.json parses as TrialResult");
    assert_eq!(result.outcome, Outcome::Succeeded);
    assert!(
        result.metrics["accuracy"] >= 0.9,
        "accuracy {:?}",
        result.metrics
    );
    assert!(result.artifact_uri.unwrap().starts_with("file://"));

    let card: ModelCard =
        serde_json::from_str(&std::fs::read_to_string(output.join("model.json")).unwrap())
            .expect("model.json parses as ModelCard");
    assert_eq!(card.family, Family::RandomForest);
    assert_eq!(card.task, Task::Multiclass);
    assert_eq!(card.version, "iris-custom-1");
    assert_eq!(card.classes, ["setosa", "versicolor", "virginica"]);
    assert_eq!(card.inputs.len(), 4);
    assert_eq!(card.outputs.label, "label");
    assert_eq!(card.outputs.probabilities.as_deref(), Some("probabilities"));
    assert_eq!(card.metrics, result.metrics);
    assert_eq!(card.lineage.dataset_digest.len(), 64);
    assert_eq!(
        card.model_bytes,
        Some(std::fs::metadata(output.join("model.onnx")).unwrap().len())
    );
    // Nothing staged is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&output)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn custom_trial_exit_codes_follow_the_protocol() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");
    let out = run(
        &python,
        &output,
        &["--family", "logistic", "--params", r#"{"depth":3}"#],
    );
    assert_eq!(out.status.code(), Some(exit_code::BAD_INPUT));
    let result: TrialResult =
        serde_json::from_str(&std::fs::read_to_string(output.join("result.json")).unwrap())
            .unwrap();
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(result.reason, Some(FailureReason::BadInput));
    assert!(result.message.unwrap().contains("depth"));
    assert!(!output.join("model.json").exists());
}
