//! Every object the builders produce, for both artifact stores (a `file://` claim and an `s3://`
//! bucket with credentials from a Secret), is valid against the Kubernetes 1.35 OpenAPI schemas
//! with unknown fields rejected (kubernetes-validate --strict from the test venv) — the same check
//! scripts/check-chart.sh runs on the Helm chart. A deliberately broken object must fail it, so the
//! check cannot pass by validating nothing.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use flywheel_core::api::{ModelDeployment, Study, Trial, TrialSpec};
use flywheel_core::k8s_openapi::api::core::v1::EnvVar;
use flywheel_core::search::space::{Family, ParamValue};
use flywheel_operator::controller::OperatorConfig;
use flywheel_operator::k8s::job::{JobConfig, trial_job};
use flywheel_operator::k8s::serving::{ServingConfig, server_deployment, server_service};
use flywheel_operator::manifest::parse_study;
use serde_json::{Value, json};

const KUBERNETES_VERSION: &str = "1.35.0";
const NAMESPACE: &str = "ml";
const CLAIM: &str = "flywheel-artifacts";
const SECRET: &str = "flywheel-s3";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the operator crate lives inside the repository")
        .to_path_buf()
}

fn validator() -> PathBuf {
    let path = repo_root().join(".venv/bin/kubernetes-validate");
    assert!(
        path.exists(),
        "{} is missing; run scripts/setup-python.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The quickstart Study with `trial` as its trial template, read through the same checks as
/// `flywheel validate` (CRD schema, CEL, semantic rules), then given a namespace and uid as the
/// API server would.
fn study(trial: Value) -> Study {
    let text = std::fs::read_to_string(repo_root().join("examples/quickstart/study.yaml")).unwrap();
    let mut manifest: Value = serde_saphyr::from_str(&text).unwrap();
    if !trial.is_null() {
        manifest["spec"]["trial"] = trial;
    }
    let mut study = parse_study(&manifest.to_string())
        .unwrap_or_else(|errors| panic!("the study fixture is invalid: {errors:?}"));
    study.metadata.namespace = Some(NAMESPACE.into());
    study.metadata.uid = Some("0b7c5a3e-study".into());
    study
}

/// Trial 3 of `study`, with a uid so the Job gets an owner reference.
fn trial(study: &Study) -> Trial {
    let name = format!("{}-3", study.metadata.name.as_deref().unwrap());
    let mut trial = Trial::new(
        &name,
        TrialSpec {
            study: study.metadata.name.clone().unwrap(),
            index: 3,
            family: Family::RandomForest,
            params: [("n_estimators".to_string(), ParamValue::Int(60))].into(),
            budget: None,
            origin: None,
        },
    );
    trial.metadata.namespace = Some(NAMESPACE.into());
    trial.metadata.uid = Some("5d1e9c2a-trial".into());
    trial
}

fn model_deployment(extra: Value) -> ModelDeployment {
    let mut manifest = json!({
        "apiVersion": "flywheel.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "penguins", "namespace": NAMESPACE, "uid": "9f3b1d7e-md"},
        "spec": {"model": {
            "uri": "file:///artifacts/ml/penguins-quickstart/penguins-quickstart-3",
            "version": "penguins-quickstart-3",
            "study": "penguins-quickstart",
            "trial": "penguins-quickstart-3",
        }},
    });
    if let Value::Object(fields) = extra {
        for (key, value) in fields {
            manifest["spec"][key] = value;
        }
    }
    serde_json::from_value(manifest).unwrap()
}

/// What the operator passes to pods for an `s3://` store: the Secret's keys by reference.
fn secret_env() -> Vec<EnvVar> {
    OperatorConfig {
        namespace: None,
        trainer_image: String::new(),
        server_image: String::new(),
        artifact_root: "s3://flywheel-models/prod".into(),
        artifact_claim: None,
        artifact_secret: Some(SECRET.into()),
        trial_ttl_seconds: 0,
        identity: String::new(),
    }
    .artifact_env()
}

fn file_store() -> (JobConfig, ServingConfig) {
    (
        JobConfig {
            trainer_image: "ghcr.io/flywheel-ml/flywheel-trainer:0.1.0".into(),
            artifact_root: "file:///artifacts".into(),
            artifact_claim: Some(CLAIM.into()),
            artifact_env: Vec::new(),
            ttl_seconds_after_finished: 86_400,
        },
        ServingConfig {
            server_image: "ghcr.io/flywheel-ml/flywheel-server:0.1.0".into(),
            artifact_root: "file:///artifacts".into(),
            artifact_claim: Some(CLAIM.into()),
            artifact_env: Vec::new(),
        },
    )
}

fn s3_store() -> (JobConfig, ServingConfig) {
    (
        JobConfig {
            trainer_image: "ghcr.io/flywheel-ml/flywheel-trainer:0.1.0".into(),
            artifact_root: "s3://flywheel-models/prod".into(),
            artifact_claim: None,
            artifact_env: secret_env(),
            ttl_seconds_after_finished: 3_600,
        },
        ServingConfig {
            server_image: "ghcr.io/flywheel-ml/flywheel-server:0.1.0".into(),
            artifact_root: "s3://flywheel-models/prod".into(),
            artifact_claim: None,
            artifact_env: secret_env(),
        },
    )
}

/// Every object the builders produce, by file name.
fn built_objects() -> Vec<(String, Value)> {
    let cpu = study(Value::Null);
    let gpu = study(json!({
        "gpus": 2,
        "threads": 8,
        "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"cpu": "8", "memory": "32Gi"}},
    }));
    let custom = study(json!({
        "image": "registry.example.com/flywheel-custom-trial:0.1",
        "command": ["python", "/trial/train.py"],
        "args": ["--verbose"],
        "env": [{"name": "EXTRA_FEATURES", "value": "1"}],
        "resources": {"limits": {"cpu": "1500m", "memory": "2Gi"}},
    }));
    let served = model_deployment(json!({
        "replicas": 2,
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
    }));
    let shadowed = model_deployment(json!({
        "image": "registry.example.com/flywheel-server:dev",
        "shadow": {"uri": "s3://flywheel-models/prod/ml/penguins-quickstart/penguins-quickstart-7", "version": "penguins-quickstart-7"},
    }));

    let mut objects = Vec::new();
    for (store, (jobs, serving)) in [("file", file_store()), ("s3", s3_store())] {
        for (name, study) in [("cpu", &cpu), ("gpu", &gpu), ("custom", &custom)] {
            let job = trial_job(study, &trial(study), &jobs);
            objects.push((
                format!("job-{name}-{store}"),
                serde_json::to_value(job).unwrap(),
            ));
        }
        for (name, md) in [("served", &served), ("shadowed", &shadowed)] {
            objects.push((
                format!("deployment-{name}-{store}"),
                serde_json::to_value(server_deployment(md, &serving).unwrap()).unwrap(),
            ));
        }
        objects.push((
            format!("service-{store}"),
            serde_json::to_value(server_service(&served)).unwrap(),
        ));
    }
    objects
}

struct Report {
    success: bool,
    text: String,
}

/// Writes `objects` as YAML files (JSON is YAML) and runs kubernetes-validate on all of them.
fn validate(label: &str, objects: &[(String, Value)]) -> Report {
    let dir = std::env::temp_dir().join(format!(
        "flywheel-k8s-schema-{label}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (name, object) in objects {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, serde_json::to_string_pretty(object).unwrap()).unwrap();
        files.push(path);
    }
    let output = Command::new(validator())
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(&files)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    Report {
        success: output.status.success(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

#[test]
fn every_built_object_is_valid_for_kubernetes_1_35() {
    let objects = built_objects();
    assert_eq!(objects.len(), 12);
    for (name, object) in &objects {
        // k8s-openapi writes apiVersion and kind itself; the validator picks the schema by them.
        let kind = (object["apiVersion"].as_str(), object["kind"].as_str());
        let expected = match name.split('-').next() {
            Some("job") => (Some("batch/v1"), Some("Job")),
            Some("deployment") => (Some("apps/v1"), Some("Deployment")),
            _ => (Some("v1"), Some("Service")),
        };
        assert_eq!(kind, expected, "{name}");
        assert_eq!(object["metadata"]["namespace"], NAMESPACE, "{name}");
        assert!(
            object["metadata"]["ownerReferences"][0]["uid"].is_string(),
            "{name} has no owner reference"
        );
    }
    let report = validate("valid", &objects);
    assert!(report.success, "{}", report.text);
    assert_eq!(
        report.text.matches("passed for resource").count(),
        objects.len(),
        "{}",
        report.text
    );
    // A schema the validator lacks is only a warning; none may be missing here.
    assert!(
        !report.text.contains("Couldn't find schema"),
        "{}",
        report.text
    );
}

#[test]
fn the_s3_store_reaches_pods_through_the_secret_and_the_file_store_through_the_claim() {
    let objects = built_objects();
    let pod_spec = |name: &str| {
        let object = &objects.iter().find(|(n, _)| n == name).unwrap().1;
        object["spec"]["template"]["spec"].clone()
    };
    for name in ["job-cpu-s3", "job-custom-s3", "deployment-served-s3"] {
        let pod = pod_spec(name);
        let env = pod["containers"][0]["env"].as_array().unwrap();
        let secret_refs: Vec<&str> = env
            .iter()
            .filter(|e| e["valueFrom"]["secretKeyRef"]["name"] == SECRET)
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            secret_refs,
            [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_REGION",
                "AWS_ENDPOINT_URL"
            ],
            "{name}"
        );
        let claims = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v.get("persistentVolumeClaim").is_some())
            .count();
        assert_eq!(claims, 0, "{name} mounts a claim with an s3:// store");
    }
    for name in ["job-cpu-file", "deployment-served-file"] {
        let pod = pod_spec(name);
        let claim = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|v| v["persistentVolumeClaim"]["claimName"].as_str());
        assert_eq!(claim, Some(CLAIM), "{name}");
    }
    let gpu = pod_spec("job-gpu-file");
    assert_eq!(
        gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
        "2"
    );
    assert_eq!(
        gpu["nodeSelector"]["cloud.google.com/gke-accelerator"],
        "nvidia-l4"
    );
}

#[test]
fn a_broken_object_fails_validation() {
    let objects = built_objects();
    let (_, job) = objects.iter().find(|(n, _)| n == "job-cpu-file").unwrap();

    let mut unknown_field = job.clone();
    unknown_field["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] =
        json!("Always");
    let mut wrong_type = job.clone();
    wrong_type["spec"]["backoffLimit"] = json!("none");

    for (label, broken, needle) in [
        ("unknown-field", unknown_field, "imagePullPolicyy"),
        ("wrong-type", wrong_type, "backoffLimit"),
    ] {
        let report = validate(label, &[(format!("job-{label}"), broken)]);
        assert!(
            !report.success,
            "kubernetes-validate accepted a Job with {label}:\n{}",
            report.text
        );
        assert!(
            report.text.contains("did not validate") && report.text.contains(needle),
            "{label}: {}",
            report.text
        );
    }
}
