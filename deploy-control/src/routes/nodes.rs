//! The node registry (`X-RT-Node-Token`): runtime agents' heartbeats.

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use berth_shared::extract::ApiJson;
use berth_shared::openapi::{ApiRouter, Doc};
use berth_shared::wire::{NodeHeartbeat, SchedulingView};

use crate::auth::Role;
use crate::error::ApiResult;
use crate::service::nodes;
use crate::state::AppState;

/// The registry's routes.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::secured(Role::Node.scheme()).route(
        Method::POST,
        "/internal/runtime-nodes/heartbeat",
        heartbeat,
        Doc::new("A runtime agent's heartbeat")
            .json::<SchedulingView>(200, "The node's scheduling"),
    )
}

#[tracing::instrument(skip_all, fields(node_id = %hb.node_id))]
async fn heartbeat(
    State(state): State<AppState>,
    ApiJson(hb): ApiJson<NodeHeartbeat>,
) -> ApiResult<Json<SchedulingView>> {
    let node = nodes::heartbeat(&state, &hb).await?;
    Ok(Json(SchedulingView::of(&node.node_id, node.scheduling)))
}
