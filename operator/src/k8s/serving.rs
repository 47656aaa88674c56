//! The Deployment and Service that serve a ModelDeployment with `flywheel-server`.

use std::collections::BTreeMap;

use flywheel_core::api::{ModelDeployment, ModelRef};
use flywheel_core::k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use flywheel_core::k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, PodSpec, PodTemplateSpec, Probe, Service,
    ServicePort, ServiceSpec,
};
use flywheel_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use flywheel_core::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use flywheel_core::kube::{Resource, ResourceExt};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};

use super::labels;

/// The prediction log's folder in server pods (on the `/tmp` scratch volume).
pub const LOG_DIR: &str = "/tmp/flywheel-log";
/// The port `flywheel-server` listens on inside the pod.
pub const SERVER_PORT: i32 = 8080;
/// How often servers with a retraining policy close their prediction-log segment, so labelled
/// rows reach the archive (and a retraining study) within about this many seconds.
pub const LOG_SEGMENT_SECONDS: u64 = 60;
/// Pod template annotation carrying the model version: a new version changes the template, so
/// Kubernetes rolls the Deployment.
pub const VERSION_ANNOTATION: &str = "flywheel.dev/model-version";
/// Pod template annotation carrying the shadow model's version.
pub const SHADOW_VERSION_ANNOTATION: &str = "flywheel.dev/shadow-version";
/// API group and version of the Prometheus operator's ServiceMonitor.
pub const SERVICE_MONITOR_GROUP: &str = "monitoring.coreos.com";
pub const SERVICE_MONITOR_VERSION: &str = "v1";

/// Operator-wide settings the server objects depend on.
#[derive(Clone, Debug, PartialEq)]
pub struct ServingConfig {
    pub server_image: String,
    /// Artifact store root (`file:///artifacts` or `s3://bucket/prefix`): the servers archive
    /// their prediction logs under `<root>/<namespace>/logs/<deployment>`, where retraining
    /// finds them.
    pub artifact_root: String,
    /// The PersistentVolumeClaim of a `file://` artifact store, mounted read-only.
    pub artifact_claim: Option<String>,
    /// Object-store credentials for `s3://` models.
    pub artifact_env: Vec<EnvVar>,
}

fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.to_string(), "flywheel-server".to_string()),
        (labels::COMPONENT.to_string(), name.to_string()),
    ])
}

/// Annotations of the server pods: a new model or shadow version changes the pod template, so
/// Kubernetes rolls the Deployment.
fn version_annotations(md: &ModelDeployment, model: &ModelRef) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([(VERSION_ANNOTATION.to_string(), model.version.clone())]);
    if let Some(shadow) = &md.spec.shadow {
        annotations.insert(SHADOW_VERSION_ANNOTATION.into(), shadow.version.clone());
    }
    annotations
}

/// The in-cluster base URL of the prediction service.
pub fn endpoint(deployment: &ModelDeployment) -> String {
    format!(
        "http://{}.{}.svc:80",
        deployment.name_any(),
        deployment.namespace().unwrap_or_else(|| "default".into())
    )
}

/// A `file://` model URI as the path the PVC mount gives it inside the pod.
fn model_dir(uri: &str) -> String {
    uri.strip_prefix("file://").unwrap_or(uri).to_string()
}

fn probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        ..Probe::default()
    }
}

/// Where the servers of `md` archive their prediction log segments.
pub fn log_archive_uri(md: &ModelDeployment, config: &ServingConfig) -> String {
    format!(
        "{}/{}/logs/{}",
        config.artifact_root.trim_end_matches('/'),
        md.namespace().unwrap_or_else(|| "default".into()),
        md.name_any()
    )
}

