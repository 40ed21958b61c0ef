//! What the operators' dashboard (`/admin/nodes-admin.html`) reads and does beyond the plain
//! admin API: nodes with what is reserved on them, every app with its last run, a pending
//! job's cancel, an app's redeploy and stop; and the page's script and style sheet. Its live
//! streams are in [`super::dashboard_stream`].

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_shared::ids::AppId;
use berth_shared::wire::{AppRun, CreateJobRequest, Items, Job, JobKind, NodeView, ValidJob};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::queue::{now_millis, JobRecord};
use crate::service::nodes::redeploy_of;
use crate::service::ServiceError;
use crate::state::AppState;
use crate::storage::StoreError;
use crate::storage::{Created, JobFilter, NewJob};
use berth_shared::extract::ApiPath;

/// The page's script and style sheet (the page itself is served by [`super::admin::page`]).
const SCRIPT: &str = include_str!("../../assets/dashboard.js");
const STYLE: &str = include_str!("../../assets/dashboard.css");

/// Jobs read to find the apps that have no placement (stopped, failed, never placed).
const APP_SCAN: u32 = 500;

/// The dashboard's admin routes (`X-Admin-Token`), streams included.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/dashboard/nodes", get(nodes))
        .route("/admin/dashboard/apps", get(apps))
        .route("/admin/jobs/{job_id}/cancel", post(cancel_job))
        .route("/admin/apps/{app_id}/redeploy", post(redeploy))
        .route("/admin/apps/{app_id}/stop", post(stop))
        .merge(super::dashboard_stream::router())
}

/// The page's static files, like the page itself served without a token.
pub fn assets() -> Router<AppState> {
    Router::new()
        .route("/admin/dashboard.js", get(script))
        .route("/admin/dashboard.css", get(style))
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

/// The nodes as the dashboard shows them, with the clock and TTL their heartbeat ages are
/// judged by (the page ticks the ages on from `now` between snapshots).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodesSnapshot {
    /// The control plane's clock when the snapshot was taken, ms since the epoch.
    pub now: i64,
    /// A node whose last heartbeat is older than this is `OFFLINE`, ms.
    pub ttl_ms: i64,
    /// Every node, by id.
    pub items: Vec<DashboardNode>,
}

/// One node with what its placements reserve.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DashboardNode {
    /// The node as `GET /admin/runtime-nodes/list` shows it.
    #[serde(flatten)]
    pub node: NodeView,
    /// Memory reserved by the apps placed on it, MiB.
    pub reserved_memory_mb: i64,
    /// CPU reserved by the apps placed on it, cores.
    pub reserved_cpus: f64,
}

/// Reads every node and what is placed on it.
pub async fn nodes_snapshot(state: &AppState) -> ApiResult<NodesSnapshot> {
    let store = state.store();
    let (nodes, placements) = (store.list_nodes().await?, store.list_placements().await?);
    let (now, ttl_ms) = (now_millis(), state.settings().node_ttl.as_millis() as i64);
    let mut apps_by_node: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for p in &placements {
        apps_by_node
            .entry(p.node_id.as_str())
            .or_default()
            .push(p.app_id.clone());
    }
    let items = nodes
        .iter()
        .map(|n| DashboardNode {
            node: n.to_view(
                now,
                ttl_ms,
                apps_by_node.remove(n.node_id.as_str()).unwrap_or_default(),
            ),
            reserved_memory_mb: n.reserved_memory_mb,
            reserved_cpus: n.reserved_cpu_millis as f64 / 1000.0,
        })
        .collect();
    Ok(NodesSnapshot { now, ttl_ms, items })
}

async fn nodes(State(state): State<AppState>) -> ApiResult<Json<NodesSnapshot>> {
    Ok(Json(nodes_snapshot(&state).await?))
}

/// One app: its last-known run and the job that made it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct DashboardApp {
    #[serde(flatten)]
    run: AppRun,
    last_job: Option<Job>,
}

