//! The agent API (runners call it with `X-Runtime-Grant`, the grant of their claim:
//! [`crate::grants`]), plus health, metrics and the OpenAPI document generated from the routes
//! (`berth_shared::openapi`). Handlers are thin: they parse, check the grant against the app
//! (and job) the call is about, call [`Runtime`], and answer.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use berth_shared::extract::{bare_errors_as_problems, ApiJson, ApiPath, ApiQuery};
use berth_shared::headers::RUNTIME_GRANT;
use berth_shared::ids::AppId;
use berth_shared::openapi::{ApiRouter, Doc, Info};
use berth_shared::wire::agent::{
    AgentAppStatus, AgentDeployRequest, AgentDeployResponse, AgentStopQuery, AgentStopResponse,
};
use berth_shared::wire::limits::MAX_BODY;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::apps::Runtime;
use crate::error::{AgentError, ApiResult};
use crate::grants::Grants;

/// Most log lines one call returns.
const MAX_TAIL: usize = 10_000;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The runtime doing the work.
    pub runtime: Arc<Runtime>,
    /// The grants runners must present.
    pub grants: Arc<Grants>,
}

/// The whole API: `/agent/…` behind a grant, `/internal/health`, `/metrics` and
/// `/openapi.json` open; the document is generated from these registrations.
pub fn router(state: ApiState) -> Router {
    let gone = "The app has nothing on this node";
    let denied = "The grant does not open this app on this node now (not signed by the control plane, run out, for another node, app or job, or superseded)";
    let agent = ApiRouter::secured("runtimeGrant")
        .route(
            Method::POST,
            "/agent/apps/deploy",
            deploy,
            Doc::new("Start (or replace) an app's container; answers once it is ready")
                .problem(403, denied)
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
                .problem(403, denied)
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
                .problem(403, denied)
                .json::<AgentAppStatus>(200, "The app's status"),
        )
        .route(
            Method::GET,
            "/agent/apps/{appId}/logs",
            logs,
            Doc::new("The app's last log lines")
                .problem(403, denied)
                .body(200, "text/plain", "The lines")
                .problem(404, gone),
        )
        .map(|r| r.route_layer(middleware::from_fn(require_grant)));
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
        header_keys: vec![("runtimeGrant", "X-Runtime-Grant")],
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

/// Refuses a call without a grant (`401`) and hands the grant's text to the handler, whose
/// check knows the app the call is about (`403`).
async fn require_grant(mut request: Request, next: Next) -> Response {
    let grant = request
        .headers()
        .get(RUNTIME_GRANT)
        .and_then(|v| v.to_str().ok())
        .map(|v| GrantHeader(v.trim().to_owned()));
    match grant {
        Some(grant) => {
            request.extensions_mut().insert(grant);
            next.run(request).await
        }
        None => AgentError::Unauthorized.into_response(),
    }
}

/// The `X-Runtime-Grant` header's text.
#[derive(Debug, Clone)]
struct GrantHeader(String);

async fn deploy(
    State(state): State<ApiState>,
    Extension(GrantHeader(grant)): Extension<GrantHeader>,
    ApiJson(request): ApiJson<AgentDeployRequest>,
) -> ApiResult<Json<AgentDeployResponse>> {
    state
        .grants
        .check(&grant, &request.app_id, Some(&request.job_id))?;
    Ok(Json(state.runtime.deploy(request).await?))
}

async fn stop(
    State(state): State<ApiState>,
    Extension(GrantHeader(grant)): Extension<GrantHeader>,
    ApiPath(app): ApiPath<AppId>,
    ApiQuery(query): ApiQuery<AgentStopQuery>,
) -> ApiResult<Json<AgentStopResponse>> {
    state.grants.check(&grant, app.as_str(), None)?;
    Ok(Json(state.runtime.stop(&app, query.remove_volumes).await?))
}

async fn status(
    State(state): State<ApiState>,
    Extension(GrantHeader(grant)): Extension<GrantHeader>,
    ApiPath(app): ApiPath<AppId>,
) -> ApiResult<Json<AgentAppStatus>> {
    state.grants.check(&grant, app.as_str(), None)?;
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
    Extension(GrantHeader(grant)): Extension<GrantHeader>,
    ApiPath(app): ApiPath<AppId>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> ApiResult<Response> {
    state.grants.check(&grant, app.as_str(), None)?;
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
