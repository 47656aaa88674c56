//! The crate's one error type. Every variant knows whether it is the caller's fault (bad input:
//! retrying will not help) or the trial's (internal, parity).

use flywheel_core::protocol::{FailureReason, exit_code};

#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// The dataset, the target or the parameters are unusable.
    #[error("{0}")]
    BadInput(String),
    /// The exported model disagrees with the trained one.
    #[error("parity check failed: {0}")]
    Parity(String),
    #[error("failed to {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to run the exported model in onnx runtime: {0}")]
    Runtime(String),
    #[error("{0}")]
    Internal(String),
}

impl TrainerError {
    pub fn bad_input(message: impl Into<String>) -> Self {
        TrainerError::BadInput(message.into())
    }

    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TrainerError {
        let context = context.into();
        move |source| TrainerError::Io { context, source }
    }

    pub fn reason(&self) -> FailureReason {
        match self {
            TrainerError::BadInput(_) => FailureReason::BadInput,
            TrainerError::Parity(_) => FailureReason::ParityMismatch,
            _ => FailureReason::Internal,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self.reason() {
            FailureReason::BadInput => exit_code::BAD_INPUT,
            _ => exit_code::INTERNAL,
        }
    }
}

impl From<ort::Error> for TrainerError {
    fn from(error: ort::Error) -> Self {
        TrainerError::Runtime(error.to_string())
    }
}

pub type Result<T, E = TrainerError> = std::result::Result<T, E>;
