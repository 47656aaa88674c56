use std::path::PathBuf;

use flywheel_core::validate::FieldError;

/// Every failure of the `flywheel` command and the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("failed to write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path} is in use by another flywheel run (pid {pid}); stop it or pass another --dir")]
    Busy { path: PathBuf, pid: u32 },

    #[error("failed to read {path}: {message}; remove the file to start that record afresh")]
    Corrupt { path: PathBuf, message: String },

    #[error(
        "failed to start {program}: {source}; build it (cargo build --release) or pass its path"
    )]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },

    #[error("failed to find ONNX Runtime: {message}")]
    OnnxRuntime { message: String },

    #[error("failed to serve the winner: {message}")]
    Serve { message: String },

    #[error("failed to serialize {what}: {message}")]
    Serialize { what: &'static str, message: String },

    #[error("failed to {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },

    #[error("failed to run the operator: {message}")]
    Operator { message: String },

    #[error("failed to {action}: {message}")]
    Local {
        action: &'static str,
        message: String,
    },

    #[error("{path} is not a valid manifest:\n{}", format_field_errors(.errors))]
    InvalidManifest {
        path: String,
        errors: Vec<FieldError>,
    },
}

impl Error {
    /// A short, stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Read { .. } => "read",
            Error::Write { .. } => "write",
            Error::Busy { .. } => "busy",
            Error::Corrupt { .. } => "corrupt",
            Error::Spawn { .. } => "spawn",
            Error::Serve { .. } => "serve",
            Error::OnnxRuntime { .. } => "onnx_runtime",
            Error::Serialize { .. } => "serialize",
            Error::InvalidManifest { .. } => "invalid_manifest",
            Error::Kube { source, .. } => match source {
                kube::Error::Api(status) if status.code == 409 => "conflict",
                kube::Error::Api(status) if status.code == 404 => "not_found",
                kube::Error::Api(_) => "api",
                _ => "kube",
            },
            Error::Operator { .. } => "operator",
            Error::Local { .. } => "local",
        }
    }
}

fn format_field_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|error| format!("  - {error}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Attaches what was being done to a Kubernetes API error.
pub(crate) trait KubeContext<T> {
    fn doing(self, action: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> KubeContext<T> for Result<T, kube::Error> {
    fn doing(self, action: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Kube {
            action: action(),
            source,
        })
    }
}
