//! The `batch/v1` Job that runs one Trial.

use std::collections::BTreeMap;

use flywheel_core::api::{Study, Trial};
use flywheel_core::k8s_openapi::api::batch::v1::{Job, JobSpec};
use flywheel_core::k8s_openapi::api::core::v1::{
    Container, EnvVar, PodSpec, PodTemplateSpec, ResourceRequirements, Toleration,
};
use flywheel_core::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use flywheel_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use flywheel_core::kube::{Resource, ResourceExt};
use flywheel_core::protocol::{TrialPlace, trial_arguments};

use super::labels;

/// The GPU resource name of NVIDIA's device plugin.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Operator-wide settings the Job depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct JobConfig {
    /// Image of the built-in trainer.
    pub trainer_image: String,
    /// Artifact store root: `file:///artifacts` with `artifact_claim` set, or `s3://bucket/prefix`.
    pub artifact_root: String,
    /// PersistentVolumeClaim mounted at `/artifacts` for a `file://` store.
    pub artifact_claim: Option<String>,
    /// Environment for object-store credentials (e.g. `AWS_*` from a Secret).
    pub artifact_env: Vec<EnvVar>,
    /// Seconds a finished Job (and its pod, with the logs) is kept.
    pub ttl_seconds_after_finished: i32,
}

/// Where a trial writes its artifacts.
pub fn artifact_uri(config: &JobConfig, namespace: &str, study: &str, trial: &str) -> String {
    format!(
        "{}/{namespace}/{study}/{trial}",
        config.artifact_root.trim_end_matches('/')
    )
}

/// The feature cache the trials of a namespace share: entries are content-addressed (dataset
/// digest, target, featurization version), so studies on the same data reuse each other's.
pub fn feature_cache_uri(config: &JobConfig, namespace: &str) -> String {
    format!(
        "{}/{namespace}/feature-cache",
        config.artifact_root.trim_end_matches('/')
    )
}

/// Threads the trial may use: explicit, else the whole-core part of its CPU limit, else 1.
fn thread_budget(study: &Study) -> u32 {
    if let Some(threads) = study.spec.trial.threads {
        return threads.max(1);
    }
    study
        .spec
        .trial
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|limits| limits.get("cpu"))
        .and_then(|cpu| cpu_cores(&cpu.0))
        .unwrap_or(1)
        .max(1)
}

/// Whole cores in a CPU quantity (`2`, `1500m` → 1, `500m` → None).
fn cpu_cores(quantity: &str) -> Option<u32> {
    match quantity.strip_suffix('m') {
        Some(millis) => millis
            .parse::<u32>()
            .ok()
            .map(|m| m / 1000)
            .filter(|c| *c > 0),
        None => quantity
            .parse::<f64>()
            .ok()
            .map(|c| c.floor() as u32)
            .filter(|c| *c > 0),
    }
}

/// The Job for `trial`, owned by the Trial so Kubernetes collects it with the Trial.
pub fn trial_job(study: &Study, trial: &Trial, config: &JobConfig) -> Job {
    let namespace = trial.namespace().unwrap_or_else(|| "default".into());
    let study_name = study.name_any();
    let trial_name = trial.name_any();
    let template = &study.spec.trial;
    let output = artifact_uri(config, &namespace, &study_name, &trial_name);
    let cache = feature_cache_uri(config, &namespace);
    let protocol_args = trial_arguments(
        &study_name,
        &study.spec,
        &trial_name,
        &trial.spec,
        &TrialPlace {
            dataset_uri: &study.spec.dataset.uri,
            output: &output,
            threads: thread_budget(study),
            feature_cache: Some(&cache),
        },
    );
    // The protocol also goes in as FLYWHEEL_* variables, so a custom image can read its inputs
    // without parsing flags.
    let mut env: Vec<EnvVar> = protocol_args
        .iter()
        .filter_map(|arg| arg.strip_prefix("--")?.split_once('='))
        .map(|(flag, value)| EnvVar {
            name: format!("FLYWHEEL_{}", flag.to_uppercase().replace('-', "_")),
            value: Some(value.to_string()),
            ..EnvVar::default()
        })
        .collect();
    env.extend(config.artifact_env.iter().cloned());
    env.extend(template.env.iter().cloned());

    let custom = template.image.is_some();
    let (command, args) = if custom {
        (
            (!template.command.is_empty()).then(|| template.command.clone()),
            (!template.args.is_empty()).then(|| template.args.clone()),
        )
    } else {
        (None, Some(protocol_args))
    };

    let mut resources = template.resources.clone().unwrap_or_default();
    let mut tolerations = template.tolerations.clone();
    if let Some(gpus) = template.gpus.filter(|g| *g > 0) {
        let quantity = Quantity(gpus.to_string());
        resources
            .limits
            .get_or_insert_with(BTreeMap::new)
            .insert(GPU_RESOURCE.into(), quantity);
        // GPU node pools are usually tainted; without this the pod would never schedule there.
        if !tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some(GPU_RESOURCE))
        {
            tolerations.push(Toleration {
                key: Some(GPU_RESOURCE.into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Toleration::default()
            });
        }
    }

    let (volumes, mounts) = super::pod_volumes(config.artifact_claim.as_deref(), false);

    let pod_labels = BTreeMap::from([
        (labels::NAME.to_string(), "flywheel-trial".to_string()),
        (labels::MANAGED_BY.to_string(), "flywheel".to_string()),
        (labels::STUDY.to_string(), study_name.clone()),
        (labels::TRIAL.to_string(), trial_name.clone()),
    ]);

    Job {
        metadata: ObjectMeta {
            name: Some(trial_name.clone()),
            namespace: Some(namespace),
            labels: Some(pod_labels.clone()),
            owner_references: trial.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            // The study decides about retries (a failed trial counts against maxFailedTrials);
            // Kubernetes retrying the same configuration would only hide failures.
            backoff_limit: Some(0),
            active_deadline_seconds: study
                .spec
                .budget
                .trial_timeout_seconds
                .map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
            ttl_seconds_after_finished: Some(config.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    node_selector: (!template.node_selector.is_empty())
                        .then(|| template.node_selector.clone()),
                    tolerations: (!tolerations.is_empty()).then_some(tolerations),
                    security_context: Some(super::restricted_pod_security()),
                    containers: vec![Container {
                        name: "trial".into(),
                        image: Some(
                            template
                                .image
                                .clone()
                                .unwrap_or_else(|| config.trainer_image.clone()),
                        ),
                        command,
                        args,
                        env: Some(env),
                        resources: Some(ResourceRequirements {
                            claims: None,
                            ..resources
                        }),
                        volume_mounts: Some(mounts),
                        // The result document is the termination message; if the trial dies
                        // before writing it, the log tail explains why.
                        termination_message_policy: Some("FallbackToLogsOnError".into()),
                        security_context: Some(super::restricted_container_security()),
                        ..Container::default()
                    }],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}
