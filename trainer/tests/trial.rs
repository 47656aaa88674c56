//! End-to-end: the real `flywheel-trainer` binary on the example datasets, checked against the
//! trial protocol (report lines, result.json, exit codes, artifacts).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use flywheel_core::model_card::ColumnKind;
use flywheel_core::protocol::{FailureReason, Outcome, TrialResult, exit_code};

mod common;
use common::*;

#[test]
fn iris_logistic_tree_forest_and_boosting() {
    for family in [
        "logistic",
        "decision_tree",
        "random_forest",
        "gradient_boosting",
    ] {
        let run = trainer(&data("iris.csv"), "species", family, &["--seed", "1"]).succeeded();
        assert!(
            run.metric("accuracy") >= 0.9,
            "{family}: {:?}",
            run.result().metrics
        );
        let card = run.card();
        assert_eq!(card.classes, ["setosa", "versicolor", "virginica"]);
        assert_eq!(card.inputs.len(), 4);
        assert_eq!(card.outputs.label, "label");
        assert_eq!(card.outputs.probabilities.as_deref(), Some("probabilities"));
        assert_eq!(card.lineage.dataset_digest.len(), 64);
        assert!(card.latency.is_some_and(|l| l.p50_micros > 0.0));
        let reports = run.reports();
        assert!(
            !reports.is_empty(),
            "{family}: no report lines in {}",
            run.stdout
        );
        assert!(reports.windows(2).all(|w| w[0].step < w[1].step));
        assert!(reports.last().unwrap().metrics.contains_key("accuracy"));
        let result = run.result();
        assert!(result.artifact_uri.unwrap().starts_with("file://"));
        assert_eq!(result.model_bytes, card.model_bytes);
        assert!(result.timings.total_seconds > 0.0);
        let log = std::fs::read_to_string(run._dir.path().join("termination-log"));
        assert!(
            log.is_err(),
            "termination log written although it did not exist"
        );
    }
}

