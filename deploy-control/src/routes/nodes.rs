//! The node registry: a new agent's join (`X-RT-Join-Token`), and with the node's own
//! credential (`X-RT-Node-Token`) its heartbeats and credential rotation (SPEC §7).

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::{Extension, Json};
use berth_shared::extract::ApiJson;
use berth_shared::openapi::{ApiRouter, Doc};
use berth_shared::wire::{HeartbeatAnswer, JoinRequest, NodeHeartbeat, NodeJoined, SchedulingView};

use crate::auth::{NodeCaller, Role};
use crate::error::ApiResult;
use crate::service::nodes;
use crate::state::AppState;

/// The routes a node calls with its own credential.
pub fn router() -> ApiRouter<AppState> {
    let other = "The credential is another node's";
    ApiRouter::secured(Role::Node.scheme())
        .route(
            Method::POST,
            "/internal/runtime-nodes/heartbeat",
            heartbeat,
            Doc::new("A runtime agent's heartbeat")
                .json::<HeartbeatAnswer>(
                    200,
                    "The node's scheduling, the containers it must remove (apps settled elsewhere) and the grant keys",
                )
                .problem(403, other),
        )
        .route(
            Method::POST,
            "/internal/runtime-nodes/rotate",
            rotate,
            Doc::new("A new credential for the node; the one presented stays good until the new one is used once")
                .json::<NodeJoined>(201, "The new credential (shown once)")
                .problem(403, other),
        )
}

/// The join route (`X-RT-Join-Token`).
pub fn join_router() -> ApiRouter<AppState> {
    ApiRouter::secured(Role::Join.scheme()).route(
        Method::POST,
        "/internal/runtime-nodes/join",
        join,
        Doc::new("A new node joins once and gets its own credential")
            .json::<NodeJoined>(201, "The node's credential (shown once, stored hashed)")
            .problem(409, "The node has joined before"),
    )
}

#[tracing::instrument(skip_all, fields(node_id = %hb.node_id))]
async fn heartbeat(
    State(state): State<AppState>,
    Extension(caller): Extension<NodeCaller>,
    ApiJson(hb): ApiJson<NodeHeartbeat>,
) -> ApiResult<Json<HeartbeatAnswer>> {
    let beat = nodes::heartbeat(&state, &caller, &hb).await?;
    let view = SchedulingView::of(&hb.node_id, beat.scheduling);
    Ok(Json(HeartbeatAnswer {
        node_id: view.node_id,
        scheduling: view.scheduling,
        schedulable: view.schedulable,
        remove: beat.remove,
        grant_keys: state.grants().public_keys().to_vec(),
    }))
}

#[tracing::instrument(skip_all, fields(node_id = %req.node_id))]
async fn join(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<JoinRequest>,
) -> ApiResult<(StatusCode, Json<NodeJoined>)> {
    Ok((StatusCode::CREATED, Json(nodes::join(&state, &req).await?)))
}

#[tracing::instrument(skip_all, fields(node_id = %caller.node_id))]
async fn rotate(
    State(state): State<AppState>,
    Extension(caller): Extension<NodeCaller>,
    ApiJson(req): ApiJson<JoinRequest>,
) -> ApiResult<(StatusCode, Json<NodeJoined>)> {
    let joined = nodes::rotate(&state, &caller.node_id, &caller.presented_hash, &req).await?;
    Ok((StatusCode::CREATED, Json(joined)))
}
