//! The agent API (runners call it with `X-Runtime-Token`), plus health, metrics and the
//! OpenAPI document generated from the routes (`berth_shared::openapi`).
//! Handlers are thin: they parse, call [`Runtime`], and answer.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use berth_shared::extract::{bare_errors_as_problems, ApiJson, ApiPath, ApiQuery};
use berth_shared::headers::RUNTIME_TOKEN;
use berth_shared::ids::AppId;
use berth_shared::openapi::{ApiRouter, Doc, Info};
use berth_shared::secret::Secret;
use berth_shared::wire::agent::{
    AgentAppStatus, AgentDeployRequest, AgentDeployResponse, AgentStopQuery, AgentStopResponse,
};
use berth_shared::wire::limits::MAX_BODY;
use schemars::JsonSchema;
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

/// The whole API: `/agent/…` behind the token, `/internal/health`, `/metrics` and
/// `/openapi.json` open; the document is generated from these registrations.
pub fn router(state: ApiState) -> Router {
    let gone = "The app has nothing on this node";
    let agent = ApiRouter::secured("runtimeToken")
        .route(
            Method::POST,
            "/agent/apps/deploy",
            deploy,
            Doc::new("Start (or replace) an app's container; answers once it is ready")
                .json::<AgentDeployResponse>(200, "The app runs and is routed")
                .problem(
                    409,
                    "Another deploy of the job is under way, or a newer job replaced it",
                )
                .problem(
                    422,
                    "The app did not become ready; the detail quotes its last log lines",
                ),
        )
        .route(
            Method::POST,
            "/agent/apps/{appId}/stop",
            stop,
            Doc::new("Stop and remove the app's containers; its volumes stay unless removeVolumes")
                .json::<AgentStopResponse>(200, "What was removed")
                .problem(
                    409,
                    "A volume of the app is in use by a container Berth did not make for it",
                ),
        )
        .route(
            Method::GET,
            "/agent/apps/{appId}/status",
            status,
            Doc::new("The app's container and whether it answers")
                .json::<AgentAppStatus>(200, "The app's status"),
        )
        .route(
            Method::GET,
            "/agent/apps/{appId}/logs",
            logs,
            Doc::new("The app's last log lines")
                .body(200, "text/plain", "The lines")
                .problem(404, gone),
        )
        .map(|r| r.route_layer(middleware::from_fn_with_state(state.clone(), require_token)));
    let open = ApiRouter::new()
        .route(
            Method::GET,
            "/internal/health",
            health,
            Doc::new("Liveness, and whether the Docker engine answers")
                .json::<Health>(200, "The agent answers"),
        )
        .route(
            Method::GET,
            "/metrics",
            metrics,
            Doc::new("Prometheus metrics").body(
                200,
                "application/openmetrics-text",
                "OpenMetrics text",
            ),
        );
    let info = Info {
        title: "Berth runtime agent",
        version: env!("CARGO_PKG_VERSION"),
        header_keys: vec![("runtimeToken", "X-Runtime-Token")],
    };
    agent
        .merge(open)
        .map(|r| {
            r.layer(DefaultBodyLimit::max(MAX_BODY))
                .fallback(not_found)
                .with_state(state)
        })
        .finish(&info)
        .layer(middleware::map_response(bare_errors_as_problems))
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

async fn deploy(
    State(state): State<ApiState>,
    ApiJson(request): ApiJson<AgentDeployRequest>,
) -> ApiResult<Json<AgentDeployResponse>> {
    Ok(Json(state.runtime.deploy(request).await?))
}

async fn stop(
    State(state): State<ApiState>,
    ApiPath(app): ApiPath<AppId>,
    ApiQuery(query): ApiQuery<AgentStopQuery>,
) -> ApiResult<Json<AgentStopResponse>> {
    Ok(Json(state.runtime.stop(&app, query.remove_volumes).await?))
}

async fn status(
    State(state): State<ApiState>,
    ApiPath(app): ApiPath<AppId>,
) -> ApiResult<Json<AgentAppStatus>> {
    Ok(Json(state.runtime.status(&app).await?))
}

/// `?tail=N`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    /// How many of the last lines (100; at most 10,000 are returned).
    tail: Option<usize>,
}

async fn logs(
    State(state): State<ApiState>,
    ApiPath(app): ApiPath<AppId>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> ApiResult<Response> {
    let tail = query.tail.unwrap_or(100).min(MAX_TAIL);
    let text = state.runtime.logs(&app, tail).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// `GET /internal/health`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
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
    state.runtime.metrics.answer()
}

async fn not_found() -> AgentError {
    AgentError::NotFound("no such endpoint on the runtime agent".into())
}
