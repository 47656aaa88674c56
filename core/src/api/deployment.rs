use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A served model: a Deployment of `flywheel-server` for one model version, optionally with a
/// shadow model receiving mirrored traffic. Studies with `promotion` write new versions here.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flywheel.dev",
    version = "v1alpha1",
    kind = "ModelDeployment",
    namespaced,
    shortname = "md",
    category = "flywheel",
    status = "ModelDeploymentStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.servingVersion"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentSpec {
    /// The model to serve. Leave it out to serve whatever a Study promotes here (its
    /// `promotion.deployment` names this ModelDeployment): until then no server runs and
    /// `Ready` is `False` with reason `WaitingForModel`. Promotions and the shadow gate write
    /// this field (field managers `flywheel-promotion`, `flywheel-gate`), so a manifest that
    /// omits it can be re-applied without switching the served model back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,
    /// Server replicas (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
    /// CPU and memory of each server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Server image; defaults to the one the operator was installed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A candidate served on mirrored traffic: its predictions are logged, never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ModelRef>,
    /// When production feedback should start a new study.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retraining: Option<RetrainingPolicy>,
}

/// A model version and where it came from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelRef {
    /// Folder holding `model.onnx` and `model.json` (`file://`, path or `s3://`).
    #[x_kube(validation = Rule::new("self.size() > 0").message("uri must point at a folder holding model.onnx and model.json"))]
    pub uri: String,
    /// Version label reported with every prediction (e.g. `<study>-<trial index>`).
    #[x_kube(validation = Rule::new("self.size() > 0").message("version must not be empty"))]
    pub version: String,
    /// The Study that produced the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study: Option<String>,
    /// The Trial that produced the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<String>,
}

/// Triggers that start a retraining study from production feedback; any one fires it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RetrainingPolicy {
    /// At least this many new labelled predictions since the model was promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_new_labels: Option<u64>,
    /// The online metric fell below (for error metrics: rose above) this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_threshold: Option<f64>,
    /// The online metric is worse than the training metric by more than this margin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_degradation: Option<f64>,
    /// The model is older than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_model_age_seconds: Option<u64>,
    /// Labelled predictions needed before the metric triggers judge (default 30), so a few
    /// unlucky rows do not start a study.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_samples: Option<u64>,
    /// Budget of the retraining study; default the parent study's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::api::Budget>,
    /// How the retrained model must prove itself as the shadow before it is promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<ShadowGate>,
}

/// The shadow gate: the candidate serves mirrored traffic until enough labelled rows compare it
/// with the serving model (McNemar's test for classification, a paired bootstrap for regression).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ShadowGate {
    /// Labelled rows with both predictions needed before deciding (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub samples: Option<u64>,
    /// Least improvement worth promoting: accuracy points (0.01 = one point) or RMSE units
    /// (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub margin: Option<f64>,
    /// Significance level of the one-sided test (default 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 0.5))]
    pub alpha: Option<f64>,
}

impl ShadowGate {
    pub fn settings(&self) -> crate::gate::GateSettings {
        let defaults = crate::gate::GateSettings::default();
        crate::gate::GateSettings {
            min_samples: self.samples.unwrap_or(defaults.min_samples),
            margin: self.margin.unwrap_or(defaults.margin),
            alpha: self.alpha.unwrap_or(defaults.alpha),
        }
    }
}

/// What the shadow gate decided about one candidate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateRecord {
    /// The candidate (shadow) version judged.
    pub candidate_version: String,
    /// The version it was compared with.
    pub serving_version: String,
    /// promote or reject.
    pub decision: String,
    /// The test, its statistic and p-value, and both models' metrics on the paired requests.
    #[serde(flatten)]
    pub evidence: crate::gate::Evidence,
    /// When the gate decided.
    pub time: Time,
}

/// Observed state of a ModelDeployment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// The version the ready replicas serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_version: Option<String>,
    /// The shadow version, when one is deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_version: Option<String>,
    /// Server pods that pass their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// In-cluster URL of the prediction service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Online metrics from feedback, keyed by metric name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub online_metrics: BTreeMap<String, f64>,
    /// Labelled predictions behind `onlineMetrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labelled_predictions: Option<u64>,
    /// When the serving version was promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_time: Option<Time>,
    /// The model served before the shadow gate last promoted a candidate: rolling back is
    /// setting `spec.model` to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_model: Option<ModelRef>,
    /// The retraining study the operator last started from this deployment's feedback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retraining_study: Option<String>,
    /// The shadow gate's last verdict on a candidate (its decision, test, statistic, p-value
    /// and sample size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_gate: Option<GateRecord>,
    /// Standard conditions: Ready, Progressing, Promoted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
