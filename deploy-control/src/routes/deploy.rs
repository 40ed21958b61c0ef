//! The deploy API (`X-DEPLOY-SECRET`): create, read, wait for, list and cancel jobs; logs;
//! an app's last-known run.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_shared::headers::IDEMPOTENCY_KEY;
use berth_shared::ids::AppId;
use berth_shared::wire::{CreateJobRequest, JobPage};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::jobs::{self, ListQuery};
use crate::queue::now_millis;
use crate::state::AppState;
use crate::storage::{Created, NewJob};

/// The deploy API's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/deploy/jobs", post(create_job).get(list_jobs))
        .route("/deploy/jobs/{job_id}", get(get_job))
        .route("/deploy/jobs/{job_id}/events", get(job_events))
        .route("/deploy/jobs/{job_id}/cancel", post(cancel_job))
        .route("/deploy/jobs/{job_id}/logs", get(job_logs))
        .route("/deploy/apps/{app_id}", get(app_run))
}

#[tracing::instrument(skip_all, fields(app_id = %body.app_id, job_id))]
async fn create_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateJobRequest>,
) -> ApiResult<Response> {
    let idempotency_key = idempotency_key(&headers)?;
    // The parsed request is hashed (maps are ordered), so whitespace or field order in a retry
    // does not matter but any change of value does.
    let request_hash = hex::encode(Sha256::digest(
        serde_json::to_vec(&body).unwrap_or_default(),
    ));
    let job = body.validate().map_err(ApiError::BadRequest)?;
    let new = NewJob {
        job_id: Uuid::now_v7(),
        job,
        idempotency_key,
        request_hash,
        max_attempts: state.settings().retry.max_attempts,
        now: now_millis(),
    };
    let created = state.store().create_job(new).await?;
    let (record, replayed) = match created {
        Created::New(job) => {
            state.wake().work_available();
            state.wake().job_changed();
            (job, false)
        }
        Created::Existing(job) => (job, true),
    };
    tracing::Span::current().record("job_id", tracing::field::display(record.job_id));
    tracing::info!(replayed, "job created");
    let mut response = (StatusCode::CREATED, Json(record.to_view())).into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("/deploy/jobs/{}", record.job_id)) {
        headers.insert(header::LOCATION, location);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()));
    key.map(|k| Some(k.to_owned())).ok_or_else(|| {
        ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters".into())
    })
}

/// `?wait=SECS&version=V` of `GET /deploy/jobs/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    wait: Option<u64>,
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
    let wait = Duration::from_secs(jobs::check_wait(q.wait)?);
    let tags = if_none_match(&headers);
    let known = q.version.or_else(|| {
        tags.iter()
            .find_map(|t| t.trim_matches('"').parse::<i64>().ok())
    });
    let job = match known {
        Some(version) if !wait.is_zero() => {
            jobs::wait_for_change(&state, job_id, version, wait).await?
        }
        _ => state.store().get_job(job_id).await?,
    };
    let tag = etag(job.version);
    let strong = tag.trim_start_matches("W/");
    let tag_header = HeaderValue::from_str(&tag).expect("an ETag is ASCII");
    let cache = HeaderValue::from_static("no-cache");
    if tags.iter().any(|t| t == "*" || t == strong) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, tag_header), (header::CACHE_CONTROL, cache)],
        )
            .into_response());
    }
    Ok((
        [(header::ETAG, tag_header), (header::CACHE_CONTROL, cache)],
        Json(job.to_view()),
    )
        .into_response())
}

/// `GET /deploy/jobs/{id}/events`: the job's changes as Server-Sent Events until it ends
/// (see [`jobs::follow`]).
#[tracing::instrument(skip_all, fields(job_id = %job_id))]
async fn job_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(job_id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let changes = state.wake().job_changes();
    // A missing job is a 404 before the stream starts.
    let job = state.store().get_job(job_id).await?;
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let stream = jobs::follow(state, changes, job, last_seen);
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
) -> ApiResult<Response> {
    let job = state.store().cancel_job(job_id, now_millis()).await?;
    state.wake().job_changed();
    // The app's next job may be claimable now.
    state.wake().work_available();
    tracing::info!(app_id = %job.app_id, "job cancelled");
    Ok(Json(job.to_view()).into_response())
}

async fn job_logs(
    State(state): State<AppState>,
    ApiPath(job_id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let lines = state.store().job_logs(job_id).await?;
    let mut text = String::new();
    for l in lines {
        text.push_str(&l.line);
        text.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

async fn app_run(
    State(state): State<AppState>,
    ApiPath(app_id): ApiPath<String>,
) -> ApiResult<Response> {
    let app_id = AppId::parse(&app_id).map_err(|e| ApiError::BadRequest(e.0))?;
    match state.store().app_run(app_id.as_str()).await? {
        Some(run) => Ok(Json(run.to_view()).into_response()),
        None => Err(ApiError::NotFound(format!(
            "app {app_id} has never been deployed"
        ))),
    }
}
