//! The ModelDeployment controller: a Deployment of `flywheel-server`, its Service and (when the
//! Prometheus operator is installed) a ServiceMonitor; the rollout's progress as status.
//!
//! Children are server-side applied only when what Flywheel would apply changed. Each applied
//! object carries a digest of its desired form ([`APPLIED_DIGEST`]); comparing digests instead
//! of whole objects ignores the defaults the API server fills in, so a steady state makes no
//! writes, while a changed model version, image or replica count is applied at once.

use std::sync::Arc;

use std::collections::BTreeMap;

use flywheel_core::api::{ModelDeployment, ModelDeploymentStatus, RetrainingPolicy, Study};
use flywheel_core::feedback::{self, ServerStats};
use flywheel_core::k8s_openapi::api::apps::v1::Deployment;
use flywheel_core::k8s_openapi::api::core::v1::Pod;
use flywheel_core::k8s_openapi::api::core::v1::Service;
use flywheel_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use flywheel_core::retraining::{self, ServingState, Trigger};
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
use crate::k8s::serving::{
    SERVER_PORT, endpoint, server_deployment, server_service, server_service_monitor,
    service_monitor_resource,
};

/// Annotation holding the digest of the desired object last applied.
pub const APPLIED_DIGEST: &str = "flywheel.dev/applied-digest";
pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
/// A retraining trigger of `spec.retraining` fired (reason: the trigger).
pub const RETRAINING_DUE: &str = "RetrainingDue";

pub async fn reconcile(md: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = md.namespace().ok_or_else(|| Error::Operator {
        message: format!("modeldeployment {} has no namespace", md.name_any()),
    })?;
    let name = md.name_any();
    if md.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }

    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let deployment = ensure(
        &deployments,
        server_deployment(&md, &ctx.serving),
        "deployment",
    )
    .await?;
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    ensure(&services, server_service(&md), "service").await?;
    if ctx.service_monitors {
        let monitors: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &namespace, &service_monitor_resource());
        ensure(&monitors, server_service_monitor(&md), "servicemonitor").await?;
    }

    let previous = md.status.clone().unwrap_or_default();
    let now = Time(ctx.now());
    let mut status = serving_status(&md, &deployment, &previous, &now);
    let mut due = None;
    if let Some(policy) = &md.spec.retraining {
        let stats = server_stats(&ctx, &namespace, &md).await?;
        let training = training_metrics(&ctx, &namespace, &md).await?;
        due = apply_retraining(&mut status, &md, policy, &stats, training, &now);
    }
    if status != previous {
        let body = json!({
            "apiVersion": ModelDeployment::api_version(&()),
            "kind": ModelDeployment::kind(&()),
            "status": status,
        });
        let mds: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &namespace);
        mds.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .doing(|| format!("write the status of modeldeployment {name}"))?;
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
        return Ok(Action::requeue(STATS_REQUEUE));
    }
    // Deployment changes (pods becoming ready) wake the controller through `owns`.
    Ok(Action::await_change())
}

/// How often the servers' online stats are read for a ModelDeployment with a retraining policy.
pub const STATS_REQUEUE: std::time::Duration = std::time::Duration::from_secs(60);

fn condition_holds(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// `/v1/models/{name}/stats` of every ready server pod, through the API server's pod proxy (each
/// replica counts its own feedback, so all of them are read). A pod that does not answer is
/// skipped: the next poll reads it again.
async fn server_stats(
    ctx: &Context,
    namespace: &str,
    md: &ModelDeployment,
) -> Result<Vec<ServerStats>, Error> {
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
    let mut stats = Vec::new();
    for pod in list.items.iter().filter(|p| pod_ready(p)) {
        let path = format!(
            "/api/v1/namespaces/{namespace}/pods/{}:{SERVER_PORT}/proxy/v1/models/{name}/stats",
            pod.name_any()
        );
        let Ok(request) = http::Request::get(&path).body(Vec::new()) else {
            continue;
        };
        match ctx.client.request::<ServerStats>(request).await {
            Ok(answer) => stats.push(answer),
            Err(error) => {
                tracing::debug!(pod = %pod.name_any(), %error, "failed to read server stats")
            }
        }
    }
    Ok(stats)
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

/// The serving model's validation metrics, from the Study that produced it.
async fn training_metrics(
    ctx: &Context,
    namespace: &str,
    md: &ModelDeployment,
) -> Result<BTreeMap<String, f64>, Error> {
    let Some(study) = &md.spec.model.study else {
        return Ok(BTreeMap::new());
    };
    let studies: Api<Study> = Api::namespaced(ctx.client.clone(), namespace);
    let found = studies
        .get_opt(study)
        .await
        .doing(|| format!("read study {study}"))?;
    Ok(found
        .and_then(|s| s.status)
        .and_then(|s| s.best_trial)
        .filter(|best| best.name == md.spec.model.version)
        .map(|best| best.metrics)
        .unwrap_or_default())
}

/// Records the online metric and labelled count of the serving version and whether the
/// retraining policy fired (condition `RetrainingDue`); returns the trigger when it did.
pub fn apply_retraining(
    status: &mut ModelDeploymentStatus,
    md: &ModelDeployment,
    policy: &RetrainingPolicy,
    stats: &[ServerStats],
    training_metrics: BTreeMap<String, f64>,
    now: &Time,
) -> Option<Trigger> {
    let (labelled, online) = feedback::combine(stats, &md.spec.model.version);
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
        if status.serving_version.as_deref() != Some(md.spec.model.version.as_str()) {
            status.serving_version = Some(md.spec.model.version.clone());
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
            format!("version {} is rolled out", md.spec.model.version),
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
                md.spec.model.version
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
                model: ModelRef {
                    uri: "file:///artifacts/ns/s/s-3".into(),
                    version: version.into(),
                    study: Some("s".into()),
                    trial: Some("s-3".into()),
                },
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

    #[test]
    fn a_version_serves_once_the_rollout_completes() {
        let previous = ModelDeploymentStatus {
            serving_version: Some("s-1".into()),
            ..ModelDeploymentStatus::default()
        };
        let md = md("s-3", 2);
        // Old pods still up while the new ReplicaSet scales: the old version still serves.
        let rolling = serving_status(&md, &deployment(5, 5, 1, 2, 3), &previous, &at(10));
        assert_eq!(rolling.serving_version.as_deref(), Some("s-1"));
        let progressing = rolling
            .conditions
            .iter()
            .find(|c| c.type_ == PROGRESSING)
            .unwrap();
        assert_eq!(progressing.status, "True");

        // The Deployment controller has not seen the new template yet.
        let stale = serving_status(&md, &deployment(6, 5, 2, 2, 2), &previous, &at(10));
        assert_eq!(stale.serving_version.as_deref(), Some("s-1"));

        let done = serving_status(&md, &deployment(6, 6, 2, 2, 2), &rolling, &at(20));
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
        let again = serving_status(&md, &deployment(6, 6, 2, 2, 2), &done, &at(30));
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
