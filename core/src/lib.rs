//! Flywheel's domain, free of I/O: the API types, search spaces, samplers, early-stopping rules
//! and the study state machine. The operator and the local runner drive the same functions.
#![forbid(unsafe_code)]

pub mod api;
pub mod discover;
pub mod ensemble;
pub mod feedback;
pub mod gate;
pub mod infer;
pub mod search;
pub mod study;

/// Re-exported so every crate sees one version of the Kubernetes types.
pub use k8s_openapi;
pub use kube;
pub mod model_card;
pub mod protocol;
pub mod retraining;
pub mod validate;
