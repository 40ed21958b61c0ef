//! One error type for the agent API, mapped to `application/problem+json` in one place.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_shared::problem::Problem;

/// Everything an agent API call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request is malformed or names something invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// The body could not be read as the expected JSON; carries the extractor's own status
    /// (400, 413, 415 or 422).
    #[error("{detail}")]
    Rejected {
        /// The status the rejection calls for.
        status: StatusCode,
        /// What was wrong.
        detail: String,
    },
    /// The app has nothing on this node to act on (404).
    #[error("{0}")]
    NotFound(String),
    /// The `X-Runtime-Grant` header is missing (401).
    #[error("missing X-Runtime-Grant header: send the grant of the job's claim")]
    Unauthorized,
    /// The grant does not open this call: not signed by this node's control plane, run out,
    /// for another node, app or job, or of a superseded attempt (403).
    #[error("{0}")]
    Forbidden(String),
    /// The app could not be made ready: it crashed, never became healthy, or its image is
    /// unavailable. The detail carries the container's last log lines (422).
    #[error("{0}")]
    DeployFailed(String),
    /// The request conflicts with work already under way, e.g. a job id that is deploying
    /// another app (409).
    #[error("{0}")]
    Conflict(String),
    /// A deploy of a job this node already deployed for the app and another job's container has
    /// replaced since: a stale request (a retry of a runner that lost its lease). Nothing is
    /// changed (409).
    #[error("job {job_id} of app {app_id} was already deployed on this node and job {current} has replaced it since; this request is stale and changed nothing")]
    Superseded {
        /// The job asked for.
        job_id: String,
        /// Its app.
        app_id: String,
        /// The job whose container the app's route carries now.
        current: String,
    },
    /// The Docker engine refused or did not answer (502); the detail names the engine's message.
    #[error("the Docker engine failed: {0}")]
    Docker(#[from] bollard::errors::Error),
    /// Anything else; logged with its cause chain, hidden from the client (500).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
    /// The outcome of a deploy that several requests for the same job waited on; answers as
    /// the error it wraps.
    #[error(transparent)]
    Shared(Arc<AgentError>),
}

impl AgentError {
    /// The HTTP status this error answers with.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Rejected { status, .. } => *status,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) | Self::Superseded { .. } => StatusCode::CONFLICT,
            Self::DeployFailed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Docker(e) if docker_unreachable(e) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Docker(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Shared(inner) => inner.status_code(),
        }
    }
}

/// Whether the engine could not be reached at all (as opposed to refusing a request).
pub fn docker_unreachable(error: &bollard::errors::Error) -> bool {
    !matches!(
        error,
        bollard::errors::Error::DockerResponseServerError { .. }
            | bollard::errors::Error::JsonDataError { .. }
            | bollard::errors::Error::JsonSerdeError { .. }
    )
}

impl AgentError {
    /// What the client is told; internal causes are logged, not shown.
    fn detail(&self) -> String {
        match self {
            Self::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                "internal error; the agent's log has the cause".to_owned()
            }
            Self::Docker(e) => {
                tracing::error!(error = %e, "docker error");
                match e {
                    bollard::errors::Error::DockerResponseServerError { message, .. } => {
                        format!("the Docker engine refused: {message}")
                    }
                    _ => "the Docker engine did not answer".to_owned(),
                }
            }
            Self::Shared(inner) => inner.detail(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        Problem::new(self.status_code(), self.detail()).into_response()
    }
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, AgentError>;
