use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::search::space::{Family, Params};

/// One candidate model of a Study: a family and its hyper-parameters, trained by one workload.
/// Created by the Study controller with the name `<study>-<index>`, owned by its Study.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "flywheel.dev",
    version = "v1alpha1",
    kind = "Trial",
    namespaced,
    shortname = "tr",
    category = "flywheel",
    status = "TrialStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Family","type":"string","jsonPath":".spec.family"}"#,
    printcolumn = r#"{"name":"Objective","type":"number","jsonPath":".status.objective"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TrialSpec {
    /// The Study this trial belongs to.
    pub study: String,
    /// Position in the study, from 0; never reused.
    #[schemars(range(min = 0))]
    pub index: u32,
    /// The model family.
    pub family: Family,
    /// Hyper-parameter values.
    #[serde(default)]
    pub params: Params,
    /// Fidelity: the most training resource (trees, rounds, epochs) this trial may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub budget: Option<u64>,
    /// Where the configuration came from: sampler, warm_start or configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<TrialOrigin>,
}

/// Where a trial's configuration came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrialOrigin {
    /// Suggested by the study's algorithm.
    Sampler,
    /// One of `warmStart.configurations`.
    Configuration,
    /// A best trial of an earlier study, re-run.
    WarmStart,
}

/// Trial condition type telling whether the trial's pod could be placed on a node; `False`
/// with reason [`UNSCHEDULABLE`] carries the scheduler's message.
pub const SCHEDULED: &str = "Scheduled";
/// The scheduler's reason for a pod it cannot place; also the reason of a trial (and a study)
/// that ended because its pods were never placed.
pub const UNSCHEDULABLE: &str = "Unschedulable";

/// Observed state of a Trial.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrialStatus {
    /// Pending, Running, Succeeded, Failed or Pruned.
    #[serde(default)]
    pub phase: TrialPhase,
    /// Intermediate metrics, one per reported step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<Report>,
    /// Final metrics on the validation split.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Metrics of the exported model on the final holdout: rows kept out of selection, set
    /// when the trial was selected by cross-validation on the other rows. Compare with
    /// `metrics` to see how optimistic selection was.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub holdout_metrics: BTreeMap<String, f64>,
    /// The study objective's value, copied out of `metrics` for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<f64>,
    /// Where the exported model (model.onnx, model.json) is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_uri: Option<String>,
    /// Single-row latency of the exported model under ONNX Runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// Size of the exported ONNX file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_bytes: Option<u64>,
    /// Machine-readable cause of the last transition (e.g. BadInput, Pruned, Timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Standard conditions (e.g. Scheduled with the scheduler's reason when the pod cannot be placed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When the workload started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the trial reached a final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TrialPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Pruned,
}

impl TrialPhase {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TrialPhase::Succeeded | TrialPhase::Failed | TrialPhase::Pruned
        )
    }
}

/// An intermediate report: metrics after `step` units of training resource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Units of training resource so far (trees, boosting rounds, epochs).
    pub step: u64,
    /// Validation metrics at this step, keyed by metric name.
    pub metrics: BTreeMap<String, f64>,
}

/// Latency percentiles in microseconds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    /// Median latency.
    pub p50_micros: f64,
    /// 99th-percentile latency.
    pub p99_micros: f64,
}
