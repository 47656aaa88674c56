//! The trial protocol: how any trial workload (the built-in trainer or a custom image) talks to
//! whoever runs it — the operator through pod logs and the termination message, or the local
//! runner through the process's stdout and the artifact folder. See docs/trial-protocol.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::{Latency, Report, TrialPhase, TrialStatus};

/// The marker field that makes a stdout line a protocol message rather than a log line.
pub const MARKER: &str = "flywheel";

/// Exit status of a trial process.
pub mod exit_code {
    /// The model was trained, exported and passed the parity gate.
    pub const SUCCESS: i32 = 0;
    /// The trial's input is wrong (dataset, parameters): retrying will not help.
    pub const BAD_INPUT: i32 = 2;
    /// Something failed inside the trial (I/O, a bug, a failed parity gate).
    pub const INTERNAL: i32 = 3;
}

/// The file name of the final result inside the trial's artifact folder.
pub const RESULT_FILE: &str = "result.json";
/// Where Kubernetes reads a container's termination message from.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// Kubernetes truncates termination messages beyond this size.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// A protocol line on stdout: `{"flywheel":"report","step":3,"metrics":{"accuracy":0.91}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "flywheel", rename_all = "snake_case")]
pub enum Message {
    /// Intermediate metrics after `step` units of training resource.
    Report(Report),
}

impl Message {
    /// The message on one stdout line, or `None` for ordinary log output and malformed lines
    /// (a trial's logs must never break the runner).
    pub fn parse_line(line: &str) -> Option<Message> {
        let line = line.trim();
        if !line.starts_with('{') || !line.contains(MARKER) {
            return None;
        }
        serde_json::from_str(line).ok()
    }

    /// The message as one line, without a newline.
    pub fn to_line(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// How a trial ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
}

/// Why a trial failed, machine-readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum FailureReason {
    /// Dataset or parameters are wrong.
    BadInput,
    /// The exported model does not reproduce the trainer's predictions.
    ParityMismatch,
    /// Anything else inside the trial.
    Internal,
}

/// Wall-clock seconds per stage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    #[serde(default)]
    pub load_seconds: f64,
    #[serde(default)]
    pub featurize_seconds: f64,
    #[serde(default)]
    pub train_seconds: f64,
    #[serde(default)]
    pub export_seconds: f64,
    #[serde(default)]
    pub total_seconds: f64,
}

/// The final result document (`result.json`, and the termination message in a cluster).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Final metrics on the validation split, keyed by metric name.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// The exported model's metrics on the final holdout, rows kept out of selection (only
    /// when the trial selected by cross-validation on the other rows).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub holdout_metrics: BTreeMap<String, f64>,
    /// The folder holding `model.onnx` and `model.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_bytes: Option<u64>,
    #[serde(default)]
    pub timings: Timings,
}

impl TrialResult {
    pub fn failed(reason: FailureReason, message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Failed,
            reason: Some(reason),
            message: Some(message.into()),
            metrics: BTreeMap::new(),
            holdout_metrics: BTreeMap::new(),
            artifact_uri: None,
            latency: None,
            model_bytes: None,
            timings: Timings::default(),
        }
    }

    /// The JSON for the termination message, shortened to Kubernetes' limit by trimming the
    /// free-text message first, so metrics and URIs always survive.
    pub fn to_termination_message(&self) -> String {
        let full = serde_json::to_string(self).unwrap_or_default();
        if full.len() <= TERMINATION_MESSAGE_LIMIT {
            return full;
        }
        let mut trimmed = self.clone();
        let overflow = full.len() - TERMINATION_MESSAGE_LIMIT;
        if let Some(message) = &mut trimmed.message {
            let keep = message.len().saturating_sub(overflow + 3);
            let mut cut = keep;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...");
        }
        serde_json::to_string(&trimmed).unwrap_or_default()
    }
}

