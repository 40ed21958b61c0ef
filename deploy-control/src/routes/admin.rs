//! The admin API (`X-Admin-Token`): nodes, cordon / uncordon / drain, jobs; and the nodes
//! dashboard page, which itself asks the operator for the token.

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_shared::wire::{Items, JobPage, NodeView, Scheduling, SchedulingView};

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::service::jobs::{self, ListQuery};
use crate::service::nodes;
use crate::state::AppState;

/// The dashboard page (static; it calls the admin API with the token the operator types).
const DASHBOARD: &str = include_str!("../../assets/nodes-admin.html");

/// The admin API's routes (the page is served without a token; its data is not).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/runtime-nodes/list", get(list_nodes))
        .route(
            "/admin/runtime-nodes/{node_id}/{action}",
            post(set_scheduling),
        )
        .route("/admin/jobs", get(list_jobs))
}

/// The dashboard page's route, outside the token check.
pub fn page() -> Router<AppState> {
    Router::new().route("/admin/nodes-admin.html", get(dashboard))
}

async fn dashboard() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(DASHBOARD))
}

async fn list_nodes(State(state): State<AppState>) -> ApiResult<Json<Items<NodeView>>> {
    Ok(Json(Items {
        items: nodes::list(&state).await?,
    }))
}

#[tracing::instrument(skip_all, fields(node_id = %node_id, action = %action))]
async fn set_scheduling(
    State(state): State<AppState>,
    ApiPath((node_id, action)): ApiPath<(String, String)>,
) -> ApiResult<Json<SchedulingView>> {
    let scheduling = match action.as_str() {
        "cordon" => Scheduling::Cordoned,
        "uncordon" => Scheduling::Active,
        "drain" => Scheduling::Draining,
        other => {
            return Err(ApiError::NotFound(format!(
                "no admin action {other:?}: use cordon, uncordon or drain"
            )))
        }
    };
    let done = nodes::set_scheduling(&state, &node_id, scheduling).await?;
    Ok(Json(SchedulingView {
        redeploy_job_ids: Some(done.redeploy_job_ids),
        ..SchedulingView::of(&done.node.node_id, done.node.scheduling)
    }))
}

async fn list_jobs(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<JobPage>> {
    Ok(Json(jobs::list(&state, q).await?))
}
