//! `flywheel run`: a Study on one machine. The same core state machine as the operator decides;
//! trials run as `flywheel-trainer` processes and everything is kept in a study directory, so
//! Ctrl-C or `kill -9` followed by the same command resumes the study.

pub mod closed_loop;
pub mod ensemble;
pub(crate) mod html;
mod process;
mod report;
mod serve;
mod store;
pub mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use flywheel_core::api::{BestTrial, Study, StudyPhase, Trial, TrialPhase, TrialStatus};
use flywheel_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use flywheel_core::k8s_openapi::jiff::Timestamp;
use flywheel_core::protocol::{RESULT_FILE, TrialPlace, TrialResult, trial_arguments};
use flywheel_core::search::{Observation, ObservationState};
use flywheel_core::study::{self, ObservedTrial, ParentStudy, StudyIdentity, WarmHistory};

use crate::Error;
use flywheel_core::kube::ResourceExt;
use process::{TrialProcess, TrialReport};
use store::StudyDir;

pub use serve::ServeOptions;

/// How to run a study locally.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The study directory; defaults to `.flywheel/<study name>`.
    pub dir: Option<PathBuf>,
    /// Trials at once; overrides `spec.budget.parallelism` (default: the number of cores).
    pub parallelism: Option<u32>,
    /// The trainer executable.
    pub trainer: PathBuf,
    /// Print one line per trial event.
    pub quiet: bool,
    /// Extra environment for trial processes (e.g. ORT_DYLIB_PATH).
    pub env: Vec<(String, String)>,
}

/// What a finished run produced.
#[derive(Debug)]
pub struct RunSummary {
    pub dir: PathBuf,
    pub study: Study,
    pub trials: Vec<Trial>,
    /// The best trial, or the ensemble when it was promoted.
    pub winner: Option<BestTrial>,
    /// The ensemble built after the search, if any.
    pub ensemble: Option<flywheel_core::api::EnsembleStatus>,
}

