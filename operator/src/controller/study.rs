//! The Study controller: the core state machine decides, this applies its plan.
//!
//! Each reconcile lists the study's Trials from the API server (not a cache, so a Trial created
//! a moment ago is never missed and never duplicated), asks [`flywheel_core::study::plan`] what
//! to do, server-side applies the new Trials, stops the ones the plan stops, promotes the
//! winner, and writes the status only when it changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flywheel_core::api::{
    BestTrial, ModelDeployment, ModelRef, PromotionPolicy, Study, StudyPhase, StudyStatus, Trial,
    TrialPhase,
};
use flywheel_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use flywheel_core::study::{
    NewTrial, ObservedTrial, ParentStudy, Plan, StudyIdentity, WarmHistory, condition_type, plan,
};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::Context;
use crate::error::{Error, KubeContext};
use crate::k8s::job::artifact_uri;
use crate::k8s::observe::set_condition;
use crate::k8s::{FIELD_MANAGER, labels};

/// How often a running study is re-planned without any change: its timeouts are wall-clock.
pub const RUNNING_REQUEUE: Duration = Duration::from_secs(30);
/// Study condition: the winner was written into its ModelDeployment's `spec.model` (or
/// `spec.shadow`); that it serves is the ModelDeployment's `Ready`, reported there.
pub const PROMOTED: &str = "Promoted";
/// Field manager of promotions, so `kubectl apply` of the ModelDeployment by a person keeps
/// owning everything but `spec.model`.
pub const PROMOTION_MANAGER: &str = "flywheel-promotion";
/// Field manager of shadow deployments by retraining studies.
pub const SHADOW_MANAGER: &str = "flywheel-shadow";

pub async fn reconcile(study: Arc<Study>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = study.namespace().ok_or_else(|| Error::Operator {
        message: format!("study {} has no namespace", study.name_any()),
    })?;
    let name = study.name_any();
    if study.meta().deletion_timestamp.is_some() {
        // Owner references hand the Trials (and their Jobs) to the garbage collector.
        ctx.metrics.forget_study(&namespace, &name);
        return Ok(Action::await_change());
    }
    let trials: Api<Trial> = Api::namespaced(ctx.client.clone(), &namespace);
    let listed = list_study_trials(&trials, &name).await?;
    let observed: Vec<ObservedTrial> = listed
        .iter()
        .filter_map(ObservedTrial::from_trial)
        .collect();
    let warm = warm_history(&trials, &study).await?;
    let now = Time(ctx.now());
    let plan = plan(
        &study.spec,
        StudyIdentity {
            name: &name,
            generation: study.meta().generation,
        },
        study.status.as_ref(),
        &observed,
        &warm,
        &now,
    );

    create_trials(&study, &trials, &plan.create, &ctx).await?;
    stop_trials(&study, &trials, &listed, &plan, &now, &ctx).await?;

    let mut status = plan.status.clone();
    if plan.finished
        && status.phase == StudyPhase::Succeeded
        && let Some(winner) = &plan.winner
    {
        promote(&study, &namespace, winner, &mut status, &now, &ctx).await?;
    }
    if study.status.as_ref() != Some(&status) {
        write_status(&ctx, &study, &namespace, &status).await?;
        announce_scheduling(&study, study.status.as_ref(), &status, &ctx).await;
        announce_phase(&study, study.status.as_ref(), &status, &ctx).await;
    }
    ctx.metrics.study(&namespace, &name, &status);
    Ok(if plan.finished {
        // Raising the budget edits the spec, which wakes the controller again.
        Action::await_change()
    } else {
        Action::requeue(RUNNING_REQUEUE)
    })
}

/// Every Trial of the study, whatever its phase.
async fn list_study_trials(trials: &Api<Trial>, study: &str) -> Result<Vec<Trial>, Error> {
    let selector = format!("{}={study}", labels::STUDY);
    let list = trials
        .list(&ListParams::default().labels(&selector))
        .await
        .doing(|| format!("list the trials of study {study}"))?;
    Ok(list
        .items
        .into_iter()
        // The label is only a filter: a Trial counts if its spec says it belongs here.
        .filter(|trial| trial.spec.study == study)
        .collect())
}

/// The trials of the studies in `spec.warmStart.studies` (same namespace), as history.
async fn warm_history(trials: &Api<Trial>, study: &Study) -> Result<WarmHistory, Error> {
    let Some(warm) = &study.spec.warm_start else {
        return Ok(WarmHistory::default());
    };
    let mut history = WarmHistory::default();
    for parent in &warm.studies {
        let observed: Vec<ObservedTrial> = list_study_trials(trials, parent)
            .await?
            .iter()
            .filter_map(ObservedTrial::from_trial)
            .collect();
        if observed.is_empty() {
            continue;
        }
        history.studies.push(ParentStudy::from_trials(
            parent.clone(),
            &observed,
            study.spec.objective.metric,
        ));
    }
    Ok(history)
}

