//! The ModelDeployment controller: a Deployment of `flywheel-server`, its Service and (when the
//! Prometheus operator is installed) a ServiceMonitor; the rollout's progress as status.
//!
//! Children are server-side applied only when what Flywheel would apply changed. Each applied
//! object carries a digest of its desired form ([`APPLIED_DIGEST`]); comparing digests instead
//! of whole objects ignores the defaults the API server fills in, so a steady state makes no
//! writes, while a changed model version, image or replica count is applied at once.

use std::sync::Arc;

use std::collections::BTreeMap;

use flywheel_core::api::{
    GateRecord, ModelDeployment, ModelDeploymentStatus, ModelRef, RetrainingPolicy, Study,
    StudyPhase,
};
use flywheel_core::feedback::{self, ProductionSummary, ServerStats};
use flywheel_core::gate::{self, GateDecision};
use flywheel_core::k8s_openapi::api::apps::v1::Deployment;
use flywheel_core::k8s_openapi::api::core::v1::Pod;
use flywheel_core::k8s_openapi::api::core::v1::Service;
use flywheel_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use flywheel_core::retraining::{self, ServingState, Trigger, next_generation};
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::Context;
use crate::error::{Error, KubeContext};
use crate::k8s::FIELD_MANAGER;
use crate::k8s::observe::set_condition;
use crate::k8s::retraining::{
    ARCHIVE_DELAY_SECONDS, retraining_spent, retraining_study, retraining_study_name_at,
};
use crate::k8s::serving::{
    SERVER_PORT, endpoint, server_deployment, server_service, server_service_monitor,
    service_monitor_resource,
};

/// Annotation holding the digest of the desired object last applied.
pub const APPLIED_DIGEST: &str = "flywheel.dev/applied-digest";
pub const READY: &str = "Ready";
/// `Ready=False` reason of a ModelDeployment without `spec.model`.
pub const WAITING_FOR_MODEL: &str = "WaitingForModel";
pub const PROGRESSING: &str = "Progressing";
/// A retraining trigger of `spec.retraining` fired (reason: the trigger).
pub const RETRAINING_DUE: &str = "RetrainingDue";
/// The shadow gate's verdict on the shadow: Unknown while it waits for paired rows, True once
/// it promoted the candidate, False once it rejected it.
pub const SHADOW_GATE: &str = "ShadowGate";
/// Event reasons of the closed loop.
pub const RETRAINING_STARTED: &str = "RetrainingStarted";
pub const SHADOW_PROMOTED: &str = "ShadowPromoted";
pub const SHADOW_REJECTED: &str = "ShadowRejected";
/// Field manager of retraining studies the operator starts.
pub const RETRAINING_MANAGER: &str = "flywheel-retraining";
/// Field manager of the shadow gate's spec changes.
pub const GATE_MANAGER: &str = "flywheel-gate";

