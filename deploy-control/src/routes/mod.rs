//! HTTP routes, one module per API of SPEC §3. Handlers parse and check input, call the
//! store or a domain function, and map the result; nothing else.

pub mod admin;
pub mod dashboard;
pub mod dashboard_stream;
pub mod deploy;
pub mod health;
pub mod nodes;
pub mod runner;

use axum::middleware::from_fn_with_state;
use axum::Router;

use crate::auth::{require, Role};
use crate::state::AppState;

/// Every route, each group behind its role's header.
pub fn router(state: AppState) -> Router {
    let guarded = |router: Router<AppState>, role: Role| {
        router
            .route_layer(from_fn_with_state((state.clone(), role), require))
            .with_state(state.clone())
    };
    Router::new()
        .merge(guarded(deploy::router(), Role::Deploy))
        .merge(guarded(runner::router(), Role::Runner))
        .merge(guarded(nodes::router(), Role::Node))
        .merge(guarded(admin::router(), Role::Admin))
        .merge(guarded(dashboard::router(), Role::Admin))
        .merge(health::router().with_state(state.clone()))
        .merge(admin::page().with_state(state.clone()))
        .merge(dashboard::assets().with_state(state.clone()))
}