/// The Trial object for a planned trial: labelled for selection, owned by the study.
pub fn trial_object(study: &Study, new: &NewTrial) -> Trial {
    let mut trial = Trial::new(&new.name, new.spec.clone());
    trial.metadata.namespace = study.namespace();
    trial.metadata.labels = Some(BTreeMap::from([
        (labels::STUDY.to_string(), study.name_any()),
        (labels::MANAGED_BY.to_string(), "flywheel".to_string()),
    ]));
    trial.metadata.owner_references = study.controller_owner_ref(&()).map(|r| vec![r]);
    trial
}

async fn create_trials(
    study: &Study,
    trials: &Api<Trial>,
    create: &[NewTrial],
    ctx: &Context,
) -> Result<(), Error> {
    if create.is_empty() {
        return Ok(());
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for new in create {
        let trial = trial_object(study, new);
        trials
            .patch(&new.name, &params, &Patch::Apply(&trial))
            .await
            .doing(|| format!("apply trial {}", new.name))?;
    }
    let names: Vec<&str> = create.iter().map(|t| t.name.as_str()).collect();
    ctx.event(
        study,
        EventType::Normal,
        "TrialsCreated",
        format!("created {}", names.join(", ")),
    )
    .await;
    Ok(())
}

/// Writes the plan's verdict into each stopped trial's status; the Trial controller then
/// deletes its Job. The status write carries the resourceVersion of the list the plan was made
/// from, so a trial that finished meanwhile is not overwritten (the conflict retries the
/// reconcile).
async fn stop_trials(
    study: &Study,
    trials: &Api<Trial>,
    listed: &[Trial],
    plan: &Plan,
    now: &Time,
    ctx: &Context,
) -> Result<(), Error> {
    if plan.stop.is_empty() {
        return Ok(());
    }
    for stop in &plan.stop {
        let Some(mut trial) = listed.iter().find(|t| t.name_any() == stop.name).cloned() else {
            continue;
        };
        let mut status = trial.status.take().unwrap_or_default();
        if status.phase.is_finished() {
            continue;
        }
        status.phase = stop.phase;
        status.reason = Some(stop.reason.clone());
        status.message = Some(stop.message.clone());
        status.completion_time = Some(now.clone());
        trial.status = Some(status);
        trials
            .replace_status(&stop.name, &PostParams::default(), &trial)
            .await
            .doing(|| format!("stop trial {}", stop.name))?;
        ctx.event(
            study,
            severity(stop.phase == TrialPhase::Failed),
            &stop.reason,
            format!("stopped trial {}: {}", stop.name, stop.message),
        )
        .await;
    }
    Ok(())
}

/// With `promotion.policy: auto`, writes the winner into the target ModelDeployment's
/// `spec.model` (creating the ModelDeployment if needed); with `shadow` (retraining studies),
/// into its `spec.shadow`, where the shadow gate judges it on live traffic. Records the
/// `Promoted` condition. Only a changed model is written, and only once per winner.
async fn promote(
    study: &Study,
    namespace: &str,
    winner: &BestTrial,
    status: &mut StudyStatus,
    now: &Time,
    ctx: &Context,
) -> Result<(), Error> {
    let Some(promotion) = &study.spec.promotion else {
        return Ok(());
    };
    // A winner is promoted once. What happens to the ModelDeployment afterwards — the shadow
    // gate rejecting or promoting it, a person rolling back — is not undone by this study.
    let previous = study.status.as_ref();
    if let Some(done) = previous
        .filter(|s| s.best_trial.as_ref().is_some_and(|b| b.name == winner.name))
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == PROMOTED && c.status == "True")
        })
    {
        set_condition(&mut status.conditions, done.clone());
        return Ok(());
    }
    let as_shadow = match promotion.policy {
        PromotionPolicy::Auto => false,
        PromotionPolicy::Shadow => true,
        PromotionPolicy::Manual => return Ok(()),
    };
    let study_name = study.name_any();
    let model = ModelRef {
        uri: winner
            .artifact_uri
            .clone()
            .unwrap_or_else(|| artifact_uri(&ctx.jobs, namespace, &study_name, &winner.name)),
        version: winner.name.clone(),
        study: Some(study_name.clone()),
        trial: Some(winner.name.clone()),
    };
    let deployments: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), namespace);
    let current = deployments
        .get_opt(&promotion.deployment)
        .await
        .doing(|| format!("read modeldeployment {}", promotion.deployment))?;
    let in_place = current.as_ref().is_some_and(|md| {
        if as_shadow {
            md.spec.shadow.as_ref() == Some(&model)
        } else {
            md.spec.model.as_ref() == Some(&model)
        }
    });
    if !in_place {
        let (manager, spec) = if as_shadow {
            (SHADOW_MANAGER, json!({ "shadow": model }))
        } else {
            (PROMOTION_MANAGER, json!({ "model": model }))
        };
        // Only the one field is applied, so replicas, resources and image set by a person
        // stay theirs.
        let desired = json!({
            "apiVersion": ModelDeployment::api_version(&()),
            "kind": ModelDeployment::kind(&()),
            "metadata": {"name": promotion.deployment, "namespace": namespace},
            "spec": spec,
        });
        deployments
            .patch(
                &promotion.deployment,
                &PatchParams::apply(manager).force(),
                &Patch::Apply(&desired),
            )
            .await
            .doing(|| {
                format!(
                    "promote {} to modeldeployment {}",
                    winner.name, promotion.deployment
                )
            })?;
        ctx.event(
            study,
            EventType::Normal,
            PROMOTED,
            format!(
                "{} {} ({} = {}) to ModelDeployment {}",
                if as_shadow {
                    "deployed as shadow"
                } else {
                    "promoted"
                },
                winner.name,
                study.spec.objective.metric.as_str(),
                winner.objective,
                promotion.deployment
            ),
        )
        .await;
    }
    set_condition(
        &mut status.conditions,
        Condition {
            type_: PROMOTED.into(),
            status: "True".into(),
            reason: if as_shadow { "Shadow" } else { PROMOTED }.into(),
            message: if as_shadow {
                format!(
                    "version {} is the shadow of ModelDeployment {}, awaiting the gate",
                    model.version, promotion.deployment
                )
            } else {
                // Promotion is the write; whether it serves is the ModelDeployment's `Ready`.
                format!(
                    "version {} was written to ModelDeployment {} (its Ready condition tells when it serves)",
                    model.version, promotion.deployment
                )
            },
            last_transition_time: now.clone(),
            observed_generation: study.meta().generation,
        },
    );
    Ok(())
}