/// Runs (or resumes) the study until it finishes.
pub fn run(
    mut study: Study,
    manifest_dir: &Path,
    options: &RunOptions,
) -> Result<RunSummary, Error> {
    let name = study.metadata.name.clone().unwrap_or_default();
    let root = options
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(".flywheel").join(&name));
    let dir = StudyDir::open(&root)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let parallelism = options
        .parallelism
        .or(study.spec.budget.parallelism)
        .unwrap_or(cores)
        .max(1);
    study.spec.budget.parallelism = Some(parallelism);
    // Each trial gets its share of the cores: parallel trials that each use every core made
    // training tens of times slower on small machines.
    let threads = (cores / parallelism).max(1);
    let dataset_uri = resolve_dataset(&study.spec.dataset.uri, manifest_dir);

    let mut status = dir.load_study()?.and_then(|previous| previous.status);
    study.status = status.clone();
    dir.save_study(&study)?;
    let warm = warm_history(&study, dir.root());

    let mut trials: BTreeMap<String, Trial> = BTreeMap::new();
    for mut trial in dir.load_trials()? {
        let trial_name = trial.metadata.name.clone().unwrap_or_default();
        if !trial_status(&trial).phase.is_finished() {
            // A trial that was running when the runner died: its process (if still alive) is
            // ended and the trial runs again from the start, under the same index.
            let killed = process::kill_orphan(&trial_name, &dir.trial_dir(&trial_name));
            let _ = std::fs::remove_dir_all(dir.artifacts(&trial_name));
            trial.status = Some(TrialStatus {
                message: Some(if killed {
                    "restarted: the runner was interrupted (orphaned process ended)".into()
                } else {
                    "restarted: the runner was interrupted".into()
                }),
                ..TrialStatus::default()
            });
            dir.save_trial(&trial)?;
        }
        trials.insert(trial_name, trial);
    }
    if !trials.is_empty() && !options.quiet {
        println!(
            "resuming {name}: {} trial(s) recorded in {}",
            trials.len(),
            dir.root().display()
        );
    }

    let (report_tx, report_rx) = mpsc::channel::<TrialReport>();
    let mut running: BTreeMap<String, TrialProcess> = BTreeMap::new();
    let metric = study.spec.objective.metric.as_str();
    let max_trials = study.spec.budget.max_trials;

    let mut winner = loop {
        let now = Time(Timestamp::now());
        let observed: Vec<ObservedTrial> = trials
            .values()
            .filter_map(ObservedTrial::from_trial)
            .collect();
        let plan = study::plan(
            &study.spec,
            StudyIdentity {
                name: &name,
                generation: None,
            },
            status.as_ref(),
            &observed,
            &warm,
            &now,
        );

        for stop in &plan.stop {
            if let Some(mut process) = running.remove(&stop.name) {
                process.kill();
            }
            if let Some(trial) = trials.get_mut(&stop.name) {
                let mut trial_status = trial_status(trial);
                trial_status.phase = stop.phase;
                trial_status.reason = Some(stop.reason.clone());
                trial_status.message = Some(stop.message.clone());
                trial_status.completion_time = Some(now.clone());
                trial.status = Some(trial_status);
                dir.save_trial(trial)?;
                if !options.quiet {
                    println!(
                        "  {} stopped ({}): {}",
                        stop.name, stop.reason, stop.message
                    );
                }
            }
        }
        for new in &plan.create {
            let trial = Trial::new(&new.name, new.spec.clone());
            // Recorded before it starts, so a crash between the two cannot reuse the index.
            dir.save_trial(&trial)?;
            trials.insert(new.name.clone(), trial);
        }
        if status.as_ref() != Some(&plan.status) {
            dir.save_status(&mut study, &plan.status)?;
            status = Some(plan.status.clone());
        }

        for (trial_name, trial) in trials.iter_mut() {
            if trial_status(trial).phase != TrialPhase::Pending || running.contains_key(trial_name)
            {
                continue;
            }
            let artifacts = dir.artifacts(trial_name);
            // Beside the study directories, so every study on this machine shares it: entries
            // are content-addressed by the data they were computed from.
            let cache = dir
                .root()
                .parent()
                .unwrap_or(dir.root())
                .join("feature-cache");
            let args = trial_arguments(
                &name,
                &study.spec,
                trial_name,
                &trial.spec,
                &TrialPlace {
                    dataset_uri: &dataset_uri,
                    output: &artifacts.display().to_string(),
                    threads,
                    feature_cache: Some(&cache.display().to_string()),
                },
            );
            let process = TrialProcess::spawn(
                &options.trainer,
                &args,
                trial_name,
                &dir.trial_dir(trial_name),
                &options.env,
                report_tx.clone(),
            )?;
            running.insert(trial_name.clone(), process);
            trial.status = Some(TrialStatus {
                phase: TrialPhase::Running,
                start_time: Some(Time(Timestamp::now())),
                ..TrialStatus::default()
            });
            dir.save_trial(trial)?;
            if !options.quiet {
                println!(
                    "  {trial_name} started: {} {}",
                    trial.spec.family,
                    report::compact_params(&trial.spec.params)
                );
            }
        }

        if plan.finished && running.is_empty() {
            break plan.winner;
        }

        // Wait for the next event: a report line or a process exit.
        match report_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(first) => {
                let mut batch = vec![first];
                batch.extend(report_rx.try_iter());
                for TrialReport { trial, report } in batch {
                    if let Some(trial) = trials.get_mut(&trial) {
                        let mut trial_status = trial_status(trial);
                        trial_status.reports.push(report);
                        trial.status = Some(trial_status);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => {}
        }
        let finished: Vec<(String, Option<i32>)> = running
            .iter_mut()
            .filter_map(|(trial_name, process)| {
                process.try_finish().map(|code| (trial_name.clone(), code))
            })
            .collect();
        for (trial_name, code) in finished {
            running.remove(&trial_name);
            // Reports that arrived before the exit belong to the trial's record.
            for TrialReport { trial, report } in report_rx.try_iter() {
                if let Some(trial) = trials.get_mut(&trial) {
                    let mut trial_status = trial_status(trial);
                    trial_status.reports.push(report);
                    trial.status = Some(trial_status);
                }
            }
            let Some(trial) = trials.get_mut(&trial_name) else {
                continue;
            };
            let finished_status =
                finish_status(trial_status(trial), &dir, &trial_name, code, metric);
            trial.status = Some(finished_status);
            dir.save_trial(trial)?;
            if !options.quiet {
                let done = trials
                    .values()
                    .filter(|t| trial_status(t).phase.is_finished())
                    .count();
                let this = trial_status(&trials[&trial_name]);
                let outcome = match (this.phase, this.objective) {
                    (TrialPhase::Succeeded, Some(value)) => {
                        match report::holdout_score(&trials[&trial_name], metric) {
                            Some(holdout) => format!("{metric}={value:.4} (holdout {holdout:.4})"),
                            None => format!("{metric}={value:.4}"),
                        }
                    }
                    (phase, _) => {
                        format!("{phase:?}: {}", this.message.clone().unwrap_or_default())
                    }
                };
                // The plan's best trial lags one event behind; the trials are current.
                let best = report::ranked(trials.values(), study.spec.objective.metric.direction())
                    .first()
                    .map(|(t, value)| format!(" | best {metric}={value:.4} ({})", t.name_any()))
                    .unwrap_or_default();
                println!(
                    "[{done}/{max_trials}] {trial_name} {outcome}{best} | running {}",
                    running.len()
                );
            }
        }
    };

    if let Some(final_status) = &status
        && final_status.phase == StudyPhase::Failed
        && !options.quiet
    {
        let reason = final_status
            .conditions
            .iter()
            .find(|c| c.type_ == "Failed" && c.status == "True")
            .map(|c| c.message.clone())
            .unwrap_or_default();
        println!("study {name} failed: {reason}");
    }
    let mut built_ensemble = None;
    if let Some(final_status) = status.clone()
        && final_status.phase == StudyPhase::Succeeded
    {
        let finished: Vec<&Trial> = trials.values().collect();
        if !options.quiet {
            println!("building the ensemble of the finished trials");
        }
        if let Some(built) = ensemble::build(&study, &finished, &dir, &dataset_uri, cores, options)?
        {
            if built.winner.is_some() {
                winner = built.winner;
            }
            let mut final_status = final_status;
            final_status.ensemble = Some(built.status.clone());
            dir.save_status(&mut study, &final_status)?;
            built_ensemble = Some(built.status);
        }
    }
    dir.release();
    Ok(RunSummary {
        dir: dir.root().to_path_buf(),
        trials: trials.into_values().collect(),
        study,
        winner,
        ensemble: built_ensemble,
    })
}

fn trial_status(trial: &Trial) -> TrialStatus {
    trial.status.clone().unwrap_or_default()
}

/// A relative dataset path is read relative to the working directory, or, failing that, to the
/// manifest's directory (so a manifest next to its data runs from anywhere).
fn resolve_dataset(uri: &str, manifest_dir: &Path) -> String {
    if uri.contains("://") || Path::new(uri).is_absolute() || Path::new(uri).exists() {
        return uri.to_string();
    }
    let beside = manifest_dir.join(uri);
    if beside.exists() {
        beside.display().to_string()
    } else {
        uri.to_string()
    }
}

/// The trial's status after its process ended, from `result.json` (or the exit code when the
/// process died before writing one).
fn finish_status(
    mut status: TrialStatus,
    dir: &StudyDir,
    trial_name: &str,
    code: Option<i32>,
    metric: &str,
) -> TrialStatus {
    status.completion_time = Some(Time(Timestamp::now()));
    let artifacts = dir.artifacts(trial_name);
    let result: Option<TrialResult> = std::fs::read(artifacts.join(RESULT_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    match result {
        Some(result) => {
            let default_uri = artifacts.display().to_string();
            result.apply_to(&mut status, code, metric, &default_uri);
        }
        None => {
            status.phase = TrialPhase::Failed;
            status.reason = Some("Crashed".into());
            let stderr = std::fs::read_to_string(dir.trial_dir(trial_name).join("stderr.log"))
                .unwrap_or_default();
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            status.message = Some(format!(
                "the trial exited with {} and wrote no result: {}",
                code.map_or("a signal".to_string(), |c| format!("code {c}")),
                tail.join(" | ")
            ));
        }
    }
    status
}

/// Observations from earlier studies named in `spec.warmStart.studies`, read from their study
/// directories beside this one.
fn warm_history(study: &Study, root: &Path) -> WarmHistory {
    let Some(warm) = &study.spec.warm_start else {
        return WarmHistory::default();
    };
    let parent_root = root.parent().unwrap_or(Path::new("."));
    let studies = warm
        .studies
        .iter()
        .filter_map(|parent| {
            let parent_dir = parent_root.join(parent);
            if !parent_dir.join("study.json").exists() {
                return None;
            }
            let trials = StudyDir::read_only(&parent_dir).load_trials().ok()?;
            let metric = study.spec.objective.metric.as_str();
            let observations = trials
                .iter()
                .map(|trial| {
                    let status = trial_status(trial);
                    let (state, value) = match status.phase {
                        TrialPhase::Succeeded => match study::objective_of(&status, metric) {
                            Some(value) => (ObservationState::Complete, Some(value)),
                            None => (ObservationState::Failed, None),
                        },
                        TrialPhase::Pruned => (ObservationState::Pruned, None),
                        _ => (ObservationState::Failed, None),
                    };
                    Observation {
                        family: trial.spec.family,
                        params: trial.spec.params.clone(),
                        state,
                        value,
                    }
                })
                .collect();
            Some(ParentStudy {
                name: parent.clone(),
                observations,
            })
        })
        .collect();
    WarmHistory { studies }
}

pub use report::{leaderboard, ranked, winner_line};
pub use serve::{curl_examples, example_instance, serve};

/// Writes the study directory's HTML report to `output` and returns the number of trials in it.
pub fn write_report(dir: &Path, output: &Path) -> Result<usize, Error> {
    let store = StudyDir::read_only(dir);
    let study = store.load_study()?.ok_or_else(|| Error::Read {
        path: dir.join("study.json"),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "not a study directory (run `flywheel run` first)",
        ),
    })?;
    let trials = store.load_trials()?;
    let winner_dir = study
        .status
        .as_ref()
        .and_then(|s| s.best_trial.as_ref())
        .and_then(|best| best.artifact_uri.as_deref())
        .map(|uri| PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri)));
    let html = html::render(&study, &trials, winner_dir.as_deref());
    store::write_atomic(output, html.as_bytes())?;
    Ok(trials.len())
}
