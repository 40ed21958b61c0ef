//! The admin API (`X-Admin-Token`): nodes, cordon / uncordon / drain, revoke, evacuate, jobs;
//! and the nodes dashboard page, which itself asks the operator for the token.

use axum::extract::State;
use axum::http::{header, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use berth_shared::extract::{ApiPath, ApiQuery};
use berth_shared::ids::{AppId, NodeId};
use berth_shared::openapi::{ApiRouter, Doc};
use berth_shared::wire::{Items, Job, JobPage, JobTimeline, NodeView, Scheduling, SchedulingView};
use uuid::Uuid;

use crate::auth::Role;
use crate::error::ApiResult;
use crate::service::jobs::{self, ListQuery};
use crate::service::nodes;
use crate::state::AppState;
use crate::storage::Created;

/// The dashboard page (static; it calls the admin API with the token the operator types).
const DASHBOARD: &str = include_str!("../../assets/nodes-admin.html");

/// The admin API's routes (the page is served without a token; its data is not).
pub fn router() -> ApiRouter<AppState> {
    let changed = "The node's scheduling now";
    let gone = "No such node";
    ApiRouter::secured(Role::Admin.scheme())
        .route(
            Method::GET,
            "/admin/runtime-nodes/list",
            list_nodes,
            Doc::new("Every node with its state and apps")
                .json::<Items<NodeView>>(200, "The nodes"),
        )
        .route(
            Method::POST,
            "/admin/runtime-nodes/{nodeId}/cordon",
            cordon,
            Doc::new("Give the node no new apps")
                .json::<SchedulingView>(200, changed)
                .problem(404, gone),
        )
        .route(
            Method::POST,
            "/admin/runtime-nodes/{nodeId}/uncordon",
            uncordon,
            Doc::new("Let the node take new apps")
                .json::<SchedulingView>(200, changed)
                .problem(404, gone),
        )
        .route(
            Method::POST,
            "/admin/runtime-nodes/{nodeId}/drain",
            drain,
            Doc::new("Cordon the node and redeploy its apps elsewhere")
                .json::<SchedulingView>(200, "The node's scheduling and the redeploy jobs")
                .problem(404, gone),
        )
        .route(
            Method::POST,
            "/admin/runtime-nodes/{nodeId}/revoke",
            revoke,
            Doc::new("Refuse the node's credential from now on; the node goes OFFLINE at once")
                .empty(204, "Revoked")
                .problem(404, "No node with that id has joined"),
        )
        .route(
            Method::POST,
            "/admin/apps/{appId}/evacuate",
            evacuate,
            Doc::new("Redeploy an app off its lost node, volumes or not (its data stays on the lost host)")
                .json::<Job>(201, "The redeploy job (200: the one an earlier evacuate queued)")
                .problem(404, "The app is placed on no node")
                .problem(409, "The app's node is not lost, or the app has no successful deploy"),
        )
        .route(
            Method::GET,
            "/admin/jobs",
            list_jobs,
            Doc::new("List jobs (the deploy API's filters)").json::<JobPage>(200, "A page of jobs"),
        )
        .route(
            Method::GET,
            "/admin/jobs/{jobId}/timeline",
            job_timeline,
            Doc::new("A job's timeline: created, each claim with its runner, node and outcome, finished")
                .json::<JobTimeline>(200, "The job's timeline")
                .problem(404, "No such job"),
        )
}

/// The dashboard page's route, outside the token check.
pub fn page() -> ApiRouter<AppState> {
    ApiRouter::new().route(
        Method::GET,
        "/admin/nodes-admin.html",
        dashboard,
        Doc::new("The nodes dashboard (it asks for the admin token)").body(
            200,
            "text/html",
            "The page",
        ),
    )
}

async fn dashboard() -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(DASHBOARD)).into_response()
}

async fn list_nodes(State(state): State<AppState>) -> ApiResult<Json<Items<NodeView>>> {
    Ok(Json(Items {
        items: nodes::list(&state).await?,
    }))
}

async fn cordon(
    State(state): State<AppState>,
    ApiPath(node_id): ApiPath<NodeId>,
) -> ApiResult<Json<SchedulingView>> {
    set_scheduling(&state, &node_id, Scheduling::Cordoned).await
}

async fn uncordon(
    State(state): State<AppState>,
    ApiPath(node_id): ApiPath<NodeId>,
) -> ApiResult<Json<SchedulingView>> {
    set_scheduling(&state, &node_id, Scheduling::Active).await
}

async fn drain(
    State(state): State<AppState>,
    ApiPath(node_id): ApiPath<NodeId>,
) -> ApiResult<Json<SchedulingView>> {
    set_scheduling(&state, &node_id, Scheduling::Draining).await
}

#[tracing::instrument(skip_all, fields(node_id = %node_id, scheduling = scheduling.as_str()))]
async fn set_scheduling(
    state: &AppState,
    node_id: &NodeId,
    scheduling: Scheduling,
) -> ApiResult<Json<SchedulingView>> {
    let done = nodes::set_scheduling(state, node_id.as_str(), scheduling).await?;
    Ok(Json(SchedulingView {
        redeploy_job_ids: Some(done.redeploy_job_ids),
        ..SchedulingView::of(&done.node.node_id, done.node.scheduling)
    }))
}

#[tracing::instrument(skip_all, fields(node_id = %node_id))]
async fn revoke(
    State(state): State<AppState>,
    ApiPath(node_id): ApiPath<NodeId>,
) -> ApiResult<StatusCode> {
    nodes::revoke(&state, node_id.as_str()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[tracing::instrument(skip_all, fields(app_id = %app_id, job_id))]
async fn evacuate(
    State(state): State<AppState>,
    ApiPath(app_id): ApiPath<AppId>,
) -> ApiResult<Response> {
    let (status, job) = match nodes::evacuate(&state, &app_id).await? {
        Created::New(job) => (StatusCode::CREATED, job),
        Created::Existing(job) => (StatusCode::OK, job),
    };
    tracing::Span::current().record("job_id", tracing::field::display(job.job_id));
    Ok((status, Json(job.to_view())).into_response())
}

async fn list_jobs(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<JobPage>> {
    Ok(Json(jobs::list(&state, q).await?))
}

#[tracing::instrument(skip_all, fields(job_id = %job_id))]
async fn job_timeline(
    State(state): State<AppState>,
    ApiPath(job_id): ApiPath<Uuid>,
) -> ApiResult<Json<JobTimeline>> {
    Ok(Json(jobs::timeline(&state, job_id).await?))
}
