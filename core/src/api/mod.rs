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
