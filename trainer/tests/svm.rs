//! End-to-end: the linear SVM family through the real `flywheel-trainer` binary — binary,
//! multiclass and regression, each exported to ONNX, through the parity gate and (when the
//! project's Python tooling is present) `onnx.checker`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use flywheel_core::protocol::Message;
use flywheel_core::search::space::{Family, Task};

mod common;
use common::*;

/// Runs the trainer with the svm family and checks the run succeeded with every artifact.
fn svm(dataset: &Path, target: &str, extra: &[&str]) -> Run {
    let run = trainer(dataset, target, "svm", extra).succeeded();
    assert!(
        run.output.join("holdout.json").is_file(),
        "holdout.json missing"
    );
    let reports: Vec<_> = run.stdout.lines().filter_map(Message::parse_line).collect();
    assert_eq!(
        reports.len(),
        1,
        "one report after the solve: {}",
        run.stdout
    );
    assert_eq!(run.card().family, Family::Svm);
    run
}

fn check_scores(run: &Run, classes: usize) {
    let holdout = run.holdout();
    let probabilities = holdout["probabilities"].as_array().expect("probabilities");
    let labels = holdout["predictions"].as_array().expect("predictions");
    let names = run.card().classes;
    assert_eq!(names.len(), classes);
    for (row, label) in probabilities.iter().zip(labels) {
        let row: Vec<f64> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(row.len(), classes);
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{row:?}");
        let best = (0..classes)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        assert_eq!(label.as_str(), Some(names[best].as_str()));
    }
}

#[test]
fn binary_svm_on_breast_cancer() {
    let run = svm(&data("breast_cancer.csv"), "diagnosis", &[]);
    assert!(run.metric("accuracy") >= 0.95, "{:?}", run.result().metrics);
    assert!(run.metric("roc_auc") >= 0.98, "{:?}", run.result().metrics);
    // Margin scores through a fitted temperature: a finite, sensible log loss.
    assert!(run.metric("log_loss") < 0.3, "{:?}", run.result().metrics);
    let card = run.card();
    assert_eq!(card.task, Task::Binary);
    assert_eq!(card.outputs.probabilities.as_deref(), Some("probabilities"));
    check_scores(&run, 2);
    // Strong regularisation still trains and exports.
    let weak = svm(
        &data("breast_cancer.csv"),
        "diagnosis",
        &["--params", r#"{"c":0.001}"#],
    );
    assert!(weak.metric("accuracy") >= 0.85);
}

#[test]
fn multiclass_svm_on_iris_and_penguins() {
    let run = svm(&data("iris.csv"), "species", &["--seed", "1"]);
    assert!(run.metric("accuracy") >= 0.85, "{:?}", run.result().metrics);
    assert_eq!(run.card().task, Task::Multiclass);
    check_scores(&run, 3);
    // Categorical and missing values go through the same featurisation as logistic.
    let run = svm(
        &data("penguins.csv"),
        "species",
        &["--params", r#"{"c":10}"#],
    );
    assert!(run.metric("accuracy") >= 0.9, "{:?}", run.result().metrics);
}

#[test]
fn svm_regression_on_diabetes() {
    for params in [r#"{"c":1.0}"#, r#"{"c":0.1,"epsilon":0.5}"#] {
        let run = svm(
            &data("diabetes.csv"),
            "progression",
            &["--params", params, "--metric", "r2"],
        );
        assert!(
            run.metric("r2") > 0.3,
            "{params}: {:?}",
            run.result().metrics
        );
        let card = run.card();
        assert_eq!(card.task, Task::Regression);
        assert_eq!(card.outputs.label, "variable");
        assert!(card.outputs.probabilities.is_none());
    }
}
