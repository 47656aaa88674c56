//! Kubernetes objects the operator creates, built by pure functions from the custom resources
//! (Stackable's "build" step): the reconcilers only apply what these return.

pub mod job;
pub mod observe;
pub mod retraining;
pub mod serving;

use flywheel_core::k8s_openapi::api::core::v1::{
    Capabilities, EmptyDirVolumeSource, PersistentVolumeClaimVolumeSource, PodSecurityContext,
    SeccompProfile, SecurityContext, Volume, VolumeMount,
};

/// Where a PVC artifact store is mounted in trial and server pods.
pub const ARTIFACT_MOUNT: &str = "/artifacts";
/// Non-root user of Flywheel's images (the distroless `nonroot` user).
const RUN_AS_USER: i64 = 65532;

/// The pod side of the "restricted" Pod Security Standard.
fn restricted_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        fs_group: Some(RUN_AS_USER),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// The container side of the "restricted" Pod Security Standard, with a read-only root
/// filesystem (writable `/tmp` comes from [`pod_volumes`]).
fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

/// A scratch `/tmp` and, for a `file://` store, the artifact claim at [`ARTIFACT_MOUNT`].
fn pod_volumes(artifact_claim: Option<&str>, read_only: bool) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..VolumeMount::default()
    }];
    if let Some(claim) = artifact_claim {
        volumes.push(Volume {
            name: "artifacts".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.to_string(),
                read_only: read_only.then_some(true),
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "artifacts".into(),
            mount_path: ARTIFACT_MOUNT.into(),
            read_only: read_only.then_some(true),
            ..VolumeMount::default()
        });
    }
    (volumes, mounts)
}

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