pub async fn reconcile(md: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = md.namespace().ok_or_else(|| Error::Operator {
        message: format!("modeldeployment {} has no namespace", md.name_any()),
    })?;
    let name = md.name_any();
    if md.meta().deletion_timestamp.is_some() {
        ctx.metrics.forget_deployment(&namespace, &name);
        return Ok(Action::await_change());
    }

    let previous = md.status.clone().unwrap_or_default();
    let now = Time(ctx.now());
    let (Some(model), Some(desired)) = (&md.spec.model, server_deployment(&md, &ctx.serving))
    else {
        // Nothing to serve yet: no server (it could only crash-loop) until a promotion
        // writes spec.model, which wakes this controller again.
        let status = waiting_for_model(&md, &previous, &now);
        if status != previous {
            write_status(&ctx, &namespace, &name, &status).await?;
        }
        return Ok(Action::await_change());
    };
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let deployment = ensure(&deployments, desired, "deployment").await?;
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    ensure(&services, server_service(&md), "service").await?;
    if ctx.service_monitors {
        let monitors: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &namespace, &service_monitor_resource());
        ensure(&monitors, server_service_monitor(&md), "servicemonitor").await?;
    }

    let mut status = serving_status(&md, model, &deployment, &previous, &now);
    let mut due = None;
    let mut started = None;
    let mut verdict = None;
    if let Some(policy) = &md.spec.retraining {
        let poll = server_stats(&ctx, &namespace, &md).await?;
        ctx.metrics
            .stats_poll_failures(&namespace, &name, poll.failures.len());
        let (ready_pods, stats) = (poll.ready.as_slice(), poll.stats.as_slice());
        let parent = serving_study(&ctx, &namespace, model).await?;
        let training = training_metrics(parent.as_ref(), model);
        // A policy judged on part of the replicas' feedback would undercount labels and skew
        // the online metric: no decision (and no retraining study) until every replica answers.
        if !record_poll_gaps(&mut status, &md, &poll, &now) {
            due = apply_retraining(&mut status, &md, model, policy, stats, training, &now);
        }
        if let Some(shadow) = &md.spec.shadow {
            let decision = judge_shadow(model, shadow, policy, stats);
            record_gate(&mut status, &md, model, shadow, &decision, &now);
            if !matches!(decision, GateDecision::Wait { .. }) {
                act_on_gate(&ctx, &namespace, &md, shadow, &decision).await?;
                verdict = Some(decision);
            }
        } else if let (Some(trigger), Some(parent)) = (&due, &parent) {
            let child = start_retraining(
                &ctx,
                &namespace,
                &md,
                RetrainingInputs {
                    policy,
                    trigger,
                    parent,
                    ready_pods,
                },
            )
            .await?;
            if let Some((name, created)) = child {
                status.retraining_study = Some(name.clone());
                if let Some(production) = created {
                    started = Some((name, production));
                }
            }
        }
    }
    if status != previous {
        write_status(&ctx, &namespace, &name, &status).await?;
        if let Some(failed) = status
            .conditions
            .iter()
            .find(|c| c.type_ == RETRAINING_DUE && c.reason == STATS_UNAVAILABLE)
            && !previous
                .conditions
                .iter()
                .any(|c| c.type_ == RETRAINING_DUE && c.reason == STATS_UNAVAILABLE)
        {
            ctx.event(
                md.as_ref(),
                EventType::Warning,
                STATS_UNAVAILABLE,
                failed.message.clone(),
            )
            .await;
        }
        if let Some(trigger) = &due
            && !condition_holds(&previous.conditions, RETRAINING_DUE)
        {
            ctx.event(
                md.as_ref(),
                EventType::Normal,
                RETRAINING_DUE,
                format!("{}: {}", trigger.reason, trigger.message),
            )
            .await;
        }
        if let Some((study, production)) = &started {
            ctx.event(
                md.as_ref(),
                EventType::Normal,
                RETRAINING_STARTED,
                format!(
                    "started study {study} on the parent's data plus {} labelled production rows (cut at {})",
                    production.labelled_rows,
                    production.until.as_deref().unwrap_or("now")
                ),
            )
            .await;
        }
        if let Some(decision) = &verdict {
            let reason = if matches!(decision, GateDecision::Promote(_)) {
                SHADOW_PROMOTED
            } else {
                SHADOW_REJECTED
            };
            ctx.event(md.as_ref(), EventType::Normal, reason, decision.summary())
                .await;
        }
        if status.serving_version != previous.serving_version
            && let Some(version) = &status.serving_version
        {
            ctx.event(
                md.as_ref(),
                EventType::Normal,
                "Serving",
                format!("version {version} serves at {}", endpoint(&md)),
            )
            .await;
        }
    }
    if md.spec.retraining.is_some() {
        // Feedback arrives at the servers, not the API server: poll their stats.
        return Ok(Action::requeue(ctx.stats_interval));
    }
    // Deployment changes (pods becoming ready) wake the controller through `owns`.
    Ok(Action::await_change())
}

/// Server-side applies the whole status.
async fn write_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &ModelDeploymentStatus,
) -> Result<(), Error> {
    let body = json!({
        "apiVersion": ModelDeployment::api_version(&()),
        "kind": ModelDeployment::kind(&()),
        "status": status,
    });
    let mds: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), namespace);
    mds.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .doing(|| format!("write the status of modeldeployment {name}"))?;
    Ok(())
}

