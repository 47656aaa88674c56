//! Kubernetes objects the operator creates, built by pure functions from the custom resources
//! (Stackable's "build" step): the reconcilers only apply what these return.

pub mod job;
pub mod serving;

/// The field manager of every server-side apply, so Flywheel owns exactly the fields it sets.
pub const FIELD_MANAGER: &str = "flywheel-operator";

/// Labels on every child object, for selection and for `kubectl get -l`.
pub mod labels {
    pub const NAME: &str = "app.kubernetes.io/name";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    pub const STUDY: &str = "flywheel.dev/study";
    pub const TRIAL: &str = "flywheel.dev/trial";
}
