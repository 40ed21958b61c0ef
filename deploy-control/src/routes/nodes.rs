//! The node registry (`X-RT-Node-Token`): runtime agents' heartbeats.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use berth_shared::ids::NodeId;
use berth_shared::wire::{is_label_part, NodeHeartbeat};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::queue::now_millis;
use crate::state::AppState;

/// Apps one heartbeat may list.
pub const MAX_REPORTED_APPS: usize = 10_000;

/// The registry's routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/internal/runtime-nodes/heartbeat", post(heartbeat))
}

#[tracing::instrument(skip_all, fields(node_id = %hb.node_id))]
async fn heartbeat(
    State(state): State<AppState>,
    ApiJson(hb): ApiJson<NodeHeartbeat>,
) -> ApiResult<Json<Value>> {
    check(&hb).map_err(ApiError::BadRequest)?;
    let node = state.store().node_heartbeat(&hb, now_millis()).await?;
    state.metrics().node_heartbeats.inc();
    // A node that came (back) online may unblock waiting jobs.
    state.wake().work_available();
    Ok(Json(json!({
        "nodeId": node.node_id,
        "scheduling": node.scheduling,
        "schedulable": node.scheduling == berth_shared::wire::Scheduling::Active,
    })))
}

fn check(hb: &NodeHeartbeat) -> Result<(), String> {
    NodeId::parse(&hb.node_id).map_err(|e| format!("nodeId: {}", e.0))?;
    if hb.name.is_empty() || hb.name.len() > 255 {
        return Err("name must be 1 to 255 characters".into());
    }
    for (field, url) in [
        ("agentBaseUrl", &hb.agent_base_url),
        ("gatewayBaseUrl", &hb.gateway_base_url),
    ] {
        let ok = (url.starts_with("http://") || url.starts_with("https://"))
            && url.len() <= 1024
            && !url.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            return Err(format!("{field} must be an http:// or https:// URL"));
        }
    }
    if hb.labels.len() > 32
        || hb
            .labels
            .iter()
            .any(|(k, v)| !is_label_part(k) || !(v.is_empty() || is_label_part(v)))
    {
        return Err("labels: at most 32, keys and values of A-Z, a-z, 0-9, '.', '_', '-', '/' (63 characters)".into());
    }
    let c = hb.capacity;
    if !c.cpus.is_finite() || c.cpus < 0.0 || c.cpus > 1_000_000.0 {
        return Err("capacity.cpus must be a number of cores between 0 and 1000000".into());
    }
    if hb.apps.len() > MAX_REPORTED_APPS {
        return Err(format!("at most {MAX_REPORTED_APPS} apps per heartbeat"));
    }
    if hb.version.len() > 64 {
        return Err("version must be at most 64 characters".into());
    }
    Ok(())
}