/// The status of a ModelDeployment without `spec.model`: not ready, waiting for a promotion.
pub fn waiting_for_model(
    md: &ModelDeployment,
    previous: &ModelDeploymentStatus,
    now: &Time,
) -> ModelDeploymentStatus {
    let mut status = previous.clone();
    status.ready_replicas = 0;
    status.observed_generation = md.meta().generation;
    set_condition(
        &mut status.conditions,
        condition(
            READY,
            "False",
            WAITING_FOR_MODEL,
            format!(
                "spec.model is not set: a Study with promotion.deployment: {} fills it when it succeeds (or set it to a model folder)",
                md.name_any()
            ),
            md,
            now,
        ),
    );
    status
}

/// How often the servers' online stats are read for a ModelDeployment with a retraining policy,
/// unless `--stats-interval-seconds` says otherwise.
pub const STATS_REQUEUE: std::time::Duration = std::time::Duration::from_secs(60);

fn condition_holds(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// `RetrainingDue` reasons when the policy cannot be judged.
pub const STATS_UNAVAILABLE: &str = "StatsUnavailable";
pub const NO_READY_SERVERS: &str = "NoReadyServers";

/// What one poll of the server replicas' stats found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatsPoll {
    /// The ready server pods, all of which were asked.
    pub ready: Vec<String>,
    /// The answers of those that answered.
    pub stats: Vec<ServerStats>,
    /// Those that did not: the pod and the error (proxy refused, 403, timeout, bad body).
    pub failures: Vec<(String, String)>,
}

/// Marks `RetrainingDue` Unknown when the poll cannot support a decision — a replica did not
/// answer (`StatsUnavailable`, naming the pods and errors) or none is ready (`NoReadyServers`)
/// — keeping the online metrics last recorded. Returns whether it did.
pub fn record_poll_gaps(
    status: &mut ModelDeploymentStatus,
    md: &ModelDeployment,
    poll: &StatsPoll,
    now: &Time,
) -> bool {
    let (reason, message) = if !poll.failures.is_empty() {
        let failures: Vec<String> = poll
            .failures
            .iter()
            .map(|(pod, error)| format!("pod {pod}: {error}"))
            .collect();
        (
            STATS_UNAVAILABLE,
            format!(
                "failed to read the stats of {} of {} ready server replicas through the API server's pod proxy ({}); check that the operator may get pods/proxy and that no NetworkPolicy blocks the API server",
                poll.failures.len(),
                poll.ready.len(),
                failures.join("; ")
            ),
        )
    } else if poll.ready.is_empty() {
        (
            NO_READY_SERVERS,
            "no server replica is ready to report its feedback".to_string(),
        )
    } else {
        return false;
    };
    set_condition(
        &mut status.conditions,
        condition(RETRAINING_DUE, "Unknown", reason, message, md, now),
    );
    true
}

/// `/v1/models/{name}/stats` of every ready server pod, through the API server's pod proxy (each
/// replica counts its own feedback, so all of them are read), and the ready pods' names. A pod
/// that does not answer is recorded as a failure (and logged at WARN): the next poll reads it
/// again. A pod deleted between the list and its read is left out.
async fn server_stats(
    ctx: &Context,
    namespace: &str,
    md: &ModelDeployment,
) -> Result<StatsPoll, Error> {
    let name = md.name_any();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!(
        "{}=flywheel-server,{}={name}",
        crate::k8s::labels::NAME,
        crate::k8s::labels::COMPONENT
    );
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .doing(|| format!("list the server pods of modeldeployment {name}"))?;
    let mut poll = StatsPoll::default();
    for pod in list
        .items
        .iter()
        .filter(|p| pod_ready(p))
        .map(|p| p.name_any())
    {
        let path = format!(
            "/api/v1/namespaces/{namespace}/pods/{pod}:{SERVER_PORT}/proxy/v1/models/{name}/stats"
        );
        let answer = match http::Request::get(&path).body(Vec::new()) {
            Ok(request) => ctx.client.request::<ServerStats>(request).await,
            Err(error) => {
                poll.failures.push((pod.clone(), error.to_string()));
                poll.ready.push(pod);
                continue;
            }
        };
        match answer {
            // Deleted since the list (a rollout replaced it): no replica left to read, so
            // neither a failure nor one of the replicas the decision waits for.
            Err(kube::Error::Api(status)) if pod_gone(&status, &pod) => {
                tracing::debug!(modeldeployment = %name, %namespace, %pod, "server pod deleted during the stats poll");
            }
            Ok(answer) => {
                poll.stats.push(answer);
                poll.ready.push(pod);
            }
            Err(error) => {
                tracing::warn!(modeldeployment = %name, %namespace, %pod, %error, "failed to read server stats");
                poll.failures.push((pod.clone(), error.to_string()));
                poll.ready.push(pod);
            }
        }
    }
    Ok(poll)
}

