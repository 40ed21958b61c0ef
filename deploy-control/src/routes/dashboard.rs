//! The operators' dashboard's own routes (`X-Admin-Token`), beside the plain admin API:
//! nodes with what is reserved on them, every app with its last run, a pending job's cancel,
//! an app's redeploy and stop, and the page's two live feeds ([`super::dashboard_stream`]);
//! and, without a token like the page itself, the page's script and style sheet. The work is
//! in [`crate::service::dashboard`].

use axum::extract::State;
use axum::http::{header, Method};
use axum::response::IntoResponse;
use axum::Json;
use berth_shared::extract::ApiPath;
use berth_shared::ids::AppId;
use berth_shared::openapi::{ApiRouter, Doc};
use berth_shared::wire::{Items, Job};
use uuid::Uuid;

use crate::auth::Role;
use crate::error::ApiResult;
use crate::service::dashboard::{self, DashboardApp, NodesSnapshot};
use crate::service::jobs;
use crate::state::AppState;

/// The page's script and style sheet (the page itself is served by [`super::admin::page`]).
const SCRIPT: &str = include_str!("../../assets/dashboard.js");
const STYLE: &str = include_str!("../../assets/dashboard.css");

/// The dashboard's admin routes, its feeds included.
pub fn router() -> ApiRouter<AppState> {
    let queued = "The job queued";
    ApiRouter::secured(Role::Admin.scheme())
        .route(
            Method::GET,
            "/admin/dashboard/nodes",
            nodes,
            Doc::new("Every node with what its apps reserve")
                .json::<NodesSnapshot>(200, "The nodes and the clock they were read at"),
        )
        .route(
            Method::GET,
            "/admin/dashboard/apps",
            apps,
            Doc::new("Every app with its last run and the job that made it")
                .json::<Items<DashboardApp>>(200, "The apps"),
        )
        .route(
            Method::POST,
            "/admin/jobs/{jobId}/cancel",
            cancel_job,
            Doc::new("Cancel a pending job")
                .json::<Job>(200, "The job, cancelled")
                .problem(404, "No such job")
                .problem(409, "The job is no longer pending"),
        )
        .route(
            Method::POST,
            "/admin/apps/{appId}/redeploy",
            redeploy,
            Doc::new("Deploy the app's last image again, as a new job")
                .json::<Job>(200, queued)
                .problem(409, "The app has no deploy with an image to run again"),
        )
        .route(
            Method::POST,
            "/admin/apps/{appId}/stop",
            stop,
            Doc::new("Stop the app")
                .json::<Job>(200, queued)
                .problem(404, "The app was never deployed"),
        )
        .merge(super::dashboard_stream::router())
}

/// The page's static files, like the page itself served without a token.
pub fn assets() -> ApiRouter<AppState> {
    ApiRouter::new()
        .route(
            Method::GET,
            "/admin/dashboard.js",
            script,
            Doc::new("The dashboard's script").body(200, "text/javascript", "The script"),
        )
        .route(
            Method::GET,
            "/admin/dashboard.css",
            style,
            Doc::new("The dashboard's style sheet").body(200, "text/css", "The style sheet"),
        )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        SCRIPT,
    )
}

async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        STYLE,
    )
}

async fn nodes(State(state): State<AppState>) -> ApiResult<Json<NodesSnapshot>> {
    Ok(Json(dashboard::nodes_snapshot(&state).await?))
}

async fn apps(State(state): State<AppState>) -> ApiResult<Json<Items<DashboardApp>>> {
    Ok(Json(Items {
        items: dashboard::apps(&state).await?,
    }))
}

#[tracing::instrument(skip_all, fields(job_id = %job_id))]
async fn cancel_job(
    State(state): State<AppState>,
    ApiPath(job_id): ApiPath<Uuid>,
) -> ApiResult<Json<Job>> {
    Ok(Json(jobs::cancel(&state, job_id).await?.to_view()))
}

#[tracing::instrument(skip_all, fields(app_id = %app_id))]
async fn redeploy(
    State(state): State<AppState>,
    ApiPath(app_id): ApiPath<AppId>,
) -> ApiResult<Json<Job>> {
    Ok(Json(dashboard::redeploy(&state, &app_id).await?.to_view()))
}

#[tracing::instrument(skip_all, fields(app_id = %app_id))]
async fn stop(
    State(state): State<AppState>,
    ApiPath(app_id): ApiPath<AppId>,
) -> ApiResult<Json<Job>> {
    Ok(Json(dashboard::stop(&state, &app_id).await?.to_view()))
}
