//! `--folds`: k-fold cross-validation end to end with the real binary — fold-mean metrics with
//! their spread, report lines early stopping can use, a model refit on every row that passes
//! the parity gate, and bad fold counts refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use flywheel_core::protocol::exit_code;

mod common;
use common::*;

#[test]
fn forest_folds_report_the_first_fold_then_the_mean() {
    let extra = [
        "--folds",
        "5",
        "--seed",
        "2",
        "--params",
        r#"{"n_estimators": 30}"#,
    ];
    let run = trainer(&data("iris.csv"), "species", "random_forest", &extra).succeeded();
    let result = run.result();
    let metrics = &result.metrics;
    assert!(metrics["accuracy"] >= 0.9, "{metrics:?}");
    let std = metrics["accuracy_std"];
    assert!((0.0..0.2).contains(&std), "{metrics:?}");
    assert_eq!(run.card().metrics, *metrics);
    // One fold per line on stderr.
    assert_eq!(run.stderr.matches("fold ").count(), 5, "{}", run.stderr);

    // The first fold's curve (trees built), then the mean at the last step.
    let reports = run.reports();
    let steps: Vec<u64> = reports.iter().map(|r| r.step).collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    assert_eq!(steps.last(), Some(&30), "{steps:?}");
    assert!(steps.len() >= 5, "{steps:?}");
    let last = &reports.last().unwrap().metrics;
    for (name, value) in last {
        assert_eq!(metrics.get(name), Some(value), "{name}");
        assert!(!name.ends_with("_std"));
    }

    // Refit on every row; the parity sample is all 150 rows here.
    assert_eq!(run.card().lineage.dataset_rows, 150);
    let holdout = run.holdout();
    assert_eq!(run.holdout_rows(), (0..150).collect::<Vec<u64>>());
    assert_eq!(holdout["predictions"].as_array().unwrap().len(), 150);

    // Deterministic for a seed.
    let again = trainer(&data("iris.csv"), "species", "random_forest", &extra).succeeded();
    assert_eq!(again.result().metrics, *metrics);
}

#[test]
fn folds_work_for_every_task_and_report_once_for_linear_models() {
    let run = trainer(
        &data("breast_cancer.csv"),
        "diagnosis",
        "logistic",
        &["--folds", "4"],
    )
    .succeeded();
    let reports = run.reports();
    assert_eq!(reports.len(), 1, "{}", run.stdout);
    assert_eq!(reports[0].metrics["roc_auc"], run.metric("roc_auc"));
    assert!(run.metric("roc_auc") >= 0.95);
    assert!(run.result().metrics.contains_key("roc_auc_std"));

    let run = trainer(
        &data("diabetes.csv"),
        "progression",
        "gradient_boosting",
        &["--folds", "3", "--params", r#"{"n_estimators": 30}"#],
    )
    .succeeded();
    assert!(run.metric("r2") > 0.2, "{:?}", run.result().metrics);
    assert!(run.metric("rmse_std") > 0.0);
    let steps: Vec<u64> = run.reports().iter().map(|r| r.step).collect();
    assert_eq!(steps, (1..=10).map(|i| i * 3).collect::<Vec<u64>>());

    // Categorical and missing values, one-hot per fold.
    let run = trainer(&data("penguins.csv"), "species", "mlp", &["--folds", "3"]).succeeded();
    assert!(run.metric("accuracy") >= 0.9, "{:?}", run.result().metrics);
}

#[test]
fn bad_fold_counts_are_bad_input() {
    for (folds, words) in [("1", "at least 2"), ("100", "too few")] {
        let run = trainer(
            &data("iris.csv"),
            "species",
            "decision_tree",
            &["--folds", folds],
        );
        assert_eq!(run.code, exit_code::BAD_INPUT, "{}", run.stderr);
        let message = run.result().message.unwrap_or_default();
        assert!(
            message.contains("--folds") && message.contains(words),
            "{message}"
        );
    }
}
