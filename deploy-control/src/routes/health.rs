//! Liveness, metrics and the OpenAPI document, without auth and without secrets.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use berth_shared::wire::NodeState;
use serde_json::{json, Value};

use crate::queue::now_millis;
use crate::state::AppState;

/// `/internal/health`, `/metrics` and `/openapi.json`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/internal/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

async fn health() -> Json<Value> {
    Json(
        json!({ "status": "ok", "service": "berth-control", "version": env!("CARGO_PKG_VERSION") }),
    )
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let m = state.metrics();
    // Gauges come from storage; when it is down, the counters still answer.
    if let Ok(stats) = state.store().stats().await {
        for (s, n) in stats.jobs_by_state {
            m.set_jobs(s.as_str(), n);
        }
    }
    if let Ok(nodes) = state.store().list_nodes().await {
        let (now, ttl) = (now_millis(), state.settings().node_ttl.as_millis() as i64);
        let online = nodes
            .iter()
            .filter(|n| n.state_at(now, ttl) == NodeState::Online)
            .count() as i64;
        m.set_nodes("ONLINE", online);
        m.set_nodes("OFFLINE", nodes.len() as i64 - online);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}
