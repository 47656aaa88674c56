//! The Trial controller: one Job per Trial, and the Trial's status from what its pod says.
//!
//! Intermediate reports come from the trial container's log (the protocol's report lines),
//! the final result from its termination message; both are re-read on every reconcile, so an
//! operator restart loses nothing. A trial the Study controller stopped while its workload still
//! ran has its Job deleted; a workload that ended on its own keeps its Job (and pod, and log)
//! for `trialTtlSeconds`.

use std::sync::Arc;
use std::time::Duration;

use flywheel_core::api::{Study, Trial, TrialPhase};
use flywheel_core::k8s_openapi::api::batch::v1::Job;
use flywheel_core::k8s_openapi::api::core::v1::Pod;
use flywheel_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use super::Context;
use crate::error::{Error, KubeContext};
use crate::k8s::job::{GPU_RESOURCE, artifact_uri, trial_job};
use crate::k8s::observe::{self, Observed, TRIAL_CONTAINER, job_is_active, workload_ended};
use crate::k8s::{FIELD_MANAGER, labels};

/// How often a running trial's log is read for new reports.
pub const RUNNING_REQUEUE: Duration = Duration::from_secs(10);
/// How often a pending trial is looked at without any change (pod events usually come first).
pub const PENDING_REQUEUE: Duration = Duration::from_secs(30);

pub async fn reconcile(trial: Arc<Trial>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = trial.namespace().ok_or_else(|| Error::Operator {
        message: format!("trial {} has no namespace", trial.name_any()),
    })?;
    let name = trial.name_any();
    if trial.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let previous = trial.status.clone().unwrap_or_default();

    if previous.phase.is_finished() {
        if previous.phase != TrialPhase::Succeeded {
            stop_workload(&trial, &namespace, &jobs, &ctx).await?;
        }
        return Ok(Action::await_change());
    }

    let studies: Api<Study> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(study) = studies
        .get_opt(&trial.spec.study)
        .await
        .doing(|| format!("read study {}", trial.spec.study))?
    else {
        // The study is gone; the garbage collector takes the trial with it.
        return Ok(Action::await_change());
    };

    let job = match jobs
        .get_opt(&name)
        .await
        .doing(|| format!("read job {name}"))?
    {
        Some(job) => job,
        None => create_job(&study, &trial, &jobs, &ctx).await?,
    };

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let pod = newest_pod(&pods, &name).await?;
    let log = match &pod {
        Some(pod) if container_started(pod) => read_log(&pods, pod).await,
        _ => None,
    };
    let output = artifact_uri(&ctx.jobs, &namespace, &study.name_any(), &name);
    let now = Time(ctx.now());
    let status = observe::trial_status(
        &previous,
        Observed {
            job: Some(&job),
            pod: pod.as_ref(),
            log: log.as_deref(),
        },
        study.spec.objective.metric.as_str(),
        &output,
        &now,
    );

    if status != previous {
        let mut updated = (*trial).clone();
        updated.status = Some(status.clone());
        // A replace carries the resourceVersion read: if the Study controller stopped the
        // trial meanwhile, this fails with a conflict instead of undoing the stop.
        let trials: Api<Trial> = Api::namespaced(ctx.client.clone(), &namespace);
        trials
            .replace_status(&name, &PostParams::default(), &updated)
            .await
            .doing(|| format!("write the status of trial {name}"))?;
        announce(&trial, previous.phase, &status, &ctx).await;
    }

    Ok(match status.phase {
        TrialPhase::Running => Action::requeue(RUNNING_REQUEUE),
        TrialPhase::Pending => Action::requeue(PENDING_REQUEUE),
        _ => Action::await_change(),
    })
}

