//! After the search: the finished trials become one ensemble model (`flywheel-trainer
//! ensemble`, a child process like a trial), which replaces the best trial as the winner when
//! it scores better on validation and meets the latency and size ceilings.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

use flywheel_core::api::{BestTrial, EnsembleSpec, EnsembleStatus, Study, Trial};
use flywheel_core::ensemble::{self, Ceilings, PREDICTIONS_FILE};
use flywheel_core::kube::ResourceExt;
use flywheel_core::model_card::ModelCard;
use flywheel_core::protocol::{Outcome, RESULT_FILE, TrialResult};

use super::RunOptions;
use super::report::ranked;
use super::store::StudyDir;
use crate::Error;

/// The best finished trials the selection chooses from: enough for variety, few enough that
/// greedy selection stays quick on large validation sets.
const CANDIDATES: usize = 20;
/// The ensemble's folder inside the study directory, and its model's version.
pub const ENSEMBLE_DIR: &str = "ensemble";

/// What the ensemble step produced: the status to record, and the winner when it was promoted.
pub struct Built {
    pub status: EnsembleStatus,
    pub winner: Option<BestTrial>,
}

/// Builds the ensemble of `trials` (finished ones) into `<study dir>/ensemble`; `None` when
/// `spec.ensemble` turns it off or fewer than two trials left predictions to select from.
pub fn build(
    study: &Study,
    trials: &[&Trial],
    dir: &StudyDir,
    dataset_uri: &str,
    threads: u32,
    options: &RunOptions,
) -> Result<Option<Built>, Error> {
    let settings = EnsembleSpec::of(&study.spec);
    if !settings.enabled() {
        return Ok(None);
    }
    let name = study.name_any();
    if !study.spec.dataset.feedback.is_empty() {
        // The trainer's parity gate reads the dataset file, which lacks the production rows
        // a retraining study appends; the single best trial stays the winner there.
        return Ok(None);
    }
    let metric = study.spec.objective.metric;
    let members: Vec<String> = ranked(trials.iter().copied(), metric.direction())
        .into_iter()
        .map(|(trial, _)| dir.artifacts(&trial.name_any()))
        .filter(|artifacts| artifacts.join(PREDICTIONS_FILE).exists())
        .take(CANDIDATES)
        .map(|artifacts| artifacts.display().to_string())
        .collect();
    if members.len() < 2 {
        return Ok(None);
    }
    let output = dir.root().join(ENSEMBLE_DIR);
    let _ = std::fs::remove_dir_all(&output);
    let version = format!("{name}-{ENSEMBLE_DIR}");
    let args = vec![
        "ensemble".to_string(),
        format!("--members={}", members.join(",")),
        format!("--metric={}", metric.as_str()),
        format!("--max-members={}", settings.max_members()),
        format!("--dataset={dataset_uri}"),
        format!("--output={}", output.display()),
        format!("--name={version}"),
        format!("--study={name}"),
        format!("--threads={}", threads.max(1)),
    ];
    let log = dir.root().join("ensemble.log");
    let stderr = File::create(&log).map_err(|source| Error::Write {
        path: log.clone(),
        source,
    })?;
    let status = Command::new(&options.trainer)
        .args(&args)
        .envs(options.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .status()
        .map_err(|source| Error::Spawn {
            program: options.trainer.clone(),
            source,
        })?;
    let result: Option<TrialResult> = std::fs::read(output.join(RESULT_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let card: Option<ModelCard> = std::fs::read(output.join("model.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let (result, card, ensemble) = match (result, card) {
        (Some(result), Some(card)) if status.success() && result.outcome == Outcome::Succeeded => {
            match card.ensemble.clone() {
                Some(ensemble) => (result, card, ensemble),
                None => {
                    return Ok(Some(failed(
                        version,
                        "the ensemble's model card lists no members",
                    )));
                }
            }
        }
        (result, _) => {
            let why = result.and_then(|r| r.message).unwrap_or_else(|| {
                format!("the trainer exited with {status}; see {}", log.display())
            });
            return Ok(Some(failed(version, &why)));
        }
    };
    let ceilings = Ceilings {
        latency_p99_micros: settings.latency_ceiling(&study.spec.constraints),
        model_bytes: study.spec.constraints.max_model_bytes,
    };
    let decision = ensemble::promote(
        &ensemble,
        metric.direction(),
        result.latency,
        result.model_bytes,
        ceilings,
    );
    let artifact_uri = format!("file://{}", absolute(&output).display());
    let objective = Some(ensemble.score);
    let winner = decision.is_ok().then(|| BestTrial {
        name: version.clone(),
        family: card.family,
        params: card.params.clone(),
        objective: ensemble.score,
        metrics: result.metrics.clone(),
        artifact_uri: Some(artifact_uri.clone()),
        // Members are selected on their validation rows; the ensemble is not scored on the
        // final holdout yet, so there is no holdout figure to show beside it.
        holdout_metrics: BTreeMap::new(),
        tie_broken_by: None,
    });
    Ok(Some(Built {
        status: EnsembleStatus {
            name: version,
            members: ensemble
                .members
                .iter()
                .map(|m| format!("{}={:.3}", m.trial, m.weight))
                .collect(),
            objective,
            best_single_objective: Some(ensemble.best_single_score),
            latency: result.latency,
            model_bytes: result.model_bytes,
            promoted: decision.is_ok(),
            message: decision.unwrap_or_else(|why| why),
            artifact_uri: Some(artifact_uri),
        },
        winner,
    }))
}

fn failed(name: String, why: &str) -> Built {
    Built {
        status: EnsembleStatus {
            name,
            members: Vec::new(),
            objective: None,
            best_single_objective: None,
            latency: None,
            model_bytes: None,
            promoted: false,
            message: format!("failed to build the ensemble: {why}"),
            artifact_uri: None,
        },
        winner: None,
    }
}

fn absolute(path: &Path) -> std::path::PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The ensemble's leaderboard line.
pub fn leaderboard_line(status: &EnsembleStatus, metric: &str) -> String {
    let objective = status
        .objective
        .map_or("-".to_string(), |v| format!("{v:.4}"));
    let latency = status
        .latency
        .map_or("-".to_string(), |l| format!("{:.0} µs", l.p99_micros));
    let size = status
        .model_bytes
        .map_or("-".to_string(), super::report::human_bytes);
    format!(
        "ensemble {:<28} {metric}={objective} p99 {latency} size {size} members [{}] {}: {}\n",
        status.name,
        status.members.join(" "),
        if status.promoted {
            "PROMOTED"
        } else {
            "not promoted"
        },
        status.message
    )
}
