//! The trainer against a real S3 API (moto_server from .venv): dataset read from `s3://`,
//! artifacts published to `s3://`, failures that name what to fix.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use flywheel_core::model_card::ModelCard;
use flywheel_core::protocol::{FailureReason, Outcome, TrialResult, exit_code};
use flywheel_store::moto::{MotoServer, with_s3_env};
use flywheel_store::{BlockingStore, Location};
use sha2::{Digest, Sha256};

const ARTIFACTS: [&str; 6] = [
    "holdout.json",
    "model.json",
    "model.onnx",
    "predictions.json",
    "result.json",
    "schema.json",
];

fn iris() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/iris.csv")
}

struct Run {
    code: i32,
    stderr: String,
    termination: String,
}

/// Runs the trainer with `env` (the S3 settings) and a private temp dir, where no staging folder
/// may be left afterwards, whatever happened.
fn trainer(dataset: &str, output: &str, env: &[(String, String)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let termination = dir.path().join("termination-log");
    std::fs::write(&termination, "").unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_flywheel-trainer"));
    command
        .args(["--dataset", dataset, "--output", output])
        .args(["--target", "species", "--family", "decision_tree"])
        .env("FLYWHEEL_TERMINATION_LOG", &termination)
        .env("TMPDIR", &tmp);
    with_s3_env(&mut command, env);
    let out = command.output().expect("run flywheel-trainer");
    // (ONNX Runtime may leave files of its own there; only the trainer's staging counts.)
    let leftovers: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("flywheel-trial-"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    Run {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        termination: std::fs::read_to_string(&termination).unwrap(),
    }
}

fn names(store: &BlockingStore, prefix: &str) -> Vec<String> {
    store
        .list(&Location::parse(prefix).unwrap())
        .unwrap()
        .iter()
        .map(|l| l.file_name().unwrap())
        .collect()
}

#[test]
fn trial_reads_and_publishes_through_s3() {
    let moto = MotoServer::start();
    moto.create_bucket("flywheel");
    let store = BlockingStore::new(moto.store()).unwrap();
    let csv = std::fs::read(iris()).unwrap();
    let dataset = "s3://flywheel/data/iris.csv";
    store
        .put(&Location::parse(dataset).unwrap(), csv.clone())
        .unwrap();

    let output = "s3://flywheel/artifacts/ml/iris/iris-0";
    let run = trainer(dataset, output, &moto.env());
    assert_eq!(run.code, exit_code::SUCCESS, "stderr: {}", run.stderr);
    assert_eq!(names(&store, output), ARTIFACTS);

    let folder = Location::parse(output).unwrap();
    let result: TrialResult =
        serde_json::from_slice(&store.get(&folder.join("result.json")).unwrap()).unwrap();
    assert_eq!(result.outcome, Outcome::Succeeded);
    assert_eq!(result.artifact_uri.as_deref(), Some(output));
    assert!(result.metrics["accuracy"] >= 0.9, "{:?}", result.metrics);
    let termination: TrialResult = serde_json::from_str(&run.termination).unwrap();
    assert_eq!(termination.artifact_uri.as_deref(), Some(output));

    let card: ModelCard =
        serde_json::from_slice(&store.get(&folder.join("model.json")).unwrap()).unwrap();
    assert_eq!(card.lineage.dataset_uri, dataset);
    let digest: String = Sha256::digest(&csv)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(card.lineage.dataset_digest, digest);
    let onnx = store.get(&folder.join("model.onnx")).unwrap();
    assert_eq!(card.model_bytes, Some(onnx.len() as u64));

    // result.json is written last: no other artifact is newer.
    let modified = |name: &str| {
        store
            .head(&folder.join(name))
            .unwrap()
            .last_modified
            .unwrap()
    };
    let result_time = modified("result.json");
    for name in ARTIFACTS {
        assert!(
            modified(name) <= result_time,
            "{name} is newer than result.json"
        );
    }
}

#[test]
fn s3_failures_name_the_uri_and_the_fix() {
    let moto = MotoServer::start();
    moto.create_bucket("flywheel");
    let store = BlockingStore::new(moto.store()).unwrap();

    // A dataset that is not there: bad input, the URI in the message, only result.json written.
    let output = "s3://flywheel/out/missing-data";
    let run = trainer("s3://flywheel/data/nope.csv", output, &moto.env());
    assert_eq!(run.code, exit_code::BAD_INPUT, "stderr: {}", run.stderr);
    let result: TrialResult = serde_json::from_str(&run.termination).unwrap();
    assert_eq!(result.reason, Some(FailureReason::BadInput));
    let message = result.message.unwrap_or_default();
    assert!(
        message.contains("s3://flywheel/data/nope.csv does not exist"),
        "{message}"
    );
    assert_eq!(names(&store, output), ["result.json"]);

    // No credentials at all: refused before training, saying which variables to set.
    let dir = tempfile::tempdir().unwrap();
    let local_copy = dir.path().join("iris.csv");
    std::fs::copy(iris(), &local_copy).unwrap();
    let endpoint_only = vec![("AWS_ENDPOINT_URL".to_string(), moto.endpoint())];
    let output = "s3://flywheel/out/no-credentials";
    let run = trainer(local_copy.to_str().unwrap(), output, &endpoint_only);
    assert_eq!(run.code, exit_code::BAD_INPUT, "stderr: {}", run.stderr);
    let result: TrialResult = serde_json::from_str(&run.termination).unwrap();
    let message = result.message.unwrap_or_default();
    assert!(
        message.contains("no s3 credentials to access s3://flywheel/out/no-credentials")
            && message.contains("AWS_ACCESS_KEY_ID"),
        "{message}"
    );
    assert!(names(&store, output).is_empty());
}
