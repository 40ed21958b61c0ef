//! Liveness and metrics, without auth and without secrets.

use axum::extract::State;
use axum::http::Method;
use axum::response::Response;
use axum::Json;
use berth_shared::openapi::{ApiRouter, Doc};
use schemars::JsonSchema;
use serde::Serialize;

use crate::state::AppState;

/// `/internal/health` and `/metrics`.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .route(
            Method::GET,
            "/internal/health",
            health,
            Doc::new("Liveness").json::<Health>(200, "The service answers"),
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
        )
}

/// What `/internal/health` answers.
#[derive(Debug, Serialize, JsonSchema)]
struct Health {
    /// Always `ok`: the process answers.
    status: &'static str,
    /// `berth-control`.
    service: &'static str,
    /// Its version.
    version: &'static str,
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        service: "berth-control",
        version: env!("CARGO_PKG_VERSION"),
    })
}

async fn metrics(State(state): State<AppState>) -> Response {
    crate::service::refresh_gauges(&state).await;
    state.metrics().answer()
}
