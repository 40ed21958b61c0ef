//! Open routes: liveness, metrics, the OpenAPI document.

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};

use crate::service::Api;

/// The open routes.
pub fn router() -> Router<Api> {
    Router::new()
        .route("/internal/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn metrics(State(api): State<Api>) -> Response {
    api.metrics.answer()
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
