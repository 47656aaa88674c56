//! Failures of the server: [`Error`] for loading and running models, [`ApiError`] for what a
//! client is told.

use std::path::PathBuf;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Every failure of `flywheel-server` outside request validation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "failed to load ONNX Runtime from {path}: {message}; run scripts/fetch-onnxruntime.sh or \
         point ORT_DYLIB_PATH (--ort-dylib-path) at libonnxruntime.so"
    )]
    OrtLoad { path: PathBuf, message: String },

    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("failed to parse model card {path}: {source}")]
    Card {
        path: PathBuf,
        source: serde_json::Error,
    },

    /// The card and the ONNX graph disagree, or the card asks for something unsupported.
    #[error("model {model} is not servable: {message}")]
    Incompatible { model: String, message: String },

    #[error("failed to {action}: {source}")]
    Ort {
        action: &'static str,
        source: ort::Error,
    },

    /// The model loaded but could not predict one row of default values.
    #[error("model {model} failed its warm-up inference: {message}")]
    WarmUp { model: String, message: String },

    /// A shadow model that cannot be compared with the primary on the same requests.
    #[error("shadow model {shadow} cannot shadow {primary}: {message}")]
    ShadowMismatch {
        primary: String,
        shadow: String,
        message: String,
    },

    /// The model produced something the card does not describe.
    #[error("model output is malformed: {0}")]
    Output(String),

    #[error("failed to start {what}: {source}")]
    Spawn {
        what: &'static str,
        source: std::io::Error,
    },

    #[error("failed to open the prediction log at {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("failed to bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },

    #[error("failed to serve http: {0}")]
    Serve(std::io::Error),
}

impl Error {
    pub(crate) fn ort(action: &'static str) -> impl FnOnce(ort::Error) -> Error {
        move |source| Error::Ort { action, source }
    }
}

/// An error answer: `{"error": "...", "field": "..."}` with an HTTP status.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what was expected.
    pub error: String,
    /// The offending part of the request (`instances[2].sepal_length`, `inputs[0].datatype`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A failed request, turned into a JSON response.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    /// Seconds a client should wait before retrying (429, 503).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                field: None,
            },
            retry_after: None,
        }
    }

    /// A 400 about one field of the request.
    pub fn field(field: impl Into<String>, error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error).at(field)
    }

    pub fn at(mut self, field: impl Into<String>) -> ApiError {
        self.body.field = Some(field.into());
        self
    }

    pub fn not_found(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, error)
    }

    pub fn internal(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