fn server_args(md: &ModelDeployment, model: &ModelRef, config: &ServingConfig) -> Vec<String> {
    let mut args = vec![
        format!("--model-dir={}", model_dir(&model.uri)),
        format!("--model-name={}", md.name_any()),
        format!("--listen=0.0.0.0:{SERVER_PORT}"),
        // The log is written (and fsynced) to the pod's scratch volume, which survives
        // container restarts, and every closed segment is uploaded to the artifact store; a
        // graceful stop uploads the open one.
        format!("--log-dir={LOG_DIR}"),
        format!(
            "--log-archive-uri={}",
            model_dir(&log_archive_uri(md, config))
        ),
    ];
    if md.spec.retraining.is_some() {
        args.push(format!("--log-segment-seconds={LOG_SEGMENT_SECONDS}"));
    }
    if let Some(shadow) = &md.spec.shadow {
        args.push(format!("--shadow-model-dir={}", model_dir(&shadow.uri)));
    }
    args
}

/// The Deployment running `flywheel-server` on the deployment's current model; `None` while
/// `spec.model` is unset (a server without a model could only crash-loop).
pub fn server_deployment(md: &ModelDeployment, config: &ServingConfig) -> Option<Deployment> {
    let model = md.spec.model.as_ref()?;
    let name = md.name_any();
    let mut labels = selector_labels(&name);
    labels.insert(labels::MANAGED_BY.into(), "flywheel".into());
    let mut env = config.artifact_env.clone();
    env.push(EnvVar {
        name: "RUST_LOG".into(),
        value: Some("info".into()),
        ..EnvVar::default()
    });
    // Writable: the servers archive their prediction logs into the store. Models are only read.
    let (volumes, mounts) = super::pod_volumes(config.artifact_claim.as_deref(), false);
    Some(Deployment {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: md.namespace(),
            labels: Some(labels.clone()),
            owner_references: md.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(md.spec.replicas.unwrap_or(1)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(version_annotations(md, model)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(super::restricted_pod_security()),
                    containers: vec![Container {
                        name: "server".into(),
                        image: Some(
                            md.spec
                                .image
                                .clone()
                                .unwrap_or_else(|| config.server_image.clone()),
                        ),
                        args: Some(server_args(md, model, config)),
                        env: Some(env),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".into()),
                            container_port: SERVER_PORT,
                            protocol: Some("TCP".into()),
                            ..ContainerPort::default()
                        }]),
                        readiness_probe: Some(probe("/v2/health/ready", 5)),
                        liveness_probe: Some(probe("/v2/health/live", 10)),
                        resources: md.spec.resources.clone(),
                        volume_mounts: Some(mounts),
                        security_context: Some(super::restricted_container_security()),
                        ..Container::default()
                    }],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

/// The ClusterIP Service in front of the server pods (port 80, named `http` for scraping).
pub fn server_service(md: &ModelDeployment) -> Service {
    let name = md.name_any();
    let mut labels = selector_labels(&name);
    labels.insert(labels::MANAGED_BY.into(), "flywheel".into());
    Service {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: md.namespace(),
            labels: Some(labels),
            owner_references: md.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&name)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The ServiceMonitor that has a Prometheus operator scrape the server pods' `/metrics`.
pub fn server_service_monitor(md: &ModelDeployment) -> DynamicObject {
    let name = md.name_any();
    let mut labels = selector_labels(&name);
    labels.insert(labels::MANAGED_BY.into(), "flywheel".into());
    let mut monitor =
        DynamicObject::new(&name, &service_monitor_resource()).data(serde_json::json!({
            "spec": {
                "selector": {"matchLabels": selector_labels(&name)},
                "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
            }
        }));
    monitor.metadata.namespace = md.namespace();
    monitor.metadata.labels = Some(labels);
    monitor.metadata.owner_references = md.controller_owner_ref(&()).map(|r| vec![r]);
    monitor
}

/// The ApiResource of ServiceMonitors, for a dynamic `Api`.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        SERVICE_MONITOR_GROUP,
        SERVICE_MONITOR_VERSION,
        "ServiceMonitor",
    ))
}