/// Whether the API server answered that the pod itself no longer exists (not the server in it
/// answering 404, which the proxy passes through as the server's own body).
fn pod_gone(status: &kube::core::Status, pod: &str) -> bool {
    status.is_not_found()
        && status
            .details
            .as_ref()
            .is_some_and(|d| d.kind == "pods" && d.name == pod)
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// The Study that produced the serving model, when it names one and it exists.
async fn serving_study(
    ctx: &Context,
    namespace: &str,
    model: &ModelRef,
) -> Result<Option<Study>, Error> {
    let Some(study) = &model.study else {
        return Ok(None);
    };
    let studies: Api<Study> = Api::namespaced(ctx.client.clone(), namespace);
    studies
        .get_opt(study)
        .await
        .doing(|| format!("read study {study}"))
}

/// The serving model's validation metrics, from the Study that produced it.
fn training_metrics(study: Option<&Study>, model: &ModelRef) -> BTreeMap<String, f64> {
    study
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.best_trial.as_ref())
        .filter(|best| best.name == model.version)
        .map(|best| best.metrics.clone())
        .unwrap_or_default()
}

/// What starting a retraining study depends on.
struct RetrainingInputs<'a> {
    policy: &'a RetrainingPolicy,
    trigger: &'a Trigger,
    /// The study that produced the serving model.
    parent: &'a Study,
    ready_pods: &'a [String],
}

/// How many spent generations one reconcile steps over looking for a free name.
const MAX_SPENT_GENERATIONS: u32 = 16;

/// Starts the study that retrains the serving model's study, unless it exists already (it is
/// named after its generation, so a trigger that keeps firing starts it once). A generation
/// that is spent (failed, or its candidate rejected by the gate) does not block the next: the
/// trigger starts `<parent>-g<N+1>`. Returns the name, with what the archive held when this call
/// created it; `None` while no server is ready to summarise the archive.
async fn start_retraining(
    ctx: &Context,
    namespace: &str,
    md: &ModelDeployment,
    inputs: RetrainingInputs<'_>,
) -> Result<Option<(String, Option<ProductionSummary>)>, Error> {
    let studies: Api<Study> = Api::namespaced(ctx.client.clone(), namespace);
    let mut generation = next_generation(&inputs.parent.spec);
    let mut fresh: Option<ModelDeployment> = None;
    let name = loop {
        let name = retraining_study_name_at(inputs.parent, generation);
        let Some(existing) = studies
            .get_opt(&name)
            .await
            .doing(|| format!("read study {name}"))?
        else {
            break name;
        };
        let finished = existing
            .status
            .as_ref()
            .is_some_and(|s| matches!(s.phase, StudyPhase::Succeeded | StudyPhase::Failed));
        if fresh.is_none() && finished {
            // Judge against the ModelDeployment as it is now, not the cached copy this
            // reconcile started from, which may predate the candidate's shadow write.
            let mds: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), namespace);
            fresh = Some(
                mds.get(&md.name_any())
                    .await
                    .doing(|| format!("read modeldeployment {}", md.name_any()))?,
            );
        }
        let spent = fresh
            .as_ref()
            .is_some_and(|current| retraining_spent(&existing, current));
        let limit = next_generation(&inputs.parent.spec).saturating_add(MAX_SPENT_GENERATIONS);
        if !spent || generation >= limit {
            return Ok(Some((name, None)));
        }
        generation = generation.saturating_add(1);
    };
    let Some(pod) = inputs.ready_pods.first() else {
        return Ok(None);
    };
    let until = ctx
        .now()
        .checked_sub(std::time::Duration::from_secs(ARCHIVE_DELAY_SECONDS))
        .unwrap_or_else(|_| ctx.now());
    let path = format!(
        "/api/v1/namespaces/{namespace}/pods/{pod}:{SERVER_PORT}/proxy/v1/models/{}/production?until={until}",
        md.name_any()
    );
    let request = http::Request::get(&path)
        .body(Vec::new())
        .map_err(|e| Error::Operator {
            message: format!("failed to build the request {path}: {e}"),
        })?;
    let production: ProductionSummary = ctx.client.request(request).await.doing(|| {
        format!(
            "summarise the prediction log of modeldeployment {} (pod {pod})",
            md.name_any()
        )
    })?;
    let child = retraining_study(
        md,
        inputs.parent,
        inputs.policy,
        inputs.trigger.clone(),
        &production,
        &ctx.serving,
        generation,
    );
    studies
        .patch(
            &name,
            &PatchParams::apply(RETRAINING_MANAGER),
            &Patch::Apply(&child),
        )
        .await
        .doing(|| format!("create retraining study {name}"))?;
    Ok(Some((name, Some(production))))
}