/// Every placed app and every app of the newest [`APP_SCAN`] jobs, with its last run. The
/// store keeps no list of apps, so an app whose jobs are all older and that holds no
/// placement (stopped long ago) is not shown.
async fn apps(State(state): State<AppState>) -> ApiResult<Json<Items<DashboardApp>>> {
    let store = state.store();
    let filter = JobFilter {
        limit: APP_SCAN,
        ..JobFilter::default()
    };
    let jobs = store.list_jobs(&filter).await?;
    let mut newest: BTreeMap<&str, &JobRecord> = BTreeMap::new();
    for job in &jobs {
        newest.entry(job.app_id.as_str()).or_insert(job);
    }
    let placements = store.list_placements().await?;
    let ids: BTreeSet<&str> = newest
        .keys()
        .copied()
        .chain(placements.iter().map(|p| p.app_id.as_str()))
        .collect();
    let mut items = Vec::with_capacity(ids.len());
    for app_id in ids {
        let Some(run) = store.app_run(app_id).await? else {
            continue; // Only jobs that never ran: no run to show yet.
        };
        let last_job = match newest.get(app_id) {
            Some(job) if job.job_id == run.last_job_id => Some(job.to_view()),
            _ => Some(store.get_job(run.last_job_id).await?.to_view()),
        };
        let view = run.to_view().ok_or_else(|| {
            StoreError::Corrupt(format!("app_run {app_id}: unknown state {:?}", run.state))
        })?;
        items.push(DashboardApp {
            run: view,
            last_job,
        });
    }
    Ok(Json(Items { items }))
}

#[tracing::instrument(skip_all, fields(job_id = %job_id))]
async fn cancel_job(
    State(state): State<AppState>,
    ApiPath(job_id): ApiPath<Uuid>,
) -> ApiResult<Json<Job>> {
    let job = state.store().cancel_job(job_id, now_millis()).await?;
    state.wake().job_changed();
    // The app's next job may be claimable now.
    state.wake().work_available();
    tracing::info!(app_id = %job.app_id, "job cancelled by an operator");
    Ok(Json(job.to_view()))
}

/// Queues the app's last `DEPLOY` again (the image it built, for a build), as a new job.
#[tracing::instrument(skip_all, fields(app_id = %app_id, job_id))]
async fn redeploy(
    State(state): State<AppState>,
    ApiPath(app_id): ApiPath<String>,
) -> ApiResult<Json<Job>> {
    let app_id =
        AppId::parse(&app_id).map_err(|e| ApiError::Service(ServiceError::Invalid(e.0)))?;
    let filter = JobFilter {
        app_id: Some(app_id.to_string()),
        limit: APP_SCAN,
        ..JobFilter::default()
    };
    let jobs = state.store().list_jobs(&filter).await?;
    let source = jobs
        .iter()
        .filter(|j| j.kind == JobKind::Deploy)
        .find_map(redeploy_of)
        .ok_or_else(|| {
            ApiError::Service(ServiceError::Conflict(format!(
                "app {app_id} has no deploy with an image to run again"
            )))
        })?;
    queue(&state, source).await.map(Json)
}

/// Queues a `STOP` of the app.
#[tracing::instrument(skip_all, fields(app_id = %app_id, job_id))]
async fn stop(
    State(state): State<AppState>,
    ApiPath(app_id): ApiPath<String>,
) -> ApiResult<Json<Job>> {
    let request = CreateJobRequest {
        app_id,
        kind: JobKind::Stop,
        ..CreateJobRequest::default()
    };
    let job = request
        .validate()
        .map_err(|e| ApiError::Service(ServiceError::Invalid(e)))?;
    if state.store().app_run(job.app_id.as_str()).await?.is_none() {
        return Err(ApiError::Service(ServiceError::NotFound(format!(
            "app {} has never been deployed",
            job.app_id
        ))));
    }
    queue(&state, job).await.map(Json)
}

/// Creates `job` as a new job (no idempotency key: each click is a new request).
async fn queue(state: &AppState, job: ValidJob) -> ApiResult<Job> {
    let hash = format!("admin:{}:{:?}", job.app_id, job.kind);
    let new = NewJob {
        job_id: Uuid::now_v7(),
        job,
        idempotency_key: None,
        request_hash: hash,
        max_attempts: state.settings().retry.max_attempts,
        now: now_millis(),
    };
    let job = match state.store().create_job(new).await? {
        Created::New(job) | Created::Existing(job) => job,
    };
    tracing::Span::current().record("job_id", tracing::field::display(job.job_id));
    tracing::info!(kind = ?job.kind, "job queued by an operator");
    state.wake().work_available();
    state.wake().job_changed();
    Ok(job.to_view())
}
