//! The agent API (runners call it with `X-Runtime-Token`), plus health and metrics.
//! Handlers are thin: they parse, call [`Runtime`], and answer.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_shared::headers::RUNTIME_TOKEN;
use berth_shared::ids::AppId;
use berth_shared::secret::Secret;
use berth_shared::wire::agent::{
    AgentAppStatus, AgentDeployRequest, AgentDeployResponse, AgentStopResponse,
};
use berth_shared::wire::limits::MAX_BODY;
use serde::{Deserialize, Serialize};

use crate::apps::Runtime;
use crate::error::{AgentError, ApiResult};

/// Most log lines one call returns.
const MAX_TAIL: usize = 10_000;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The runtime doing the work.
    pub runtime: Arc<Runtime>,
    /// The token runners must present.
    pub token: Secret,
}

/// The whole API: `/agent/…` behind the token, `/internal/health` and `/metrics` open.
pub fn router(state: ApiState) -> Router {
    let agent = Router::new()
        .route("/agent/apps/deploy", post(deploy))
        .route("/agent/apps/{app_id}/stop", post(stop))
        .route("/agent/apps/{app_id}/status", get(status))
        .route("/agent/apps/{app_id}/logs", get(logs))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(agent)
        .route("/internal/health", get(health))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .fallback(not_found)
        .with_state(state)
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(RUNTIME_TOKEN)
        .map(HeaderValue::as_bytes);
    match given {
        Some(token) if state.token.matches(token) => next.run(request).await,
        _ => AgentError::Unauthorized.into_response(),
    }
}

/// `Json`, but a body that cannot be read answers problem+json with the reason.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = AgentError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => {
                let status = rejection.status();
                let detail = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    format!("the request body is larger than {MAX_BODY} bytes")
                } else {
                    rejection.body_text()
                };
                Err(AgentError::Rejected { status, detail })
            }
        }
    }
}

fn app_id(raw: &str) -> ApiResult<AppId> {
    AppId::parse(raw).map_err(|e| AgentError::BadRequest(e.to_string()))
}

async fn deploy(
    State(state): State<ApiState>,
    ApiJson(request): ApiJson<AgentDeployRequest>,
) -> ApiResult<Json<AgentDeployResponse>> {
    Ok(Json(state.runtime.deploy(request).await?))
}

async fn stop(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<AgentStopResponse>> {
    Ok(Json(state.runtime.stop(&app_id(&app)?).await?))
}

async fn status(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<AgentAppStatus>> {
    Ok(Json(state.runtime.status(&app_id(&app)?).await?))
}

/// `?tail=N`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    tail: Option<usize>,
}

async fn logs(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) =
        query.map_err(|e| AgentError::BadRequest(format!("bad query: {}", e.body_text())))?;
    let tail = query.tail.unwrap_or(100).min(MAX_TAIL);
    let text = state.runtime.logs(&app_id(&app)?, tail).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// `GET /internal/health`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok` when the agent can do its work, `degraded` when the Docker engine does not answer.
    pub status: String,
    /// Whether the Docker engine answers.
    pub docker: bool,
    /// The engine's version, or why it did not answer.
    pub docker_detail: String,
    /// This node.
    pub node_id: String,
}

async fn health(State(state): State<ApiState>) -> Response {
    let (docker, detail) = match state.runtime.engine.ping().await {
        Ok(version) => (true, format!("Docker {version}")),
        Err(e) => (false, format!("the Docker engine does not answer: {e}")),
    };
    let body = Health {
        status: if docker { "ok" } else { "degraded" }.into(),
        docker,
        docker_detail: detail,
        node_id: state.runtime.node_id.to_string(),
    };
    // The agent itself is alive either way; the body says whether it can deploy.
    (StatusCode::OK, Json(body)).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.runtime.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> AgentError {
    AgentError::NotFound("no such endpoint on the runtime agent".into())
}