/// The shadow gate's verdict on `shadow`, from the servers' paired statistics of exactly this
/// (serving, candidate) pair — so replicas still rolling out or an older primary add nothing.
pub fn judge_shadow(
    model: &ModelRef,
    shadow: &ModelRef,
    policy: &RetrainingPolicy,
    stats: &[ServerStats],
) -> GateDecision {
    let settings = policy
        .gate
        .as_ref()
        .map(|g| g.settings())
        .unwrap_or_default();
    let serving = &model.version;
    let outcomes = feedback::paired_from_stats(stats, serving, &shadow.version);
    // Seeded by the pair of versions: the same evidence always gives the same verdict.
    let seed = flywheel_core::study::name_seed(&format!("{serving}/{}", shadow.version));
    gate::decide(&outcomes, &settings, seed)
}

/// Writes the gate's verdict into `status`: the ShadowGate condition, and on a decision the
/// evidence and, for a promotion, the model it replaces (the rollback target).
pub fn record_gate(
    status: &mut ModelDeploymentStatus,
    md: &ModelDeployment,
    model: &ModelRef,
    shadow: &ModelRef,
    decision: &GateDecision,
    now: &Time,
) {
    let (state, reason) = match decision {
        GateDecision::Wait { .. } => ("Unknown", "Waiting"),
        GateDecision::Promote(_) => ("True", "Promoted"),
        GateDecision::Reject(_) => ("False", "Rejected"),
    };
    let message = format!("candidate {}: {}", shadow.version, decision.summary());
    set_condition(
        &mut status.conditions,
        condition(SHADOW_GATE, state, reason, message, md, now),
    );
    if let GateDecision::Promote(evidence) | GateDecision::Reject(evidence) = decision {
        status.last_gate = Some(GateRecord {
            candidate_version: shadow.version.clone(),
            serving_version: model.version.clone(),
            decision: if matches!(decision, GateDecision::Promote(_)) {
                "promote"
            } else {
                "reject"
            }
            .into(),
            evidence: evidence.clone(),
            time: now.clone(),
        });
        if matches!(decision, GateDecision::Promote(_)) {
            status.previous_model = Some(model.clone());
        }
    }
}

/// Carries out a decision in one merge patch, conditional on the version read: a promotion
/// moves the shadow into `spec.model` and clears `spec.shadow`; a rejection only clears it.
/// A concurrent edit makes it fail with a conflict, and the next reconcile judges again.
async fn act_on_gate(
    ctx: &Context,
    namespace: &str,
    md: &ModelDeployment,
    shadow: &ModelRef,
    decision: &GateDecision,
) -> Result<(), Error> {
    let name = md.name_any();
    let spec = match decision {
        GateDecision::Promote(_) => json!({"model": shadow, "shadow": null}),
        _ => json!({"shadow": null}),
    };
    let patch = json!({
        "metadata": {"resourceVersion": md.resource_version()},
        "spec": spec,
    });
    let mds: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), namespace);
    let params = PatchParams {
        field_manager: Some(GATE_MANAGER.into()),
        ..PatchParams::default()
    };
    mds.patch(&name, &params, &Patch::Merge(&patch))
        .await
        .doing(|| format!("apply the shadow gate's decision to modeldeployment {name}"))?;
    Ok(())
}