/// Server-side applies the whole status: fields the plan dropped disappear too.
async fn write_status(
    ctx: &Context,
    study: &Study,
    namespace: &str,
    status: &StudyStatus,
) -> Result<(), Error> {
    let studies: Api<Study> = Api::namespaced(ctx.client.clone(), namespace);
    let body = json!({
        "apiVersion": Study::api_version(&()),
        "kind": Study::kind(&()),
        "status": status,
    });
    studies
        .patch_status(
            &study.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .doing(|| format!("write the status of study {}", study.name_any()))?;
    Ok(())
}

/// Warning for a failure, Normal otherwise.
fn severity(failure: bool) -> EventType {
    if failure {
        EventType::Warning
    } else {
        EventType::Normal
    }
}

/// A Warning each time the set of trials the scheduler cannot place (or its message) changes,
/// and a Normal Event when they all got nodes.
async fn announce_scheduling(
    study: &Study,
    previous: Option<&StudyStatus>,
    status: &StudyStatus,
    ctx: &Context,
) {
    let find = |s: &StudyStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == condition_type::TRIALS_SCHEDULABLE)
            .cloned()
    };
    let Some(now) = find(status) else {
        return;
    };
    let before = previous.and_then(find);
    if before
        .as_ref()
        .is_some_and(|b| b.status == now.status && b.message == now.message)
    {
        return;
    }
    let unschedulable = now.status == "False";
    if !unschedulable && before.is_none() {
        return;
    }
    ctx.event(study, severity(unschedulable), &now.reason, now.message)
        .await;
}

async fn announce_phase(
    study: &Study,
    previous: Option<&StudyStatus>,
    status: &StudyStatus,
    ctx: &Context,
) {
    let previous_phase = previous.map(|p| p.phase);
    if previous_phase == Some(status.phase) {
        return;
    }
    let condition = status
        .conditions
        .iter()
        .find(|c| c.status == "True" && condition_type::PHASES.contains(&c.type_.as_str()));
    let (reason, message) = condition
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_else(|| (format!("{:?}", status.phase), String::new()));
    ctx.event(
        study,
        severity(status.phase == StudyPhase::Failed),
        &reason,
        format!("study is {:?}: {message}", status.phase),
    )
    .await;
}
