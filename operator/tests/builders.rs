//! The pure builders of every object the operator creates — the Trial's Job (shape, GPU
//! scheduling, custom images) and a ModelDeployment's Deployment and Service. (Their validity against the Kubernetes 1.35 schemas is checked in k8s_schema.rs.)
#![allow(clippy::unwrap_used)]

use flywheel_core::api::ModelDeployment;
use flywheel_core::api::{Study, Trial};
use flywheel_core::k8s_openapi::api::batch::v1::Job;
use flywheel_operator::k8s::job::{GPU_RESOURCE, JobConfig, trial_job};
use flywheel_operator::k8s::serving::{
    ServingConfig, VERSION_ANNOTATION, endpoint, server_deployment, server_service,
};

fn study(extra: &str) -> Study {
    let yaml = format!(
        "apiVersion: flywheel.dev/v1alpha1\nkind: Study\nmetadata: {{name: churn, namespace: ml, uid: s-1}}\nspec:\n  dataset: {{uri: s3://data/churn.parquet, target: churned}}\n  objective: {{metric: roc_auc}}\n  budget: {{maxTrials: 20, trialTimeoutSeconds: 900}}\n{extra}"
    );
    serde_saphyr::from_str(&yaml).expect("study fixture parses")
}

fn trial() -> Trial {
    serde_saphyr::from_str(
        "apiVersion: flywheel.dev/v1alpha1\nkind: Trial\nmetadata: {name: churn-3, namespace: ml, uid: t-3}\nspec:\n  study: churn\n  index: 3\n  family: gradient_boosting\n  params: {learning_rate: 0.1, n_estimators: 200}\n",
    )
    .expect("trial fixture parses")
}

fn config() -> JobConfig {
    JobConfig {
        trainer_image: "ghcr.io/flywheel-ml/trainer:0.1.0".into(),
        artifact_root: "file:///artifacts".into(),
        artifact_claim: Some("flywheel-artifacts".into()),
        artifact_env: Vec::new(),
        ttl_seconds_after_finished: 3600,
    }
}

fn model_deployment(extra: &str) -> ModelDeployment {
    serde_saphyr::from_str(&format!(
        "apiVersion: flywheel.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: churn, namespace: ml, uid: md-1}}\nspec:\n  model: {{uri: file:///artifacts/ml/churn/churn-3, version: churn-3, study: churn, trial: churn-3}}\n{extra}"
    ))
    .expect("model deployment fixture parses")
}

fn serving_config() -> ServingConfig {
    ServingConfig {
        server_image: "ghcr.io/flywheel-ml/server:0.1.0".into(),
        artifact_root: "file:///artifacts".into(),
        artifact_claim: Some("flywheel-artifacts".into()),
        artifact_env: Vec::new(),
    }
}

fn container(job: &Job) -> &flywheel_core::k8s_openapi::api::core::v1::Container {
    &job.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
}

#[test]
fn default_trial_job_runs_the_trainer_with_the_protocol() {
    let job = trial_job(&study(""), &trial(), &config());
    assert_eq!(job.metadata.name.as_deref(), Some("churn-3"));
    assert_eq!(job.metadata.namespace.as_deref(), Some("ml"));
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Trial", "churn-3", "t-3")
    );
    assert_eq!(owner.controller, Some(true));
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(spec.active_deadline_seconds, Some(900));
    assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    let c = container(&job);
    assert_eq!(
        c.image.as_deref(),
        Some("ghcr.io/flywheel-ml/trainer:0.1.0")
    );
    let args = c.args.as_ref().unwrap();
    for expected in [
        "--dataset=s3://data/churn.parquet",
        "--target=churned",
        "--metric=roc_auc",
        "--family=gradient_boosting",
        "--output=file:///artifacts/ml/churn/churn-3",
        "--trial=churn-3",
        "--threads=1",
        // Shared by the namespace's trials, on the same store as the artifacts.
        "--feature-cache=file:///artifacts/ml/feature-cache",
    ] {
        assert!(
            args.iter().any(|a| a == expected),
            "{expected} missing from {args:?}"
        );
    }
    let security = c.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        c.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError")
    );
    let mounts: Vec<&str> = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, ["/tmp", "/artifacts"]);
    assert!(pod.tolerations.is_none());
}

