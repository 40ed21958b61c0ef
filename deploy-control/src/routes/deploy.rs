//! The deploy API (`X-DEPLOY-SECRET`): create, read, wait for, list and cancel jobs; logs;
//! an app's last-known run.

use axum::extract::State;
use axum::http::Method;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_shared::extract::{ApiJson, ApiPath, ApiQuery};
use berth_shared::headers::IDEMPOTENCY_KEY;
use berth_shared::ids::AppId;
use berth_shared::openapi::{ApiRouter, Doc};
use berth_shared::wire::limits::MAX_WAIT_SECS;
use berth_shared::wire::{AppRun, CreateJobRequest, Job, JobPage};
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::Role;
use crate::error::ApiResult;
use crate::queue::events::job_routing_key;
use crate::service::jobs::{self, CreatedJob, ListQuery};
use crate::state::AppState;
use crate::wake::Published;

/// The deploy API's routes.
pub fn router() -> ApiRouter<AppState> {
    let job = "The job";
    ApiRouter::secured(Role::Deploy.scheme())
        .route(
            Method::POST,
            "/deploy/jobs",
            create_job,
            Doc::new(
                "Create a deploy or stop job (Idempotency-Key makes a retry return the first job)",
            )
            .header(
                IDEMPOTENCY_KEY,
                "Makes a retry of the same request return the first job",
                "^[!-~]{1,255}$",
            )
            .json::<Job>(
                201,
                "The new job, or the first one made with this Idempotency-Key",
            )
            .problem(409, "The Idempotency-Key was used for another request"),
        )
        .route(
            Method::GET,
            "/deploy/jobs",
            list_jobs,
            Doc::new("List jobs, newest first").json::<JobPage>(200, "A page of jobs"),
        )
        .route(
            Method::GET,
            "/deploy/jobs/{jobId}",
            get_job,
            Doc::new("Read a job; with wait it returns once the version differs")
                .header(
                    "If-None-Match",
                    "Answer 304 while the job has this version",
                    "^[!-~ ]{1,200}$",
                )
                .json::<Job>(200, job)
                .empty(304, "The job still has the version If-None-Match names")
                .problem(404, "No such job"),
        )
        .route(
            Method::GET,
            "/deploy/jobs/{jobId}/events",
            job_events,
            Doc::new("The job's changes as Server-Sent Events until it ends")
                .header(
                    "Last-Event-ID",
                    "The last version the client saw",
                    "^[0-9]{1,18}$",
                )
                .body(
                    200,
                    "text/event-stream",
                    "One event per version, named by its routing key",
                )
                .problem(404, "No such job"),
        )
        .route(
            Method::POST,
            "/deploy/jobs/{jobId}/cancel",
            cancel_job,
            Doc::new("Cancel a PENDING job")
                .json::<Job>(200, "The cancelled job")
                .problem(404, "No such job")
                .problem(409, "The job is no longer PENDING"),
        )
        .route(
            Method::GET,
            "/deploy/jobs/{jobId}/logs",
            job_logs,
            Doc::new("The lines runners sent for the job")
                .body(200, "text/plain", "One line per log line")
                .problem(404, "No such job"),
        )
        .route(
            Method::GET,
            "/deploy/apps/{appId}",
            app_run,
            Doc::new("The app's last known run and its URL")
                .json::<AppRun>(200, "The app's last run")
                .problem(404, "The app was never deployed"),
        )
}

#[tracing::instrument(skip_all, fields(app_id = %body.app_id, job_id))]
async fn create_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateJobRequest>,
) -> ApiResult<Response> {
    let key = jobs::idempotency_key(headers.get(IDEMPOTENCY_KEY).map(HeaderValue::as_bytes))?;
    let CreatedJob { job, replayed } = jobs::create(&state, body, key).await?;
    tracing::Span::current().record("job_id", tracing::field::display(job.job_id));
    tracing::info!(replayed, "job created");
    let mut response = (StatusCode::CREATED, Json(job.to_view())).into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("/deploy/jobs/{}", job.job_id)) {
        headers.insert(header::LOCATION, location);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `?wait=SECS&version=V` of `GET /deploy/jobs/{jobId}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    /// Seconds to wait for a version other than `version` (or the one If-None-Match names).
    #[schemars(range(max = MAX_WAIT_SECS))]
    wait: Option<u64>,
    /// The version the client has.
    version: Option<i64>,
}

/// A job's entity tag: its version (weak, since a lease renewal changes `updatedAt` without a
/// new version).
fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// The tags of an `If-None-Match` header, without their weak marks (`*` stays `*`).
fn if_none_match(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/").to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

/// `GET /deploy/jobs/{id}`: the job with its `ETag`; `304` when `If-None-Match` names its
/// version. With `?wait=` it waits for a version other than `?version=` or, without one, the
/// version the client's `If-None-Match` names.
#[tracing::instrument(skip_all, fields(job_id = %job_id))]
async fn get_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(job_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> ApiResult<Response> {
    let wait = jobs::check_wait(q.wait)?;
    let tags = if_none_match(&headers);
    let known = q.version.or_else(|| {
        tags.iter()
            .find_map(|t| t.trim_matches('"').parse::<i64>().ok())
    });
    let job = match known {
        Some(version) if !wait.is_zero() => {
            jobs::wait_for_change(&state, job_id, version, wait).await?
        }
        _ => Published::new(jobs::get(&state, job_id).await?),
    };
    let tag = etag(job.job.version);
    let strong = tag.trim_start_matches("W/");
    let fresh = tags.iter().any(|t| t == "*" || t == strong);
    // Header values given as strings: axum turns one it cannot encode into a 500, never a panic.
    let headers = [
        (header::ETAG, tag.clone()),
        (header::CACHE_CONTROL, "no-cache".to_owned()),
    ];
    if fresh {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    // Made once per change for every watcher that answers with it.
    let json = job.json(|job| serde_json::to_vec(&job.to_view()).unwrap_or_default());
    let json_type = [(header::CONTENT_TYPE, "application/json")];
    Ok((headers, json_type, json).into_response())
}

/// `GET /deploy/jobs/{id}/events`: the job's changes as Server-Sent Events until it ends
/// (see [`jobs::follow`]); each event is named by its routing key (`job.running`, …) and
/// carries the job's version as its id and the job as its data.
#[tracing::instrument(skip_all, fields(job_id = %job_id))]
async fn job_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(job_id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let jobs = jobs::follow(state, job_id, last_seen).await?;
    let stream = jobs.map(|job| {
        Event::default()
            .event(job_routing_key(&job))
            .id(job.version.to_string())
            .json_data(job.to_view())
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn list_jobs(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<JobPage>> {
    Ok(Json(jobs::list(&state, q).await?))
}

#[tracing::instrument(skip_all, fields(job_id = %job_id))]
async fn cancel_job(
    State(state): State<AppState>,
    ApiPath(job_id): ApiPath<Uuid>,
) -> ApiResult<Json<Job>> {
    Ok(Json(jobs::cancel(&state, job_id).await?.to_view()))
}

async fn job_logs(
    State(state): State<AppState>,
    ApiPath(job_id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let mut text = String::new();
    for l in jobs::logs(&state, job_id).await? {
        text.push_str(&l.line);
        text.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

async fn app_run(
    State(state): State<AppState>,
    ApiPath(app_id): ApiPath<AppId>,
) -> ApiResult<Json<AppRun>> {
    Ok(Json(jobs::app_run(&state, &app_id).await?))
}