async fn create_job(
    study: &Study,
    trial: &Trial,
    jobs: &Api<Job>,
    ctx: &Context,
) -> Result<Job, Error> {
    let name = trial.name_any();
    let desired = trial_job(study, trial, &ctx.jobs);
    let job = jobs
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .doing(|| format!("apply job {name}"))?;
    let gpus = study.spec.trial.gpus.filter(|g| *g > 0);
    let note = match gpus {
        Some(gpus) => format!("created Job {name} with {gpus} {GPU_RESOURCE}"),
        None => format!("created Job {name}"),
    };
    ctx.event(trial, EventType::Normal, "JobCreated", note)
        .await;
    Ok(job)
}

/// Deletes the Job of a stopped trial while it still runs (its pods go with it). A Job whose
/// pod already ended is left to its `ttlSecondsAfterFinished`, even while the Job controller
/// still counts it active: the trial failed (or was stopped) after its workload finished, and
/// its log is what explains the failure.
async fn stop_workload(
    trial: &Trial,
    namespace: &str,
    jobs: &Api<Job>,
    ctx: &Context,
) -> Result<(), Error> {
    let name = trial.name_any();
    let Some(job) = jobs
        .get_opt(&name)
        .await
        .doing(|| format!("read job {name}"))?
    else {
        return Ok(());
    };
    if !job_is_active(&job) {
        return Ok(());
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    if workload_ended(newest_pod(&pods, &name).await?.as_ref()) {
        return Ok(());
    }
    jobs.delete(&name, &DeleteParams::background())
        .await
        .doing(|| format!("delete job {name}"))?;
    let reason = trial
        .status
        .as_ref()
        .and_then(|s| s.reason.clone())
        .unwrap_or_else(|| "Stopped".into());
    ctx.event(
        trial,
        EventType::Normal,
        "JobDeleted",
        format!("deleted Job {name}: the trial was stopped ({reason})"),
    )
    .await;
    Ok(())
}

async fn newest_pod(pods: &Api<Pod>, trial: &str) -> Result<Option<Pod>, Error> {
    let list = pods
        .list(&ListParams::default().labels(&format!("{}={trial}", labels::TRIAL)))
        .await
        .doing(|| format!("list the pods of trial {trial}"))?;
    Ok(list
        .items
        .into_iter()
        .max_by(|a, b| a.creation_timestamp().cmp(&b.creation_timestamp())))
}

fn container_started(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().find(|c| c.name == TRIAL_CONTAINER))
        .and_then(|c| c.state.as_ref())
        .is_some_and(|state| state.running.is_some() || state.terminated.is_some())
}

/// The trial container's log; `None` when it cannot be read (the node is gone, the log was
/// rotated away): reports already recorded stay, and the result comes from the termination
/// message anyway.
async fn read_log(pods: &Api<Pod>, pod: &Pod) -> Option<String> {
    let params = LogParams {
        container: Some(TRIAL_CONTAINER.into()),
        ..LogParams::default()
    };
    match pods.logs(&pod.name_any(), &params).await {
        Ok(log) => Some(log),
        Err(error) => {
            tracing::debug!(pod = %pod.name_any(), %error, "failed to read the trial log");
            None
        }
    }
}

async fn announce(
    trial: &Trial,
    previous: TrialPhase,
    status: &flywheel_core::api::TrialStatus,
    ctx: &Context,
) {
    if previous == status.phase {
        return;
    }
    let (type_, note) = match status.phase {
        TrialPhase::Running => (EventType::Normal, "the trial is running".to_string()),
        TrialPhase::Succeeded => (
            EventType::Normal,
            match status.objective {
                Some(objective) => format!("the trial succeeded with objective {objective}"),
                None => "the trial succeeded".to_string(),
            },
        ),
        TrialPhase::Failed => (
            EventType::Warning,
            format!(
                "the trial failed: {}",
                status.message.as_deref().unwrap_or("no message")
            ),
        ),
        TrialPhase::Pruned | TrialPhase::Pending => return,
    };
    let reason = status
        .reason
        .clone()
        .unwrap_or_else(|| format!("{:?}", status.phase));
    ctx.event(trial, type_, &reason, note).await;
}