impl TrialResult {
    /// Moves a trial that ended to its final phase: Succeeded with the result's metrics when the
    /// result says so and the workload exited cleanly, Failed with the result's reason
    /// otherwise. `default_artifact_uri` is where the runner told the trial to write, used when
    /// a custom trial does not name the folder itself. Reports, conditions and start time are
    /// kept; the completion time is the caller's.
    pub fn apply_to(
        &self,
        status: &mut TrialStatus,
        exit_code: Option<i32>,
        metric: &str,
        default_artifact_uri: &str,
    ) {
        if self.outcome == Outcome::Succeeded && exit_code == Some(exit_code::SUCCESS) {
            status.phase = TrialPhase::Succeeded;
            status.objective = self.metrics.get(metric).copied();
            status.metrics = self.metrics.clone();
            status.holdout_metrics = self.holdout_metrics.clone();
            status.artifact_uri = Some(
                self.artifact_uri
                    .clone()
                    .unwrap_or_else(|| default_artifact_uri.to_string()),
            );
            status.latency = self.latency;
            status.model_bytes = self.model_bytes;
            status.reason = None;
            status.message = None;
        } else {
            status.phase = TrialPhase::Failed;
            status.reason = Some(
                self.reason
                    .map(FailureReason::as_str)
                    .unwrap_or(if self.outcome == Outcome::Succeeded {
                        // A result that claims success from a process that did not exit 0.
                        "Crashed"
                    } else {
                        "Failed"
                    })
                    .to_string(),
            );
            status.message = self.message.clone();
        }
    }
}

impl FailureReason {
    /// The reason as written in Trial status (`BadInput`, `ParityMismatch`, `Internal`).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::BadInput => "BadInput",
            FailureReason::ParityMismatch => "ParityMismatch",
            FailureReason::Internal => "Internal",
        }
    }
}

/// The command-line arguments that hand a trial its inputs (docs/trial-protocol.md). The local
/// runner passes them to a process and the operator to a Job's container, so both speak the
/// protocol identically.
pub fn trial_arguments(
    study: &str,
    spec: &crate::api::StudySpec,
    trial_name: &str,
    trial: &crate::api::TrialSpec,
    place: &TrialPlace<'_>,
) -> Vec<String> {
    let TrialPlace {
        dataset_uri,
        output,
        threads,
        feature_cache,
    } = *place;
    let params = serde_json::to_string(&trial.params).unwrap_or_else(|_| "{}".to_string());
    // One seed for every trial of the study: it fixes the holdout split, so trials are ranked
    // on the same validation rows rather than on luckier or harder splits.
    let seed = crate::study::study_seed(spec, study);
    let mut args = vec![
        format!("--dataset={dataset_uri}"),
        format!("--target={}", spec.dataset.target),
        format!("--task={}", spec.dataset.task.as_str()),
        format!("--metric={}", spec.objective.metric.as_str()),
        format!("--family={}", trial.family),
        format!("--params={params}"),
        format!("--seed={seed}"),
        format!("--output={output}"),
        format!("--threads={}", threads.max(1)),
        format!("--study={study}"),
        format!("--trial={trial_name}"),
    ];
    if let Some(budget) = trial.budget {
        args.push(format!("--budget={budget}"));
    }
    if let Some(origin) = &spec.origin {
        args.push(format!("--generation={}", origin.generation));
        args.push(format!("--parent-studies={}", origin.ancestors.join(",")));
    }
    if !spec.dataset.feedback.is_empty()
        && let Ok(sources) = serde_json::to_string(&spec.dataset.feedback)
    {
        args.push(format!("--feedback={sources}"));
    }
    if let Some(evaluation) = &spec.evaluation {
        if let Some(folds) = evaluation.folds {
            args.push(format!("--folds={folds}"));
        }
        if let Some(fraction) = evaluation.holdout_fraction {
            args.push(format!("--holdout={fraction}"));
        }
    }
    if let Some(cache) = feature_cache {
        args.push(format!("--feature-cache={cache}"));
    }
    args
}

