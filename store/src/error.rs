//! The crate's one error type: every message names the location and, where there is one, the fix.

use std::path::Path;

use crate::location::Location;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported scheme '{scheme}://' in {uri}: use a path, a file:// URI or an s3://bucket/key \
         URI"
    )]
    UnsupportedScheme { uri: String, scheme: String },

    #[error("invalid location {uri:?}: {reason}")]
    InvalidUri { uri: String, reason: String },

    #[error("unknown s3 option {key:?}: use object_store's AmazonS3ConfigKey names")]
    InvalidOption { key: String },

    #[error(
        "no s3 credentials to access {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (on \
         Kubernetes the operator passes them from the artifact store's Secret, \
         artifacts.s3.secretName), or run with a web identity or container role"
    )]
    MissingCredentials { uri: String },

    #[error("{uri} does not exist")]
    NotFound { uri: String },

    #[error(
        "access to {uri} was denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and that \
         they may {action} objects in that bucket ({source})"
    )]
    Denied {
        uri: String,
        action: &'static str,
        #[source]
        source: object_store::Error,
    },

    #[error("failed to {action} {uri}: {source}")]
    S3 {
        action: &'static str,
        uri: String,
        #[source]
        source: object_store::Error,
    },

    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to start the object store's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl StoreError {
    /// True when the object (or local file) is not there.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl AsRef<Path>,
        source: std::io::Error,
    ) -> StoreError {
        let path = path.as_ref().display().to_string();
        if source.kind() == std::io::ErrorKind::NotFound && matches!(action, "read" | "stat") {
            return StoreError::NotFound { uri: path };
        }
        StoreError::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn s3(
        action: &'static str,
        location: &Location,
        source: object_store::Error,
    ) -> StoreError {
        let uri = location.to_string();
        match source {
            object_store::Error::NotFound { .. } => StoreError::NotFound { uri },
            source @ (object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }) => StoreError::Denied {
                uri,
                action: if action == "write" || action == "delete" {
                    "write"
                } else {
                    "read"
                },
                source,
            },
            source => StoreError::S3 {
                action,
                uri,
                source,
            },
        }
    }
}
