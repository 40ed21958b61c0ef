//! The admin API (`X-Admin-Token`): nodes, cordon / uncordon / drain, jobs; and the nodes
//! dashboard page, which itself asks the operator for the token.

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_shared::wire::{Items, JobPage, NodeView, Scheduling};
use serde_json::{json, Value};

use crate::drain;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::jobs::{self, ListQuery};
use crate::queue::now_millis;
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
    let store = state.store();
    let (nodes, placements) = (store.list_nodes().await?, store.list_placements().await?);
    let (now, ttl) = (now_millis(), state.settings().node_ttl.as_millis() as i64);
    let items = nodes
        .iter()
        .map(|n| {
            let apps = placements
                .iter()
                .filter(|p| p.node_id == n.node_id)
                .map(|p| p.app_id.clone())
                .collect();
            n.to_view(now, ttl, apps)
        })
        .collect();
    Ok(Json(Items { items }))
}

#[tracing::instrument(skip_all, fields(node_id = %node_id, action = %action))]
async fn set_scheduling(
    State(state): State<AppState>,
    ApiPath((node_id, action)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
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
    let node = state
        .store()
        .set_scheduling(&node_id, scheduling, now_millis())
        .await?;
    let requeued = if scheduling == Scheduling::Draining {
        drain::redeploy_apps_of(&state, &node.node_id).await?
    } else {
        vec![]
    };
    tracing::info!(requeued = requeued.len(), "node scheduling changed");
    if scheduling == Scheduling::Active {
        state.wake().work_available();
    }
    Ok(Json(json!({
        "nodeId": node.node_id,
        "scheduling": node.scheduling,
        "schedulable": node.scheduling == Scheduling::Active,
        "redeployJobIds": requeued,
    })))
}

async fn list_jobs(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<JobPage>> {
    Ok(Json(jobs::list(&state, q).await?))
}
