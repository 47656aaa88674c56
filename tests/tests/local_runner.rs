//! `flywheel run` end to end: real trainer processes, the real server, real HTTP.
//!
//! The binaries come from the same cargo profile as this test (`cargo test --workspace` builds
//! them); run `cargo build --workspace` first when testing this crate alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flywheel_core::api::{Trial, TrialPhase};

mod common;
use common::{KillOnDrop, binary, free_port, post_json, repo, scratch, trials};

fn flywheel() -> Command {
    let mut command = Command::new(binary("flywheel"));
    command
        .arg("run")
        .env("FLYWHEEL_TRAINER", binary("flywheel-trainer"))
        .env("FLYWHEEL_SERVER", binary("flywheel-server"));
    command
}

fn write_study(dir: &Path, name: &str, dataset: &str, target: &str, body: &str) -> PathBuf {
    let path = dir.join("study.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: flywheel.dev/v1alpha1\nkind: Study\nmetadata:\n  name: {name}\nspec:\n  dataset:\n    uri: {}\n    target: {target}\n{body}",
            repo().join(dataset).display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_study_runs_to_a_served_winner_whose_predictions_match_training() {
    let dir = scratch("serve");
    let study = write_study(
        &dir,
        "iris-e2e",
        "examples/data/iris.csv",
        "species",
        "  objective: {metric: accuracy}\n  searchSpace:\n    - family: logistic\n    - family: decision_tree\n  algorithm: {name: random, seed: 3}\n  budget: {maxTrials: 4, parallelism: 2}\n",
    );
    let port = free_port();
    let (child, printed) = run_until_served(&study, &dir.join("run"), port, "iris-e2e");
    let recorded = trials(&dir.join("run"));
    assert_eq!(recorded.len(), 4);
    let winner = printed
        .iter()
        .find_map(|l| l.strip_prefix("winner: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    // A trial, or the ensemble of the trials (on by default) when it beat them.
    assert!(
        winner == "iris-e2e-ensemble"
            || recorded
                .iter()
                .any(|t| t.metadata.name.as_deref() == Some(winner.as_str()))
    );
    let model_dir = printed
        .iter()
        .find_map(|l| l.strip_prefix("model: "))
        .map(PathBuf::from)
        .unwrap();

    // The rows the trainer held out, with its own in-memory predictions: the served model must
    // give the same labels and probabilities for them.
    let holdout: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model_dir.join("holdout.json")).unwrap()).unwrap();
    let held_out: Vec<usize> = holdout["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_u64().unwrap() as usize)
        .collect();
    assert!(!held_out.is_empty());
    let instances = numeric_instances("examples/data/iris.csv", "species", &held_out);
    let (code, response) = post_json(
        port,
        "/v1/models/iris-e2e:predict",
        &serde_json::json!({ "instances": instances }),
    );
    assert_eq!(code, 200, "{response}");
    assert_eq!(response["model_version"], winner.as_str());
    assert_eq!(
        response["predictions"], holdout["predictions"],
        "served labels differ from training"
    );
    let served = response["probabilities"].as_array().unwrap();
    let trained = holdout["probabilities"].as_array().unwrap();
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model_dir.join("model.json")).unwrap()).unwrap();
    let classes: Vec<&str> = card["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for (served, trained) in served.iter().zip(trained) {
        for (class, expected) in classes.iter().zip(trained.as_array().unwrap()) {
            let got = served[class].as_f64().unwrap();
            assert!(
                (got - expected.as_f64().unwrap()).abs() < 1e-4,
                "{served} vs {trained}"
            );
        }
    }
    // `kill -9` of the runner must not leave its server behind.
    drop(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "the server outlived its runner");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// V1 instances for `rows` (0-based data rows) of an all-numeric CSV, without the target.
fn numeric_instances(dataset: &str, target: &str, rows: &[usize]) -> Vec<serde_json::Value> {
    let mut reader = csv::Reader::from_path(repo().join(dataset)).unwrap();
    let headers = reader.headers().unwrap().clone();
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    rows.iter()
        .map(|&row| {
            let mut instance = serde_json::Map::new();
            for (name, value) in headers.iter().zip(records[row].iter()) {
                if name != target {
                    instance.insert(name.into(), value.parse::<f64>().unwrap().into());
                }
            }
            serde_json::Value::Object(instance)
        })
        .collect()
}

/// Runs `flywheel run` on `study` until it serves on `port`; returns what it printed.
fn run_until_served(
    study: &Path,
    run_dir: &Path,
    port: u16,
    name: &str,
) -> (KillOnDrop, Vec<String>) {
    let mut child = KillOnDrop(
        flywheel()
            .arg(study)
            .arg(format!("--dir={}", run_dir.display()))
            .arg(format!("--serve=127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut printed = Vec::new();
    for line in stdout.by_ref() {
        let line = line.unwrap();
        let ready = line.starts_with(&format!("serving {name}"));
        printed.push(line);
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no server after 300 s:\n{}",
            printed.join("\n")
        );
    }
    assert!(
        printed.iter().any(|l| l.starts_with("serving")),
        "the runner ended without serving:\n{}",
        printed.join("\n")
    );
    // Keep reading what the runner prints after "serving" (the curl examples), so it never
    // writes into a closed pipe.
    std::thread::spawn(move || stdout.for_each(drop));
    (child, printed)
}

#[test]
fn a_promoted_ensemble_serves_as_one_model_with_the_composed_graphs_predictions() {
    let dir = scratch("ensemble");
    let run_dir = dir.join("run");
    // Log loss rewards averaging diverse probability estimates: the ensemble of a linear
    // model and two tree ensembles beats each of them on the validation rows.
    let study = write_study(
        &dir,
        "cancer-ens",
        "examples/data/breast_cancer.csv",
        "diagnosis",
        "  objective: {metric: log_loss}\n  searchSpace:\n    - family: logistic\n    - family: random_forest\n      fixed: {n_estimators: 30}\n    - family: gradient_boosting\n      fixed: {n_estimators: 40}\n  algorithm: {name: random, seed: 5}\n  budget: {maxTrials: 4, parallelism: 2}\n  ensemble: {maxMembers: 3}\n",
    );
    let port = free_port();
    let (child, printed) = run_until_served(&study, &run_dir, port, "cancer-ens");
    let text = printed.join("\n");
    assert!(text.contains("ensemble cancer-ens-ensemble"), "{text}");
    assert!(text.contains("PROMOTED"), "{text}");
    let winner = printed
        .iter()
        .find_map(|l| l.strip_prefix("winner: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    assert_eq!(winner, "cancer-ens-ensemble", "{text}");

    let study_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("study.json")).unwrap()).unwrap();
    let ensemble = &study_json["status"]["ensemble"];
    assert_eq!(ensemble["promoted"], true, "{ensemble}");
    assert!(
        ensemble["objective"].as_f64().unwrap() < ensemble["bestSingleObjective"].as_f64().unwrap(),
        "{ensemble}"
    );
    let model_dir = run_dir.join("ensemble");
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model_dir.join("model.json")).unwrap()).unwrap();
    let members = card["ensemble"]["members"].as_array().unwrap();
    assert!((2..=3).contains(&members.len()), "{card}");
    assert_eq!(ensemble["members"].as_array().unwrap().len(), members.len());

    // holdout.json holds the members' weighted ONNX Runtime outputs on the validation rows; the
    // server runs the composed graph: same labels, same probabilities.
    let holdout: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model_dir.join("holdout.json")).unwrap()).unwrap();
    let rows: Vec<usize> = holdout["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_u64().unwrap() as usize)
        .collect();
    let instances = numeric_instances("examples/data/breast_cancer.csv", "diagnosis", &rows);
    let (code, response) = post_json(
        port,
        "/v1/models/cancer-ens:predict",
        &serde_json::json!({ "instances": instances }),
    );
    assert_eq!(code, 200, "{response}");
    assert_eq!(response["model_version"], "cancer-ens-ensemble");
    assert_eq!(response["predictions"], holdout["predictions"]);
    let classes: Vec<&str> = card["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let served = response["probabilities"].as_array().unwrap();
    let composed = holdout["probabilities"].as_array().unwrap();
    assert_eq!(served.len(), composed.len());
    for (served, composed) in served.iter().zip(composed) {
        for (class, expected) in classes.iter().zip(composed.as_array().unwrap()) {
            let got = served[class].as_f64().unwrap();
            assert!(
                (got - expected.as_f64().unwrap()).abs() < 1e-5,
                "{served} vs {composed}"
            );
        }
    }
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kill_dash_nine_then_resume_finishes_with_exactly_max_trials() {
    let dir = scratch("resume");
    let run_dir = dir.join("run");
    let study = write_study(
        &dir,
        "penguins-resume",
        "examples/data/penguins.csv",
        "species",
        "  objective: {metric: balanced_accuracy}\n  searchSpace:\n    - family: decision_tree\n    - family: logistic\n  algorithm: {name: tpe, seed: 11}\n  budget: {maxTrials: 7, parallelism: 2}\n",
    );
    let mut first = flywheel()
        .arg(&study)
        .arg(format!("--dir={}", run_dir.display()))
        .arg("--no-serve")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    let finished_before = loop {
        let finished: Vec<Trial> = trials(&run_dir)
            .into_iter()
            .filter(|t| t.status.as_ref().is_some_and(|s| s.phase.is_finished()))
            .collect();
        if finished.len() >= 2 {
            break finished;
        }
        assert!(Instant::now() < deadline, "no trial finished in time");
        std::thread::sleep(Duration::from_millis(20));
    };
    first.kill().unwrap(); // SIGKILL: no cleanup, trial processes orphaned
    first.wait().unwrap();
    assert!(
        finished_before.len() < 7,
        "the study finished before the runner was killed; nothing was resumed"
    );

    let output = flywheel()
        .arg(&study)
        .arg(format!("--dir={}", run_dir.display()))
        .arg("--no-serve")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("resuming penguins-resume"), "{stdout}");

    let recorded = trials(&run_dir);
    let indices: BTreeSet<u32> = recorded.iter().map(|t| t.spec.index).collect();
    assert_eq!(
        indices,
        (0..7).collect(),
        "exactly maxTrials distinct trials"
    );
    assert!(
        recorded
            .iter()
            .all(|t| t.status.as_ref().is_some_and(|s| s.phase.is_finished()))
    );
    for before in &finished_before {
        let after = recorded
            .iter()
            .find(|t| t.metadata.name == before.metadata.name)
            .unwrap();
        assert_eq!(
            after.status, before.status,
            "a finished trial was repeated or changed"
        );
    }
    assert!(
        recorded
            .iter()
            .any(|t| t.status.as_ref().unwrap().phase == TrialPhase::Succeeded)
    );
    // No trainer of this study survives the resumed run.
    let survivors = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .filter(|cmd| String::from_utf8_lossy(cmd).contains("--study=penguins-resume"))
        .count();
    assert_eq!(survivors, 0, "orphaned trial processes are still running");

    let report = Command::new(binary("flywheel"))
        .args(["report", &run_dir.display().to_string()])
        .output()
        .unwrap();
    assert!(report.status.success(), "{report:?}");
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert_eq!(
        html.matches("<svg").count(),
        3,
        "history, families, importance"
    );
    assert!(html.contains("Leaderboard") && html.contains("penguins-resume-0"));
    assert!(html.contains("Promoted model lineage") && html.contains("dataset sha256"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_manifest_fails_fast_naming_the_field() {
    let dir = scratch("bad");
    let study = write_study(
        &dir,
        "bad",
        "examples/data/iris.csv",
        "species",
        "  objective: {metric: accuracy}\n  budget: {maxTrials: 0}\n",
    );
    let started = Instant::now();
    let output = flywheel().arg(&study).arg("--no-serve").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("spec.budget.maxTrials: must be at least 1"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!dir.join(".flywheel").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