/// Records the online metric and labelled count of the serving version and whether the
/// retraining policy fired (condition `RetrainingDue`); returns the trigger when it did.
pub fn apply_retraining(
    status: &mut ModelDeploymentStatus,
    md: &ModelDeployment,
    model: &ModelRef,
    policy: &RetrainingPolicy,
    stats: &[ServerStats],
    training_metrics: BTreeMap<String, f64>,
    now: &Time,
) -> Option<Trigger> {
    let (labelled, online) = feedback::combine(stats, &model.version);
    status.labelled_predictions = Some(labelled);
    status.online_metrics = online
        .map(|o| BTreeMap::from([(o.name.to_string(), o.value)]))
        .unwrap_or_default();
    let model_age_seconds = status
        .promoted_time
        .as_ref()
        .map(|t| now.0.duration_since(t.0).as_secs().max(0) as u64);
    let trigger = retraining::evaluate(
        policy,
        &ServingState {
            online,
            new_labels: labelled,
            training_metrics,
            model_age_seconds,
        },
    );
    let due = match &trigger {
        Some(trigger) => condition(
            RETRAINING_DUE,
            "True",
            &trigger.reason,
            trigger.message.clone(),
            md,
            now,
        ),
        None => condition(
            RETRAINING_DUE,
            "False",
            "WithinPolicy",
            "no retraining trigger fired".into(),
            md,
            now,
        ),
    };
    set_condition(&mut status.conditions, due);
    trigger
}

/// The existing object, or the desired one applied when it is missing or its digest differs.
async fn ensure<K>(api: &Api<K>, mut desired: K, what: &str) -> Result<K, Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    let digest = digest_of(&desired)?;
    desired
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(APPLIED_DIGEST.into(), digest.clone());
    let current = api
        .get_opt(&name)
        .await
        .doing(|| format!("read {what} {name}"))?;
    if let Some(current) = current
        && applied_digest(current.meta()) == Some(digest.as_str())
    {
        return Ok(current);
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .doing(|| format!("apply {what} {name}"))
}

fn applied_digest(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()?
        .get(APPLIED_DIGEST)
        .map(String::as_str)
}

/// FNV-1a of the object's JSON: stable across builds and Rust versions (unlike std's hasher),
/// and serde_json writes struct fields and BTreeMaps in a fixed order.
fn digest_of<K: Serialize>(object: &K) -> Result<String, Error> {
    let bytes = serde_json::to_vec(object).map_err(|e| Error::Serialize {
        what: "desired object",
        message: e.to_string(),
    })?;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Ok(format!("{hash:016x}"))
}

