//! Every error an HTTP handler can return, mapped to `application/problem+json` in one place
//! (a request the extractors refuse is a problem already: `berth_shared::extract`).
//! 5xx errors are logged with their cause chain and shown to the client without internals.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_shared::problem::{unavailable, Problem};

use crate::service::ServiceError;

/// An HTTP handler's error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The role header is missing or wrong (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The operation refused or failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, detail) = match self {
            Self::Unauthorized(d) => (StatusCode::UNAUTHORIZED, d),
            Self::Service(e) => service_status(e),
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return unavailable(detail);
        }
        Problem::new(status, detail).into_response()
    }
}

fn service_status(e: ServiceError) -> (StatusCode, String) {
    match e {
        ServiceError::Invalid(d) => (StatusCode::BAD_REQUEST, d),
        ServiceError::NotFound(d) => (StatusCode::NOT_FOUND, d),
        ServiceError::Conflict(d) => (StatusCode::CONFLICT, d),
        ServiceError::Unauthorized(d) => (StatusCode::UNAUTHORIZED, d),
        ServiceError::Forbidden(d) => (StatusCode::FORBIDDEN, d),
        ServiceError::Unavailable(e) => {
            tracing::error!(error = ?anyhow::Error::from(e), "storage failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the control plane's database failed or is unreachable; retry later".to_owned(),
            )
        }
        ServiceError::Corrupt(e) => {
            tracing::error!(error = ?anyhow::Error::from(e), "storage holds an unreadable row");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the control plane's database holds a row it cannot read; the operator must look at its log"
                    .to_owned(),
            )
        }
    }
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::StoreError;

    fn status(e: StoreError) -> StatusCode {
        ApiError::from(ServiceError::from(e))
            .into_response()
            .status()
    }

    #[test]
    fn a_corrupt_row_is_a_500_and_an_unreachable_database_a_503() {
        assert_eq!(
            status(StoreError::Corrupt("bad state".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let shared = StoreError::Batch(Arc::new(StoreError::Corrupt("bad".into())));
        assert_eq!(status(shared), StatusCode::INTERNAL_SERVER_ERROR);
        let down = ApiError::from(ServiceError::from(StoreError::Database(
            sqlx::Error::PoolTimedOut,
        )))
        .into_response();
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            down.headers()["retry-after"],
            "2",
            "a 503 says when to retry"
        );
        let batch = StoreError::Batch(Arc::new(StoreError::Database(sqlx::Error::PoolClosed)));
        assert_eq!(status(batch), StatusCode::SERVICE_UNAVAILABLE);
    }
}
