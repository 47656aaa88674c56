//! Helpers shared by the trainer's end-to-end tests: the real binary on the example datasets,
//! its artifacts, and the ONNX checker from the project's Python tooling.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use flywheel_core::model_card::ModelCard;
use flywheel_core::protocol::{Message, Outcome, TrialResult, exit_code};

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/data")
        .join(name)
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub output: PathBuf,
    pub _dir: tempfile::TempDir,
}

impl Run {
    pub fn result(&self) -> TrialResult {
        let text = std::fs::read_to_string(self.output.join("result.json")).expect("result.json");
        serde_json::from_str(&text).expect("result.json parses")
    }

    pub fn card(&self) -> ModelCard {
        let text = std::fs::read_to_string(self.output.join("model.json")).expect("model.json");
        serde_json::from_str(&text).expect("model.json parses")
    }

    pub fn holdout(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.output.join("holdout.json")).expect("holdout.json");
        serde_json::from_str(&text).expect("holdout.json parses")
    }

    /// `holdout.json`'s rows.
    pub fn holdout_rows(&self) -> Vec<u64> {
        self.holdout()["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r.as_u64().expect("a row index"))
            .collect()
    }

    pub fn schema(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.output.join("schema.json")).expect("schema.json");
        serde_json::from_str(&text).expect("schema.json parses")
    }

    pub fn reports(&self) -> Vec<flywheel_core::api::Report> {
        self.stdout
            .lines()
            .filter_map(Message::parse_line)
            .map(|Message::Report(report)| report)
            .collect()
    }

    pub fn metric(&self, name: &str) -> f64 {
        let result = self.result();
        *result
            .metrics
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", result.metrics))
    }

    pub fn succeeded(self) -> Run {
        assert_eq!(self.code, exit_code::SUCCESS, "stderr: {}", self.stderr);
        assert_eq!(self.result().outcome, Outcome::Succeeded);
        for file in ["model.onnx", "model.json", "schema.json"] {
            assert!(self.output.join(file).is_file(), "{file} missing");
        }
        check_onnx(&self.output.join("model.onnx"));
        self
    }
}

pub fn trainer(dataset: &Path, target: &str, family: &str, extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("out");
    let out = Command::new(env!("CARGO_BIN_EXE_flywheel-trainer"))
        .arg("--dataset")
        .arg(dataset)
        .args(["--target", target, "--family", family, "--threads", "2"])
        .arg("--output")
        .arg(&output)
        .args(extra)
        .env(
            "FLYWHEEL_TERMINATION_LOG",
            dir.path().join("termination-log"),
        )
        .output()
        .expect("run flywheel-trainer");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        output,
        _dir: dir,
    }
}

pub fn python() -> Option<PathBuf> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    python.exists().then_some(python)
}

/// `onnx.checker.check_model(full_check=True)` from the project's Python tooling.
pub fn check_onnx(path: &Path) {
    let Some(python) = python() else {
        eprintln!("SKIPPED onnx.checker: .venv is missing (run scripts/setup-python.sh)");
        return;
    };
    let out = Command::new(python)
        .args([
            "-c",
            "import sys, onnx; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)",
        ])
        .arg(path)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "onnx checker rejected {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
