//! Every error an HTTP handler can return, mapped to `application/problem+json` in one place.
//! 5xx errors are logged with their cause chain and shown to the client without internals.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_shared::problem::Problem;

use crate::storage::StoreError;

/// An HTTP handler's error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a field is invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// The role header is missing or wrong (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The job, node or app does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The body was rejected before it was read: too large, wrong media type, bad JSON.
    #[error("{1}")]
    Rejected(StatusCode, String),
    /// The database is unreachable or failed (503).
    #[error("storage failed")]
    Storage(#[source] StoreError),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::JobNotFound(_) | StoreError::NodeNotFound(_) => {
                Self::NotFound(e.to_string())
            }
            StoreError::Conflict(refused) => Self::Conflict(refused.0),
            StoreError::Database(_) | StoreError::Corrupt(_) | StoreError::Batch(_) => {
                Self::Storage(e)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, detail) = match self {
            Self::BadRequest(d) => (StatusCode::BAD_REQUEST, d),
            Self::Unauthorized(d) => (StatusCode::UNAUTHORIZED, d),
            Self::NotFound(d) => (StatusCode::NOT_FOUND, d),
            Self::Conflict(d) => (StatusCode::CONFLICT, d),
            Self::Rejected(status, d) => (status, d),
            Self::Storage(e) => {
                tracing::error!(error = ?anyhow::Error::from(e), "storage failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the control plane's database failed or is unreachable; retry later".to_owned(),
                )
            }
        };
        Problem::new(status, detail).into_response()
    }
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;
