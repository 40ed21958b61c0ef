//! Liveness, metrics and the OpenAPI document, without auth and without secrets.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

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
    crate::service::refresh_gauges(&state).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics().render(),
    )
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}
