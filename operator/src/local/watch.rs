//! `flywheel run --retraining`: the closed loop on one machine, unattended. While the winner
//! serves, the runner reads the server's prediction log every interval and does what the operator
//! does in a cluster: when the policy fires, it runs the retraining study and loads its winner as
//! the shadow; once the shadow has been judged on enough labelled requests, it promotes it (one
//! load: the candidate serves, the shadow slot empties) or unloads it.
//!
//! The decisions are core's, through [`super::closed_loop`] — the same functions `flywheel
//! retrain` and `flywheel gate` run by hand.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use flywheel_core::api::RetrainingPolicy;
use flywheel_core::gate::GateDecision;
use flywheel_core::k8s_openapi::jiff::Timestamp;
use flywheel_core::retraining;
use serde_json::json;

use super::closed_loop::{RetrainDecision, gate_decision, plan_retraining, read_log, served_study};
use super::serve::post_json;
use super::{RunOptions, run};
use crate::Error;

/// How the runner watches a served model.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// The served model's name in URLs and in the log.
    pub model_name: String,
    /// The server's `host:port`.
    pub listen: String,
    /// The server's prediction log.
    pub log_dir: PathBuf,
    /// How often the log is read.
    pub interval: Duration,
    pub policy: RetrainingPolicy,
    /// How retraining studies run (their directory is chosen here, beside the parent's).
    pub run: RunOptions,
}

/// A retraining study's winner, loaded as the shadow.
struct Candidate {
    study: String,
    study_dir: PathBuf,
    model_dir: PathBuf,
    version: String,
}

/// Watches until the server exits; returns its exit status. `serving_dir` is the directory of
/// the study whose winner the server was started on.
pub fn watch(
    server: &mut Child,
    serving_dir: &Path,
    options: &WatchOptions,
) -> Result<ExitStatus, Error> {
    let settings = options
        .policy
        .gate
        .as_ref()
        .map(|gate| gate.settings())
        .unwrap_or_default();
    let mut serving_dir = serving_dir.to_path_buf();
    let mut candidate: Option<Candidate> = None;
    // Retraining studies whose candidate the gate rejected: the same generation is not run
    // again for the same serving model.
    let mut rejected: HashSet<String> = HashSet::new();
    let mut waiting = None;
    loop {
        if let Some(status) = wait(server, options.interval)? {
            return Ok(status);
        }
        let records = read_log(&options.log_dir)?;
        let serving = served_study(&serving_dir)?;
        if let Some(shadow) = &candidate {
            let decision = gate_decision(
                &records,
                &options.model_name,
                &serving.card,
                &shadow.version,
                &settings,
            );
            let summary = decision.summary();
            match decision {
                GateDecision::Wait { .. } => {
                    if waiting.as_ref() != Some(&summary) {
                        println!("shadow gate on {}: {summary}", shadow.version);
                        waiting = Some(summary);
                    }
                }
                GateDecision::Promote(_) => {
                    load(
                        options,
                        json!({"model_dir": shadow.model_dir.display().to_string(), "shadow_model_dir": ""}),
                    )?;
                    println!(
                        "ShadowPromoted: {} now serves (was {}); {summary}",
                        shadow.version, serving.card.version
                    );
                    serving_dir = shadow.study_dir.clone();
                    candidate = None;
                }
                GateDecision::Reject(_) => {
                    load(options, json!({"shadow_model_dir": ""}))?;
                    println!(
                        "ShadowRejected: {} unloaded, {} keeps serving; {summary}",
                        shadow.version, serving.card.version
                    );
                    rejected.insert(shadow.study.clone());
                    candidate = None;
                }
            }
            continue;
        }
        let generation = retraining::next_generation(&serving.study.spec);
        if rejected.contains(&retraining::child_name(&serving.name, generation)) {
            continue;
        }
        let RetrainDecision::Retrain { trigger, child, .. } = plan_retraining(
            &serving_dir,
            &serving,
            &records,
            &options.model_name,
            &options.policy,
            Timestamp::now(),
        )?
        else {
            continue;
        };
        let name = child.metadata.name.clone().unwrap_or_default();
        println!(
            "{}: {}; running retraining study {name}",
            trigger.reason, trigger.message
        );
        let root = serving_dir.parent().map(PathBuf::from).unwrap_or_default();
        let study_dir = root.join(&name);
        let run_options = RunOptions {
            dir: Some(study_dir.clone()),
            ..options.run.clone()
        };
        let summary = run(*child, &root, &run_options)?;
        let Some(model_dir) = summary
            .winner
            .as_ref()
            .and_then(|w| w.artifact_uri.as_deref())
            .map(|uri| PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri)))
        else {
            println!("retraining study {name} produced no qualifying model");
            rejected.insert(name);
            continue;
        };
        let answer = load(
            options,
            json!({"shadow_model_dir": model_dir.display().to_string()}),
        )?;
        let version = answer["shadow_version"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        println!(
            "candidate {version} of {name} serves as the shadow; the gate waits for labelled requests"
        );
        waiting = None;
        candidate = Some(Candidate {
            study: name,
            study_dir,
            model_dir,
            version,
        });
    }
}

/// Sleeps `interval` in short steps; the server's exit status if it exits meanwhile.
fn wait(server: &mut Child, interval: Duration) -> Result<Option<ExitStatus>, Error> {
    let deadline = Instant::now() + interval;
    loop {
        if let Some(status) = server.try_wait().map_err(|e| Error::Serve {
            message: format!("failed to wait for flywheel-server: {e}"),
        })? {
            return Ok(Some(status));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        std::thread::sleep(left.min(Duration::from_millis(200)));
    }
}

/// `POST /v2/repository/models/{name}/load` with `parameters`: loads, warms up and swaps.
fn load(options: &WatchOptions, parameters: serde_json::Value) -> Result<serde_json::Value, Error> {
    let path = format!("/v2/repository/models/{}/load", options.model_name);
    let (status, answer) = post_json(&options.listen, &path, &json!({ "parameters": parameters }))?;
    if status != 200 {
        return Err(Error::Serve {
            message: format!("flywheel-server refused {path} ({status}): {answer}"),
        });
    }
    Ok(answer)
}
