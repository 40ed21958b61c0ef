//! HTTP routes, one module per API of SPEC §3. A handler extracts the request (with the
//! problem+json extractors of `berth_shared::extract`), calls one `service::` function and
//! maps the answer; nothing else. Every route is registered through a documenting router
//! (`berth_shared::openapi`), so `GET /openapi.json` is built from the handlers themselves.

pub mod admin;
pub mod dashboard;
pub mod dashboard_stream;
pub mod deploy;
pub mod health;
pub mod nodes;
pub mod runner;

use axum::middleware::{from_fn_with_state, map_response};
use axum::Router;
use berth_shared::extract::bare_errors_as_problems;
use berth_shared::openapi::{ApiRouter, Info};

use crate::auth::{require, Role};
use crate::state::AppState;

/// Every route, each group behind its role's header, and `GET /openapi.json`.
pub fn router(state: AppState) -> Router {
    let guarded = |router: ApiRouter<AppState>, role: Role| {
        let state = state.clone();
        router.map(|r| {
            r.route_layer(from_fn_with_state((state.clone(), role), require))
                .with_state(state)
        })
    };
    let open = |router: ApiRouter<AppState>| {
        let state = state.clone();
        router.map(|r| r.with_state(state))
    };
    ApiRouter::new()
        .merge(guarded(deploy::router(), Role::Deploy))
        .merge(guarded(runner::router(), Role::Runner))
        .merge(guarded(nodes::router(), Role::Node))
        .merge(guarded(nodes::join_router(), Role::Join))
        .merge(guarded(admin::router(), Role::Admin))
        .merge(guarded(dashboard::router(), Role::Admin))
        .merge(open(health::router()))
        .merge(open(admin::page()))
        .merge(open(dashboard::assets()))
        .finish(&info())
        .layer(map_response(bare_errors_as_problems))
}

fn info() -> Info {
    Info {
        title: "Berth control plane",
        version: env!("CARGO_PKG_VERSION"),
        header_keys: Role::ALL
            .iter()
            .map(|r| (r.scheme(), r.header_name()))
            .collect(),
    }
}
