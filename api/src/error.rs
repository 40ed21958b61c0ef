//! One error type for every handler, mapped to `application/problem+json` in one place. 5xx
//! errors are logged with their cause chain and shown without internals. Every error answer
//! carries its detail as a [`Refusal`] extension, so the usage log can say why a change was
//! refused.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_shared::problem::{Problem, UNAVAILABLE_RETRY_SECS};

use crate::control::UpstreamError;
use crate::storage::StoreError;

/// A handler's error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request or an invalid field (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing, unknown or revoked credential (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A quota that refuses outright: `maxApps` (403).
    #[error("{0}")]
    Forbidden(String),
    /// Not there, or not the caller's (404; never 403, so ids do not leak).
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with the current state: an id another tenant holds, an app being deleted (409).
    #[error("{0}")]
    Conflict(String),
    /// The rate limit or a deployment quota (429 with `Retry-After`).
    #[error("{detail}")]
    TooManyRequests {
        /// Which limit, and its value.
        detail: String,
        /// Seconds until the limit lets the request through.
        retry_after: u64,
    },
    /// Refused before it was read: too large, wrong media type (413, 415, …).
    #[error("{1}")]
    Rejected(StatusCode, String),
    /// The control plane refused or could not be reached (502/503).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The api's database failed (503).
    #[error("storage failed")]
    Storage(#[from] StoreError),
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;

/// The detail of an error answer, for the usage log.
#[derive(Debug, Clone)]
pub struct Refusal(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut retry_after = None;
        let (status, detail) = match self {
            Self::BadRequest(d) => (StatusCode::BAD_REQUEST, d),
            Self::Unauthorized(d) => (StatusCode::UNAUTHORIZED, d),
            Self::Forbidden(d) => (StatusCode::FORBIDDEN, d),
            Self::NotFound(d) => (StatusCode::NOT_FOUND, d),
            Self::Conflict(d) => (StatusCode::CONFLICT, d),
            Self::TooManyRequests {
                detail,
                retry_after: secs,
            } => {
                retry_after = Some(secs);
                (StatusCode::TOO_MANY_REQUESTS, detail)
            }
            Self::Rejected(status, d) => (status, d),
            Self::Upstream(e) => {
                tracing::warn!(error = ?anyhow::Error::from(e.clone()), "control plane call failed");
                e.answer()
            }
            Self::Storage(e) => {
                tracing::error!(error = ?anyhow::Error::from(e), "storage failed");
                retry_after = Some(UNAVAILABLE_RETRY_SECS);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the api's database failed or is unreachable; retry later".to_owned(),
                )
            }
        };
        let mut response = Problem::new(status, detail.clone()).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(Refusal(detail));
        response
    }
}