/// The status a ModelDeployment's Deployment implies. The new version counts as serving once
/// the rollout is complete: every replica updated and available, the controller caught up.
pub fn serving_status(
    md: &ModelDeployment,
    model: &ModelRef,
    deployment: &Deployment,
    previous: &ModelDeploymentStatus,
    now: &Time,
) -> ModelDeploymentStatus {
    let mut status = previous.clone();
    let desired = md.spec.replicas.unwrap_or(1);
    let observed = deployment.status.clone().unwrap_or_default();
    let caught_up = observed.observed_generation >= deployment.metadata.generation;
    let updated = observed.updated_replicas.unwrap_or(0);
    let available = observed.available_replicas.unwrap_or(0);
    let ready = observed.ready_replicas.unwrap_or(0);
    let total = observed.replicas.unwrap_or(0);
    let rolled_out = caught_up && updated >= desired && available >= desired && total <= desired;

    status.ready_replicas = ready;
    status.endpoint = Some(endpoint(md));
    status.observed_generation = md.meta().generation;
    if rolled_out {
        if status.serving_version.as_deref() != Some(model.version.as_str()) {
            status.serving_version = Some(model.version.clone());
            status.promoted_time = Some(now.clone());
        }
        status.shadow_version = md.spec.shadow.as_ref().map(|s| s.version.clone());
    }

    let (ready_status, ready_reason, ready_message) = if desired == 0 {
        ("False", "ScaledToZero", "spec.replicas is 0".to_string())
    } else if ready > 0 {
        (
            "True",
            "ReplicasReady",
            format!("{ready} of {desired} replicas ready"),
        )
    } else {
        (
            "False",
            "NoReplicasReady",
            format!("0 of {desired} replicas ready"),
        )
    };
    set_condition(
        &mut status.conditions,
        condition(READY, ready_status, ready_reason, ready_message, md, now),
    );
    let progressing = if rolled_out {
        condition(
            PROGRESSING,
            "False",
            "RolloutComplete",
            format!("version {} is rolled out", model.version),
            md,
            now,
        )
    } else {
        condition(
            PROGRESSING,
            "True",
            "RollingUpdate",
            format!(
                "rolling out version {}: {updated} of {desired} replicas updated, {available} available",
                model.version
            ),
            md,
            now,
        )
    };
    set_condition(&mut status.conditions, progressing);
    status
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    md: &ModelDeployment,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: now.clone(),
        observed_generation: md.meta().generation,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use flywheel_core::api::{ModelDeploymentSpec, ModelRef};
    use flywheel_core::k8s_openapi::api::apps::v1::DeploymentStatus;
    use flywheel_core::k8s_openapi::jiff::Timestamp;

    use super::*;

    fn md(version: &str, replicas: i32) -> ModelDeployment {
        let mut md = ModelDeployment::new(
            "churn",
            ModelDeploymentSpec {
                model: Some(ModelRef {
                    uri: "file:///artifacts/ns/s/s-3".into(),
                    version: version.into(),
                    study: Some("s".into()),
                    trial: Some("s-3".into()),
                }),
                replicas: Some(replicas),
                resources: None,
                image: None,
                shadow: None,
                retraining: None,
            },
        );
        md.metadata.namespace = Some("ml".into());
        md.metadata.generation = Some(2);
        md
    }

    fn deployment(
        generation: i64,
        observed: i64,
        updated: i32,
        available: i32,
        total: i32,
    ) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                updated_replicas: Some(updated),
                available_replicas: Some(available),
                ready_replicas: Some(available),
                replicas: Some(total),
                ..DeploymentStatus::default()
            }),
            ..Deployment::default()
        }
    }

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn model(md: &ModelDeployment) -> &ModelRef {
        md.spec.model.as_ref().unwrap()
    }

    #[test]
    fn a_version_serves_once_the_rollout_completes() {
        let previous = ModelDeploymentStatus {
            serving_version: Some("s-1".into()),
            ..ModelDeploymentStatus::default()
        };
        let md = md("s-3", 2);
        // Old pods still up while the new ReplicaSet scales: the old version still serves.
        let rolling = serving_status(
            &md,
            model(&md),
            &deployment(5, 5, 1, 2, 3),
            &previous,
            &at(10),
        );
        assert_eq!(rolling.serving_version.as_deref(), Some("s-1"));
        let progressing = rolling
            .conditions
            .iter()
            .find(|c| c.type_ == PROGRESSING)
            .unwrap();
        assert_eq!(progressing.status, "True");

        // The Deployment controller has not seen the new template yet.
        let stale = serving_status(
            &md,
            model(&md),
            &deployment(6, 5, 2, 2, 2),
            &previous,
            &at(10),
        );
        assert_eq!(stale.serving_version.as_deref(), Some("s-1"));

        let done = serving_status(
            &md,
            model(&md),
            &deployment(6, 6, 2, 2, 2),
            &rolling,
            &at(20),
        );
        assert_eq!(done.serving_version.as_deref(), Some("s-3"));
        assert_eq!(done.promoted_time, Some(at(20)));
        assert_eq!(done.ready_replicas, 2);
        assert_eq!(done.endpoint.as_deref(), Some("http://churn.ml.svc:80"));
        assert_eq!(done.observed_generation, Some(2));
        let ready = done.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "ReplicasReady")
        );

        // Nothing changed: the same status, so no write.
        let again = serving_status(&md, model(&md), &deployment(6, 6, 2, 2, 2), &done, &at(30));
        assert_eq!(again, done);
    }

    #[test]
    fn digests_change_with_the_desired_object_only() {
        let a = digest_of(&md("s-3", 2)).unwrap();
        assert_eq!(a, digest_of(&md("s-3", 2)).unwrap());
        assert_ne!(a, digest_of(&md("s-4", 2)).unwrap());
        assert_ne!(a, digest_of(&md("s-3", 3)).unwrap());
    }
}