#[test]
fn boosting_reports_rounds() {
    let run = trainer(
        &data("iris.csv"),
        "species",
        "gradient_boosting",
        &["--params", r#"{"n_estimators": 30, "learning_rate": 0.3}"#],
    )
    .succeeded();
    let steps: Vec<u64> = run.reports().iter().map(|r| r.step).collect();
    assert_eq!(steps, (1..=10).map(|i| i * 3).collect::<Vec<u64>>());
}

#[test]
fn mlp_reports_epochs_and_learns_iris() {
    let run = trainer(
        &data("iris.csv"),
        "species",
        "mlp",
        &[
            "--params",
            r#"{"learning_rate": 0.01, "batch_size": 16, "epochs": 100, "activation": "tanh"}"#,
            "--budget",
            "60",
        ],
    )
    .succeeded();
    assert!(run.metric("accuracy") >= 0.9, "{:?}", run.result().metrics);
    let steps: Vec<u64> = run.reports().iter().map(|r| r.step).collect();
    assert_eq!(steps, (1..=10).map(|i| i * 6).collect::<Vec<u64>>());
}

#[test]
fn forest_reports_trees_built_and_respects_the_budget() {
    let run = trainer(
        &data("iris.csv"),
        "species",
        "random_forest",
        &["--params", r#"{"n_estimators": 40}"#, "--budget", "20"],
    )
    .succeeded();
    let steps: Vec<u64> = run.reports().iter().map(|r| r.step).collect();
    assert_eq!(steps.last(), Some(&20), "{steps:?}");
    assert!(steps.len() >= 5, "{steps:?}");
    assert_eq!(
        run.card().params["n_estimators"],
        flywheel_core::search::space::ParamValue::Int(20)
    );
}

#[test]
fn penguins_categorical_and_missing_values() {
    for family in [
        "logistic",
        "random_forest",
        "decision_tree",
        "gradient_boosting",
    ] {
        let run = trainer(&data("penguins.csv"), "species", family, &[]).succeeded();
        assert!(
            run.metric("accuracy") >= 0.9,
            "{family}: {:?}",
            run.result().metrics
        );
        let card = run.card();
        let island = card.inputs.iter().find(|i| i.name == "island").unwrap();
        assert_eq!(island.kind, ColumnKind::Categorical);
        let schema = run.schema();
        let sex = schema["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "sex")
            .unwrap();
        assert_eq!(sex["missing"], 11);
        assert!(sex["reason"].as_str().unwrap().contains("missing"));
    }
}

#[test]
fn diabetes_linear_regression() {
    for params in [r#"{"penalty":"l2"}"#, r#"{"penalty":"l1","alpha":0.05}"#] {
        let run = trainer(
            &data("diabetes.csv"),
            "progression",
            "linear",
            &["--params", params, "--metric", "r2"],
        )
        .succeeded();
        assert!(
            run.metric("r2") > 0.3,
            "{params}: {:?}",
            run.result().metrics
        );
        let card = run.card();
        assert_eq!(card.outputs.label, "variable");
        assert!(card.outputs.probabilities.is_none());
        assert!(card.classes.is_empty());
    }
    for family in ["random_forest", "gradient_boosting", "mlp"] {
        let run = trainer(&data("diabetes.csv"), "progression", family, &[]).succeeded();
        // The mean over repeated folds of ~350-row training sets (what a small table is now
        // selected by) is an honest estimate, below what one lucky holdout split can show.
        assert!(
            run.metric("r2") > 0.2,
            "{family}: {:?}",
            run.result().metrics
        );
    }
}

#[test]
fn breast_cancer_binary() {
    for family in ["logistic", "random_forest", "gradient_boosting", "mlp"] {
        let run = trainer(&data("breast_cancer.csv"), "diagnosis", family, &[]).succeeded();
        assert!(
            run.metric("accuracy") >= 0.9,
            "{family}: {:?}",
            run.result().metrics
        );
        assert!(
            run.metric("roc_auc") >= 0.95,
            "{family}: {:?}",
            run.result().metrics
        );
        assert_eq!(run.card().task, flywheel_core::search::space::Task::Binary);
    }
    let run = trainer(
        &data("breast_cancer.csv"),
        "diagnosis",
        "logistic",
        &["--params", r#"{"penalty":"l1","alpha":0.01}"#],
    )
    .succeeded();
    assert!(run.metric("accuracy") >= 0.9);
}

#[test]
fn an_all_missing_feature_column_is_dropped_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("x,empty,y\n");
    for i in 0..60 {
        csv.push_str(&format!(
            "{},,{}\n",
            i % 10,
            if i % 10 < 5 { "a" } else { "b" }
        ));
    }
    let path = dir.path().join("d.csv");
    std::fs::write(&path, csv).unwrap();
    let run = trainer(&path, "y", "decision_tree", &[]).succeeded();
    let schema = run.schema();
    let empty = &schema["columns"][1];
    assert_eq!(empty["role"], "dropped");
    assert_eq!(empty["reason"], "every value is missing");
    assert_eq!(run.card().inputs.len(), 1);
}

fn bad(run: Run, needle: &str) {
    assert_eq!(run.code, exit_code::BAD_INPUT, "stderr: {}", run.stderr);
    let result = run.result();
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(result.reason, Some(FailureReason::BadInput));
    let message = result.message.unwrap_or_default();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    for file in ["model.onnx", "model.json", "schema.json"] {
        assert!(!run.output.join(file).exists(), "{file} left behind");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&run.output)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "result.json")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn bad_csv(content: &str, target: &str, family: &str, extra: &[&str], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.csv");
    std::fs::write(&path, content).unwrap();
    bad(trainer(&path, target, family, extra), needle);
}

#[test]
fn bad_datasets_fail_with_bad_input_and_no_artifacts() {
    let rows = |f: &dyn Fn(usize) -> String| (0..30).map(f).collect::<String>();
    bad(
        trainer(&data("iris.csv"), "nope", "logistic", &[]),
        "target column \"nope\" not found",
    );
    bad_csv("", "y", "logistic", &[], "empty");
    bad_csv("x,y\n", "y", "logistic", &[], "no data rows");
    bad_csv("x,y\n1,a\n2\n3,b\n", "y", "logistic", &[], "line 3");
    bad_csv(
        &format!("x,y\n{}", rows(&|i| format!("{i},v{}\n", i % 3))),
        "y",
        "linear",
        &["--task", "regression"],
        "not numeric",
    );
    bad_csv(
        &format!("x,y\n{}", rows(&|i| format!("{i},same\n"))),
        "y",
        "logistic",
        &[],
        "only one class",
    );
    bad_csv(
        &format!("x,y\n{}", rows(&|i| format!("{i},\n"))),
        "y",
        "logistic",
        &[],
        "every cell is missing",
    );
    bad(
        trainer(Path::new("/nonexistent/d.csv"), "y", "logistic", &[]),
        "failed to read dataset",
    );
    bad(
        trainer(&data("iris.csv"), "species", "linear", &[]),
        "cannot learn",
    );
    bad(
        trainer(
            &data("iris.csv"),
            "species",
            "logistic",
            &["--metric", "rmse"],
        ),
        "does not apply",
    );
}

#[test]
fn bad_parameters_name_the_parameter() {
    bad(
        trainer(
            &data("iris.csv"),
            "species",
            "decision_tree",
            &["--params", r#"{"depth": 3}"#],
        ),
        "\"depth\"",
    );
    bad(
        trainer(
            &data("iris.csv"),
            "species",
            "random_forest",
            &["--params", r#"{"max_features": 2.0}"#],
        ),
        "\"max_features\"",
    );
    bad(
        trainer(
            &data("iris.csv"),
            "species",
            "logistic",
            &["--params", "[]"],
        ),
        "JSON object",
    );
    bad(
        trainer(&data("iris.csv"), "species", "xgboost", &[]),
        "unknown family",
    );
}

#[test]
fn termination_log_receives_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("termination-log");
    std::fs::write(&log, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flywheel-trainer"))
        .arg("--dataset")
        .arg(data("iris.csv"))
        .args(["--target", "species", "--family", "decision_tree"])
        .arg("--output")
        .arg(dir.path().join("out"))
        .env("FLYWHEEL_TERMINATION_LOG", &log)
        .output()
        .unwrap();
    assert!(out.status.success());
    let result: TrialResult =
        serde_json::from_str(&std::fs::read_to_string(&log).unwrap()).unwrap();
    assert_eq!(result.outcome, Outcome::Succeeded);
    assert!(result.metrics["accuracy"] >= 0.9);
}

/// Missing cells everywhere, rare and quoted categories, booleans as words, integer codes, a
/// BOM and a `file://` URI: the parity gate runs the exported graph on all of it.
#[test]
fn messy_data_survives_export_and_parity() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("\u{feff}num,color,flag,code,\"city, state\",y\n");
    for i in 0..240usize {
        let num = if i % 11 == 0 {
            String::new()
        } else {
            format!("{}.25", (i * 7) % 23)
        };
        let color = match i % 13 {
            0 => String::new(),
            1 => format!("rare{i}"),
            k => ["red", "green", "blue", "NA"][k % 4].to_string(),
        };
        let flag = if i % 17 == 0 {
            ""
        } else if i % 3 == 0 {
            "yes"
        } else {
            "no"
        };
        let code = if i % 19 == 0 {
            String::new()
        } else {
            (i % 4).to_string()
        };
        let city = if i % 2 == 0 {
            "\"Paris, TX\""
        } else {
            "\"Austin, TX\""
        };
        let y = if (i * 7) % 23 > 11 || i % 13 == 2 {
            "hi"
        } else {
            "lo"
        };
        csv.push_str(&format!("{num},{color},{flag},{code},{city},{y}\n"));
    }
    let path = dir.path().join("messy.csv");
    std::fs::write(&path, csv).unwrap();
    let uri = PathBuf::from(format!("file://{}", path.display()));
    for family in [
        "logistic",
        "random_forest",
        "gradient_boosting",
        "decision_tree",
        "mlp",
    ] {
        let params = if family == "mlp" {
            r#"{"learning_rate": 0.01, "batch_size": 32}"#
        } else {
            "{}"
        };
        let run = trainer(&uri, "y", family, &["--seed", "3", "--params", params]).succeeded();
        let card = run.card();
        let kinds: Vec<(String, ColumnKind)> = card
            .inputs
            .iter()
            .map(|i| (i.input.clone(), i.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("num".to_string(), ColumnKind::Numeric),
                ("color".to_string(), ColumnKind::Categorical),
                ("flag".to_string(), ColumnKind::Boolean),
                ("code".to_string(), ColumnKind::Numeric),
                ("city__state".to_string(), ColumnKind::Categorical),
            ],
            "{family}"
        );
        assert!(
            run.metric("accuracy") > 0.7,
            "{family}: {:?}",
            run.result().metrics
        );
    }
}

/// The file's data rows (header excluded) as string cells, and the header.
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_path(path).expect("open csv");
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let rows = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

/// Checks `holdout.json` against the dataset file and result.json: the row count the stratified
/// split implies, file-order indices, labels that reproduce the reported accuracy, probabilities
/// in the card's class order.
fn check_classification_holdout(run: &Run, dataset: &Path, target: &str, fraction: f64) {
    let holdout: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.output.join("holdout.json")).expect("holdout.json"),
    )
    .expect("holdout.json parses");
    let (header, rows) = read_csv(dataset);
    let column = header.iter().position(|h| h == target).unwrap();
    let truth: Vec<Option<&str>> = rows
        .iter()
        .map(|r| Some(r[column].as_str()).filter(|c| !flywheel_trainer::data::is_missing(c)))
        .collect();
    // The split rounds each class's share separately (stratified), keeping one row each side.
    let mut per_class = std::collections::BTreeMap::<&str, usize>::new();
    for label in truth.iter().flatten() {
        *per_class.entry(label).or_default() += 1;
    }
    let expected: usize = per_class
        .values()
        .map(|&n| ((n as f64 * fraction).round() as usize).clamp(1, n - 1))
        .sum();

    let indices: Vec<usize> = holdout["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(indices.len(), expected, "holdout rows");
    assert!(indices.windows(2).all(|w| w[0] < w[1]), "file order");
    let predictions: Vec<&str> = holdout["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(predictions.len(), indices.len());
    let card = run.card();
    let probabilities = holdout["probabilities"].as_array().unwrap();
    assert_eq!(probabilities.len(), indices.len());
    for (row, predicted) in probabilities.iter().zip(&predictions) {
        let row: Vec<f64> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(row.len(), card.classes.len());
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{row:?}");
        let best = (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b });
        assert_eq!(card.classes[best], *predicted);
    }
    let correct = indices
        .iter()
        .zip(&predictions)
        .filter(|(i, p)| truth[**i].expect("holdout row has a target") == **p)
        .count();
    let accuracy = correct as f64 / indices.len() as f64;
    // A small table is selected by cross-validation: holdout.json is then the final holdout,
    // scored in `holdout_metrics`.
    let result = run.result();
    let reported = result
        .holdout_metrics
        .get("accuracy")
        .or(result.metrics.get("accuracy"))
        .copied()
        .expect("accuracy reported");
    assert!(
        (accuracy - reported).abs() < 1e-12,
        "accuracy from holdout.json {accuracy} vs result.json {reported}"
    );
}

#[test]
fn a_small_table_is_selected_by_folds_and_checked_on_the_holdout() {
    let dataset = data("iris.csv");
    let run = trainer(&dataset, "species", "decision_tree", &[]).succeeded();
    let result = run.result();
    // 150 rows: 2 rounds of 5 folds over the 120 selection rows.
    assert_eq!(result.metrics["accuracy_n"], 10.0, "{:?}", result.metrics);
    assert!(result.metrics.contains_key("accuracy_std"));
    assert!(
        result.holdout_metrics["accuracy"] >= 0.8,
        "{:?}",
        result.holdout_metrics
    );
    assert_eq!(run.card().metrics, result.metrics);
    assert_eq!(run.holdout()["rows"].as_array().unwrap().len(), 30);
    // --folds 0 keeps the single split, with nothing held out beyond it.
    let single = trainer(&dataset, "species", "decision_tree", &["--folds", "0"]).succeeded();
    assert!(single.result().holdout_metrics.is_empty());
    assert!(!single.result().metrics.contains_key("accuracy_n"));
}

#[test]
fn holdout_json_reproduces_the_reported_metrics() {
    for (family, fraction) in [("logistic", 0.2), ("random_forest", 0.3)] {
        let dataset = data("iris.csv");
        let holdout = fraction.to_string();
        let run = trainer(&dataset, "species", family, &["--holdout", &holdout]).succeeded();
        check_classification_holdout(&run, &dataset, "species", fraction);
    }
    // Rows without a target are skipped by training but still count in the file's numbering.
    let dataset = data("penguins.csv");
    let run = trainer(&dataset, "sex", "gradient_boosting", &[]).succeeded();
    assert!(run.schema()["rows_without_target"].as_u64().unwrap() > 0);
    check_classification_holdout(&run, &dataset, "sex", 0.2);

    // Regression: numbers that reproduce the reported rmse.
    let dataset = data("diabetes.csv");
    let run = trainer(&dataset, "progression", "linear", &[]).succeeded();
    let holdout: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.output.join("holdout.json")).unwrap())
            .unwrap();
    assert!(holdout.get("probabilities").is_none());
    let (header, rows) = read_csv(&dataset);
    let column = header.iter().position(|h| h == "progression").unwrap();
    let indices = holdout["rows"].as_array().unwrap();
    let predictions = holdout["predictions"].as_array().unwrap();
    assert_eq!(indices.len(), (rows.len() as f64 * 0.2).round() as usize);
    let squared: f64 = indices
        .iter()
        .zip(predictions)
        .map(|(i, p)| {
            let truth: f64 = rows[i.as_u64().unwrap() as usize][column].parse().unwrap();
            (truth - p.as_f64().unwrap()).powi(2)
        })
        .sum();
    let rmse = (squared / indices.len() as f64).sqrt();
    // 442 rows: selected by folds, so holdout.json is the final holdout.
    let reported = run.result().holdout_metrics["rmse"];
    assert!(
        (rmse - reported).abs() < 1e-9 * reported.max(1.0),
        "rmse from holdout.json {rmse} vs result.json {reported}"
    );
}
