//! The Flywheel API: group `flywheel.dev`, version `v1alpha1`.
//!
//! These types are the custom resources users `kubectl apply`, and the very same manifests the
//! local runner reads. Doc comments become the `kubectl explain` text.

mod deployment;
mod study;
mod trial;

pub use deployment::*;
pub use study::*;
pub use trial::*;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResourceExt;

pub use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The API group of every Flywheel resource.
pub const GROUP: &str = "flywheel.dev";
/// The API version served and stored.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "flywheel.dev/v1alpha1";

/// Every Flywheel CRD, in the order `crdgen` prints them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Study::crd(), Trial::crd(), ModelDeployment::crd()]
        .into_iter()
        .map(with_known_formats)
        .collect()
}

/// schemars writes `format: uint32` / `uint64` for unsigned fields; the API server does not know
/// those formats and warns on every apply. Both become `int64` (what the API server stores
/// integers as); `uint32` keeps its range with an explicit `maximum`, `minimum` stays as written.
fn with_known_formats(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn rewrite(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                let format = map.get("format").and_then(serde_json::Value::as_str);
                let is_integer =
                    map.get("type").and_then(serde_json::Value::as_str) == Some("integer");
                if is_integer && matches!(format, Some("uint32" | "uint64")) {
                    if format == Some("uint32") && !map.contains_key("maximum") {
                        map.insert("maximum".into(), serde_json::json!(f64::from(u32::MAX)));
                    }
                    map.insert("format".into(), serde_json::json!("int64"));
                }
                map.values_mut().for_each(rewrite);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(rewrite),
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::to_value(&crd) else {
        return crd;
    };
    rewrite(&mut value);
    serde_json::from_value(value).unwrap_or(crd)
}

/// Sets a condition the Kubernetes way: `lastTransitionTime` moves only when the status flips.
pub fn set_condition(conditions: &mut Vec<Condition>, mut condition: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            if existing.status == condition.status {
                condition.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = condition;
        }
        None => conditions.push(condition),
    }
}

/// Builds a condition; `now` is passed in because the core reads no clock.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation,
        last_transition_time: now.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integer_formats(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if map.get("type").and_then(serde_json::Value::as_str) == Some("integer")
                    && let Some(format) = map.get("format").and_then(serde_json::Value::as_str)
                {
                    out.push(format.to_string());
                }
                map.values().for_each(|v| integer_formats(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| integer_formats(v, out)),
            _ => {}
        }
    }

    #[test]
    fn crds_use_only_integer_formats_the_api_server_knows() {
        let mut formats = Vec::new();
        for crd in crds() {
            integer_formats(&serde_json::to_value(&crd).unwrap(), &mut formats);
        }
        assert!(formats.iter().any(|f| f == "int64"), "{formats:?}");
        assert!(
            formats.iter().all(|f| f == "int32" || f == "int64"),
            "{formats:?}"
        );
    }

    #[test]
    fn unsigned_fields_keep_their_range_in_the_crd() {
        let crd = serde_json::to_value(Study::crd()).unwrap();
        let raw_max_trials = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
            ["spec"]["properties"]["budget"]["properties"]["maxTrials"];
        assert_eq!(
            raw_max_trials["format"], "uint32",
            "schemars output changed: {raw_max_trials}"
        );
        let crd = serde_json::to_value(&crds()[0]).unwrap();
        let max_trials = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["budget"]["properties"]["maxTrials"];
        assert_eq!(max_trials["format"], "int64");
        assert_eq!(max_trials["minimum"], 1.0);
        assert_eq!(max_trials["maximum"], f64::from(u32::MAX));
        let seed = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["algorithm"]["properties"]["seed"];
        assert_eq!(seed["format"], "int64");
        assert_eq!(seed["minimum"], 0.0);
        assert!(seed.get("maximum").is_none(), "{seed}");
    }

    #[test]
    fn condition_keeps_transition_time_while_status_is_unchanged() {
        let t0 = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap());
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(2_000).unwrap());
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            condition("Ready", false, "Starting", "", Some(1), &t0),
        );
        set_condition(
            &mut conditions,
            condition("Ready", false, "Waiting", "still", Some(2), &t1),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, t0);
        assert_eq!(conditions[0].reason, "Waiting");
        set_condition(
            &mut conditions,
            condition("Ready", true, "Up", "", Some(2), &t1),
        );
        assert_eq!(conditions[0].last_transition_time, t1);
    }
}