/// Where a trial runs: what the runner (operator or local) decides rather than the study.
#[derive(Clone, Copy, Debug)]
pub struct TrialPlace<'a> {
    /// The dataset as the trial can reach it (the local runner resolves relative paths).
    pub dataset_uri: &'a str,
    /// The trial's artifact folder.
    pub output: &'a str,
    /// Threads the trial may use.
    pub threads: u32,
    /// The feature cache shared by the study's trials, when the runner has one.
    pub feature_cache: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_round_trip_and_log_lines_are_ignored() {
        let line = r#"{"flywheel":"report","step":3,"metrics":{"accuracy":0.91}}"#;
        let message = Message::parse_line(line).unwrap();
        let Message::Report(report) = &message;
        assert_eq!(report.step, 3);
        assert_eq!(report.metrics["accuracy"], 0.91);
        assert_eq!(Message::parse_line(&message.to_line()), Some(message));
        assert_eq!(Message::parse_line("epoch 3: loss 0.2"), None);
        assert_eq!(
            Message::parse_line(r#"{"flywheel":"report","step":"x"}"#),
            None
        );
        assert_eq!(Message::parse_line(r#"{"flywheel":"unknown"}"#), None);
    }

    #[test]
    fn results_move_a_trial_to_its_final_phase() {
        let mut result = TrialResult::failed(FailureReason::BadInput, "no column y");
        let mut status = TrialStatus {
            reports: vec![Report {
                step: 1,
                metrics: BTreeMap::from([("accuracy".to_string(), 0.5)]),
            }],
            ..TrialStatus::default()
        };
        result.apply_to(&mut status, Some(exit_code::BAD_INPUT), "accuracy", "/a/t");
        assert_eq!(status.phase, TrialPhase::Failed);
        assert_eq!(status.reason.as_deref(), Some("BadInput"));
        assert_eq!(status.message.as_deref(), Some("no column y"));
        assert_eq!(status.reports.len(), 1, "reports survive the ending");

        result.outcome = Outcome::Succeeded;
        result.reason = None;
        result.metrics.insert("accuracy".into(), 0.9);
        result.apply_to(&mut status, Some(exit_code::INTERNAL), "accuracy", "/a/t");
        assert_eq!(
            status.phase,
            TrialPhase::Failed,
            "success needs exit code 0"
        );
        assert_eq!(status.reason.as_deref(), Some("Crashed"));

        result.apply_to(&mut status, Some(0), "accuracy", "/a/t");
        assert_eq!(status.phase, TrialPhase::Succeeded);
        assert_eq!(status.objective, Some(0.9));
        assert_eq!(status.artifact_uri.as_deref(), Some("/a/t"));
        assert_eq!(status.reason, None);
        assert_eq!(
            FailureReason::ParityMismatch.as_str(),
            serde_json::to_value(FailureReason::ParityMismatch).unwrap()
        );
    }

    #[test]
    fn termination_message_fits_the_kubernetes_limit() {
        let mut result = TrialResult::failed(FailureReason::BadInput, "é".repeat(5000));
        result.metrics.insert("accuracy".into(), 0.5);
        let message = result.to_termination_message();
        assert!(
            message.len() <= TERMINATION_MESSAGE_LIMIT,
            "{}",
            message.len()
        );
        let parsed: TrialResult = serde_json::from_str(&message).unwrap();
        assert_eq!(parsed.metrics["accuracy"], 0.5);
        assert!(parsed.message.unwrap().ends_with("..."));
    }

    #[test]
    fn a_study_s_evaluation_feedback_and_cache_reach_the_trial_as_flags() {
        let mut spec: crate::api::StudySpec = serde_json::from_value(serde_json::json!({
            "dataset": {"uri": "s3://b/churn.csv", "target": "left",
                        "feedback": [{"uri": "s3://b/logs/churn", "model": "churn", "until": "2026-11-30T10:00:00Z"}]},
            "objective": {"metric": "accuracy"},
            "budget": {"maxTrials": 4},
            "evaluation": {"folds": 5, "holdoutFraction": 0.3}
        }))
        .unwrap();
        let trial = crate::api::TrialSpec {
            study: "churn".into(),
            index: 0,
            family: crate::search::space::Family::Logistic,
            params: Default::default(),
            budget: None,
            origin: None,
        };
        let place = TrialPlace {
            dataset_uri: "s3://b/churn.csv",
            output: "s3://b/out/churn-0",
            threads: 2,
            feature_cache: Some("s3://b/feature-cache"),
        };
        let args = trial_arguments("churn", &spec, "churn-0", &trial, &place);
        for expected in [
            "--folds=5",
            "--holdout=0.3",
            "--feature-cache=s3://b/feature-cache",
            r#"--feedback=[{"uri":"s3://b/logs/churn","model":"churn","until":"2026-11-30T10:00:00Z"}]"#,
        ] {
            assert!(
                args.iter().any(|a| a == expected),
                "{expected} not in {args:?}"
            );
        }
        // Unset, none of them is passed: a custom trial image need not know them.
        spec.evaluation = None;
        spec.dataset.feedback.clear();
        let place = TrialPlace {
            feature_cache: None,
            ..place
        };
        let args = trial_arguments("churn", &spec, "churn-0", &trial, &place);
        assert!(
            !args.iter().any(|a| a.starts_with("--folds")
                || a.starts_with("--holdout")
                || a.starts_with("--feedback")
                || a.starts_with("--feature-cache")),
            "{args:?}"
        );
    }
}