#[test]
fn gpu_trials_request_nvidia_gpus_and_tolerate_the_gpu_taint() {
    let study = study(
        "  trial:\n    gpus: 2\n    threads: 8\n    nodeSelector: {pool: a100}\n    resources:\n      limits: {cpu: '8', memory: 32Gi}\n",
    );
    let job = trial_job(&study, &trial(), &config());
    let c = container(&job);
    let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits[GPU_RESOURCE].0, "2");
    assert_eq!(limits["memory"].0, "32Gi");
    assert!(c.args.as_ref().unwrap().iter().any(|a| a == "--threads=8"));
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "a100");
    let toleration = &pod.tolerations.as_ref().unwrap()[0];
    assert_eq!(toleration.key.as_deref(), Some(GPU_RESOURCE));
    assert_eq!(toleration.operator.as_deref(), Some("Exists"));
}

#[test]
fn custom_images_keep_their_command_and_get_the_protocol_as_env() {
    let study = study(
        "  trial:\n    image: registry.example/my-trial:1\n    command: [python, train.py]\n    env: [{name: EXTRA, value: '1'}]\n",
    );
    let job = trial_job(&study, &trial(), &config());
    let c = container(&job);
    assert_eq!(c.image.as_deref(), Some("registry.example/my-trial:1"));
    assert_eq!(
        c.command.as_deref(),
        Some(&["python".to_string(), "train.py".to_string()][..])
    );
    assert!(c.args.is_none());
    let env = c.env.as_ref().unwrap();
    let get = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(get("FLYWHEEL_FAMILY").as_deref(), Some("gradient_boosting"));
    assert_eq!(
        get("FLYWHEEL_OUTPUT").as_deref(),
        Some("file:///artifacts/ml/churn/churn-3")
    );
    assert_eq!(get("EXTRA").as_deref(), Some("1"));
}

#[test]
fn model_deployments_become_a_probed_server_deployment_and_a_service() {
    let md = model_deployment("  replicas: 3\n  resources: {limits: {cpu: '1', memory: 512Mi}}\n");
    let deployment = server_deployment(&md, &serving_config()).unwrap();
    assert_eq!(deployment.metadata.name.as_deref(), Some("churn"));
    let owner = &deployment.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("ModelDeployment", "md-1")
    );
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    let template = &spec.template;
    assert_eq!(
        template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[VERSION_ANNOTATION],
        "churn-3"
    );
    let pod = template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    assert_eq!(
        c.args.as_ref().unwrap(),
        &[
            "--model-dir=/artifacts/ml/churn/churn-3".to_string(),
            "--model-name=churn".to_string(),
            "--listen=0.0.0.0:8080".to_string(),
            "--log-dir=/tmp/flywheel-log".to_string(),
            "--log-archive-uri=/artifacts/ml/logs/churn".to_string(),
        ]
    );
    let ready = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(ready.path.as_deref(), Some("/v2/health/ready"));
    let live = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(live.path.as_deref(), Some("/v2/health/live"));
    assert_eq!(
        c.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0,
        "512Mi"
    );
    assert_eq!(
        c.security_context
            .as_ref()
            .unwrap()
            .read_only_root_filesystem,
        Some(true)
    );

    let service = server_service(&md);
    let service_spec = service.spec.as_ref().unwrap();
    // The Service must select exactly the Deployment's pods.
    assert_eq!(
        service_spec.selector.as_ref(),
        spec.selector.match_labels.as_ref()
    );
    let pod_labels = template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
    for (key, value) in service_spec.selector.as_ref().unwrap() {
        assert_eq!(pod_labels.get(key), Some(value));
    }
    assert_eq!(service_spec.ports.as_ref().unwrap()[0].port, 80);
    assert_eq!(endpoint(&md), "http://churn.ml.svc:80");

    // A new version changes only the pod template annotation (a rolling update).
    let mut next = md.clone();
    let model = next.spec.model.as_mut().unwrap();
    model.version = "churn-9".into();
    model.uri = "file:///artifacts/ml/churn/churn-9".into();
    let rolled = server_deployment(&next, &serving_config()).unwrap();
    assert_ne!(rolled.spec.as_ref().unwrap().template, spec.template);
    assert_eq!(rolled.spec.as_ref().unwrap().selector, spec.selector);

    // Without a model there is nothing to run: no Deployment rather than a crash-looping one.
    next.spec.model = None;
    assert!(server_deployment(&next, &serving_config()).is_none());
}
