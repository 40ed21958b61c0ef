//! The runner API (`X-Runner-Token`): claim, heartbeat, logs, report.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use berth_shared::ids::NodeId;
use berth_shared::wire::{
    ClaimRequest, ClaimResponse, JobHeartbeatRequest, JobHeartbeatResponse, Lease, LogsRequest,
    ReportRequest,
};
use uuid::Uuid;

use crate::dispatch::{self, is_lease_token};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::jobs::check_wait;
use crate::queue::machine::Report;
use crate::queue::{now_millis, to_datetime};
use crate::state::AppState;

/// Lines one log request may carry.
pub const MAX_LOG_LINES: usize = 1000;
/// Bytes in one log line (longer lines are cut).
pub const MAX_LOG_LINE: usize = 8 * 1024;
/// Bytes of a reported error (longer ones are cut).
pub const MAX_ERROR: usize = 8 * 1024;

/// The runner API's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/runner/jobs/claim", post(claim))
        .route("/runner/jobs/{job_id}/heartbeat", post(heartbeat))
        .route("/runner/jobs/{job_id}/logs", post(logs))
        .route("/runner/jobs/{job_id}/report", post(report))
}

fn runner_id(id: &str) -> ApiResult<()> {
    NodeId::parse(id)
        .map(|_| ())
        .map_err(|e| ApiError::BadRequest(format!("runnerId: {}", e.0)))
}

fn lease_token(token: &str) -> ApiResult<()> {
    if is_lease_token(token) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "leaseToken is not a lease token (32 hex characters from a claim)".into(),
        ))
    }
}

#[tracing::instrument(skip_all, fields(runner_id = %body.runner_id, job_id, app_id, node_id))]
async fn claim(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ClaimRequest>,
) -> ApiResult<Response> {
    runner_id(&body.runner_id)?;
    let wait = Duration::from_secs(check_wait(Some(body.wait))?);
    let Some(claimed) = dispatch::claim(&state, &body.runner_id, wait).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let job = claimed.job;
    let span = tracing::Span::current();
    span.record("job_id", tracing::field::display(job.job_id));
    span.record("app_id", job.app_id.as_str());
    span.record("node_id", job.node_id.as_deref().unwrap_or("-"));
    tracing::info!(attempt = job.attempt, "job claimed");
    let lease = Lease {
        token: job.lease_token.clone().unwrap_or_default(),
        expires_at: to_datetime(job.lease_expires_at.unwrap_or_default()),
    };
    Ok(Json(ClaimResponse {
        secret_env: job.secret_env.clone(),
        job: job.to_view(),
        lease,
        node: claimed.node,
        previous_node: claimed.previous_node,
    })
    .into_response())
}

#[tracing::instrument(skip_all, fields(job_id = %job_id, runner_id = %body.runner_id))]
async fn heartbeat(
    State(state): State<AppState>,
    ApiPath(job_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<JobHeartbeatRequest>,
) -> ApiResult<Json<JobHeartbeatResponse>> {
    runner_id(&body.runner_id)?;
    lease_token(&body.lease_token)?;
    let now = now_millis();
    let expires_at = now + state.settings().lease.as_millis() as i64;
    state
        .store()
        .renew_lease(job_id, &body.lease_token, expires_at, now)
        .await?;
    Ok(Json(JobHeartbeatResponse {
        expires_at: to_datetime(expires_at),
    }))
}

#[tracing::instrument(skip_all, fields(job_id = %job_id, lines = body.lines.len()))]
async fn logs(
    State(state): State<AppState>,
    ApiPath(job_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<LogsRequest>,
) -> ApiResult<StatusCode> {
    lease_token(&body.lease_token)?;
    if body.lines.len() > MAX_LOG_LINES {
        return Err(ApiError::BadRequest(format!(
            "send at most {MAX_LOG_LINES} lines per request"
        )));
    }
    let lines: Vec<String> = body
        .lines
        .into_iter()
        .map(|l| cut(l, MAX_LOG_LINE))
        .collect();
    state
        .store()
        .append_logs(job_id, &body.lease_token, &lines, now_millis())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[tracing::instrument(skip_all, fields(job_id = %job_id, runner_id = %body.runner_id, outcome = ?body.outcome))]
async fn report(
    State(state): State<AppState>,
    ApiPath(job_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ReportRequest>,
) -> ApiResult<Response> {
    runner_id(&body.runner_id)?;
    lease_token(&body.lease_token)?;
    let report = Report {
        outcome: body.outcome,
        error: body.error.map(|e| cut(e, MAX_ERROR)),
        retryable: body.retryable,
        result: body.result,
    };
    let job = state
        .store()
        .report_job(
            job_id,
            &body.lease_token,
            report,
            &state.settings().retry,
            now_millis(),
        )
        .await?;
    tracing::info!(app_id = %job.app_id, state = job.state.as_str(), "job reported");
    state.wake().job_changed();
    // The app's next job may be claimable now.
    state.wake().work_available();
    Ok(Json(job.to_view()).into_response())
}

/// Cuts `text` to at most `max` bytes on a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}
