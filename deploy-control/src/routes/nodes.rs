//! The node registry (`X-RT-Node-Token`): runtime agents' heartbeats.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use berth_shared::wire::{NodeHeartbeat, SchedulingView};

use crate::error::ApiResult;
use crate::extract::ApiJson;
use crate::service::nodes;
use crate::state::AppState;

/// The registry's routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/internal/runtime-nodes/heartbeat", post(heartbeat))
}

#[tracing::instrument(skip_all, fields(node_id = %hb.node_id))]
async fn heartbeat(
    State(state): State<AppState>,
    ApiJson(hb): ApiJson<NodeHeartbeat>,
) -> ApiResult<Json<SchedulingView>> {
    let node = nodes::heartbeat(&state, &hb).await?;
    Ok(Json(SchedulingView::of(&node.node_id, node.scheduling)))
}
