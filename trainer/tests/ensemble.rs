//! `flywheel-trainer ensemble` end to end: trials leave their validation (or out-of-fold)
//! predictions, greedy selection weighs them, the members' pipelines become one ONNX graph that
//! passes the onnx checker and the ensemble parity gate, and members that disagree on the
//! schema are refused by name.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Run, check_onnx, data, trainer};
use flywheel_core::ensemble::{MemberPredictions, PredictionKind};
use flywheel_core::model_card::ModelCard;
use flywheel_core::protocol::{Outcome, TrialResult, exit_code};

fn predictions(run: &Run) -> MemberPredictions {
    let text = std::fs::read_to_string(run.output.join("predictions.json")).expect("predictions");
    serde_json::from_str(&text).expect("predictions.json parses")
}

fn member(dataset: &str, target: &str, family: &str, trial: &str, extra: &[&str]) -> Run {
    let mut args = vec!["--seed", "3", "--trial", trial];
    // One holdout split unless a test asks for folds: these tests compare a member's reported
    // metric with its predictions.json, and under the automatic repeated k-fold of small tables
    // the metric averages every round while predictions.json keeps the first round's rows.
    if !extra.contains(&"--folds") {
        args.extend_from_slice(&["--folds", "0"]);
    }
    args.extend_from_slice(extra);
    trainer(&data(dataset), target, family, &args).succeeded()
}

