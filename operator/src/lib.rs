//! The Flywheel operator and command-line tool: manifest validation, CRD generation, and (in
//! later modules) the Kubernetes controllers and the local runner.
#![forbid(unsafe_code)]

pub mod controller;
pub mod crdgen;
pub mod discover;
mod error;
pub mod k8s;
pub mod local;
pub mod manifest;
mod schema_check;

pub use error::Error;