struct Ensemble {
    code: i32,
    stderr: String,
    output: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Ensemble {
    fn card(&self) -> ModelCard {
        serde_json::from_slice(&std::fs::read(self.output.join("model.json")).expect("card"))
            .expect("card parses")
    }

    fn result(&self) -> TrialResult {
        serde_json::from_slice(&std::fs::read(self.output.join("result.json")).expect("result"))
            .expect("result parses")
    }
}

fn ensemble(members: &[&Run], dataset: &Path, extra: &[&str]) -> Ensemble {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("ensemble");
    let list: Vec<String> = members
        .iter()
        .map(|m| m.output.display().to_string())
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_flywheel-trainer"))
        .arg("ensemble")
        .arg(format!("--members={}", list.join(",")))
        .arg("--dataset")
        .arg(dataset)
        .arg("--output")
        .arg(&output)
        .args(["--threads", "2", "--name", "e-1"])
        .args(extra)
        .env(
            "FLYWHEEL_TERMINATION_LOG",
            dir.path().join("termination-log"),
        )
        .output()
        .expect("run flywheel-trainer ensemble");
    Ensemble {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        output,
        _dir: dir,
    }
}

#[test]
fn holdout_predictions_match_holdout_json_and_the_reported_metrics() {
    let run = member("penguins.csv", "species", "logistic", "p-0", &[]);
    let p = predictions(&run);
    assert_eq!(p.kind, PredictionKind::Holdout);
    assert_eq!(p.trial.as_deref(), Some("p-0"));
    assert_eq!(p.check(), Ok(()));
    assert_eq!(p.rows, run.holdout_rows());
    assert_eq!(p.classes, run.card().classes);
    let hits = p
        .predictions
        .iter()
        .zip(&p.targets)
        .filter(|(probs, truth)| {
            let best = probs
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                .unwrap()
                .0;
            best as f64 == **truth
        })
        .count();
    let accuracy = hits as f64 / p.rows.len() as f64;
    assert!((accuracy - run.metric("accuracy")).abs() < 1e-12);
}

#[test]
fn kfold_trials_leave_out_of_fold_predictions_for_every_row() {
    let run = member(
        "iris.csv",
        "species",
        "decision_tree",
        "i-0",
        &["--folds", "3"],
    );
    let p = predictions(&run);
    assert_eq!(p.kind, PredictionKind::OutOfFold);
    assert_eq!(p.rows, (0..150).collect::<Vec<u64>>());
    assert_eq!(p.check(), Ok(()));
}

#[test]
fn an_ensemble_is_one_onnx_graph_that_beats_or_ties_its_best_member() {
    let members = [
        member("penguins.csv", "species", "logistic", "p-0", &[]),
        member(
            "penguins.csv",
            "species",
            "random_forest",
            "p-1",
            &["--params", r#"{"n_estimators":20}"#],
        ),
        member(
            "penguins.csv",
            "species",
            "mlp",
            "p-2",
            &["--params", r#"{"epochs":30}"#],
        ),
    ];
    let refs: Vec<&Run> = members.iter().collect();
    let built = ensemble(&refs, &data("penguins.csv"), &["--metric", "log_loss"]);
    assert_eq!(built.code, exit_code::SUCCESS, "stderr: {}", built.stderr);
    let result = built.result();
    assert_eq!(result.outcome, Outcome::Succeeded);
    assert!(result.latency.is_some() && result.model_bytes.is_some());
    check_onnx(&built.output.join("model.onnx"));
    assert!(
        built.stderr.contains("parity: composed graph matches"),
        "{}",
        built.stderr
    );

    let card = built.card();
    let first = members[0].card();
    assert_eq!(card.inputs, first.inputs);
    assert_eq!(card.outputs, first.outputs);
    assert_eq!(card.classes, first.classes);
    assert_eq!(card.version, "e-1");
    let ensemble = card.ensemble.expect("an ensemble card");
    let total: f64 = ensemble.members.iter().map(|m| m.weight).sum();
    assert!((total - 1.0).abs() < 1e-6, "{ensemble:?}");
    assert!(
        ensemble
            .members
            .windows(2)
            .all(|w| w[0].weight >= w[1].weight)
    );
    assert_eq!(card.family, ensemble.members[0].family);
    // Never worse than the best single member on the rows it was selected on, and the best
    // single member is the one whose own reported log loss is lowest.
    assert!(
        ensemble.score <= ensemble.best_single_score + 1e-12,
        "{ensemble:?}"
    );
    let best = members
        .iter()
        .min_by(|a, b| a.metric("log_loss").total_cmp(&b.metric("log_loss")))
        .unwrap();
    assert_eq!(ensemble.best_single, best.card().lineage.trial.unwrap());
    assert!((ensemble.best_single_score - best.metric("log_loss")).abs() < 1e-9);
    assert!((result.metrics["log_loss"] - ensemble.score).abs() < 1e-9);
}

#[test]
fn fixed_weights_compose_a_regression_ensemble() {
    let members = [
        member("diabetes.csv", "progression", "linear", "d-0", &[]),
        member(
            "diabetes.csv",
            "progression",
            "gradient_boosting",
            "d-1",
            &["--params", r#"{"n_estimators":30}"#],
        ),
    ];
    let refs: Vec<&Run> = members.iter().collect();
    let built = ensemble(
        &refs,
        &data("diabetes.csv"),
        &["--weights", "3,1", "--metric", "rmse"],
    );
    assert_eq!(built.code, exit_code::SUCCESS, "stderr: {}", built.stderr);
    check_onnx(&built.output.join("model.onnx"));
    let ensemble = built.card().ensemble.expect("ensemble card");
    let weights: Vec<(String, f64)> = ensemble
        .members
        .iter()
        .map(|m| (m.trial.clone(), m.weight))
        .collect();
    assert_eq!(
        weights,
        vec![("d-0".to_string(), 0.75), ("d-1".to_string(), 0.25)]
    );

    let wrong = ensemble_of_weights(&refs, "1");
    assert_eq!(wrong.code, exit_code::BAD_INPUT);
    assert!(wrong.result().message.unwrap().contains("one per member"));
}

fn ensemble_of_weights(members: &[&Run], weights: &str) -> Ensemble {
    ensemble(members, &data("diabetes.csv"), &["--weights", weights])
}

#[test]
fn members_that_disagree_on_the_schema_are_refused_by_name() {
    let penguins = member("penguins.csv", "species", "logistic", "p-0", &[]);
    let iris = member("iris.csv", "species", "logistic", "iris-7", &[]);
    let refused = ensemble(&[&penguins, &iris], &data("penguins.csv"), &[]);
    assert_eq!(
        refused.code,
        exit_code::BAD_INPUT,
        "stderr: {}",
        refused.stderr
    );
    let message = refused.result().message.unwrap();
    assert!(
        message.contains("member iris-7 disagrees with member p-0"),
        "{message}"
    );
    assert!(!refused.output.join("model.onnx").exists());

    let missing = ensemble(&[&penguins], &data("penguins.csv"), &[]);
    assert_eq!(
        missing.code,
        exit_code::SUCCESS,
        "a single member is a valid ensemble: {}",
        missing.stderr
    );
    std::fs::remove_file(penguins.output.join("predictions.json")).unwrap();
    let without = ensemble(&[&penguins], &data("penguins.csv"), &[]);
    assert_eq!(without.code, exit_code::BAD_INPUT);
    assert!(
        without
            .result()
            .message
            .unwrap()
            .contains("predictions.json")
    );
}
