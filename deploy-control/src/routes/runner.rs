//! The runner API (`X-Runner-Token`): claim, heartbeat, logs, report.

use axum::extract::State;
use axum::http::Method;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_shared::extract::{ApiJson, ApiPath};
use berth_shared::openapi::{ApiRouter, Doc};
use berth_shared::wire::{
    ClaimRequest, ClaimResponse, Job, JobHeartbeatRequest, JobHeartbeatResponse, Lease,
    LogsRequest, ReportRequest,
};
use uuid::Uuid;

use crate::auth::Role;
use crate::error::ApiResult;
use crate::queue::to_datetime;
use crate::service::runner;
use crate::state::AppState;

/// The runner API's routes.
pub fn router() -> ApiRouter<AppState> {
    let (gone, stale) = ("No such job", "The lease is not the job's current one");
    ApiRouter::secured(Role::Runner.scheme())
        .route(
            Method::POST,
            "/runner/jobs/claim",
            claim,
            Doc::new("Claim a job (long poll)")
                .json::<ClaimResponse>(200, "The claimed job, its lease and its node")
                .empty(204, "No job became claimable within wait"),
        )
        .route(
            Method::POST,
            "/runner/jobs/{jobId}/heartbeat",
            heartbeat,
            Doc::new("Renew the lease")
                .json::<JobHeartbeatResponse>(
                    200,
                    "When the lease now runs out, and the renewed grants",
                )
                .problem(404, gone)
                .problem(409, stale),
        )
        .route(
            Method::POST,
            "/runner/jobs/{jobId}/logs",
            logs,
            Doc::new("Append log lines")
                .empty(204, "The lines are stored")
                .problem(404, gone)
                .problem(409, stale),
        )
        .route(
            Method::POST,
            "/runner/jobs/{jobId}/report",
            report,
            Doc::new("Report the attempt's outcome")
                .json::<Job>(200, "The job after the report")
                .problem(404, gone)
                .problem(409, stale),
        )
}

#[tracing::instrument(skip_all, fields(runner_id = %body.runner_id, job_id, app_id, node_id))]
async fn claim(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ClaimRequest>,
) -> ApiResult<Response> {
    let Some(runner::Handed {
        claimed,
        secret_env,
    }) = runner::claim(&state, &body).await?
    else {
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
        secret_env,
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
    let renewed = runner::heartbeat(&state, job_id, &body).await?;
    Ok(Json(JobHeartbeatResponse {
        expires_at: to_datetime(renewed.expires_at),
        agent_grants: renewed.agent_grants,
    }))
}

#[tracing::instrument(skip_all, fields(job_id = %job_id, lines = body.lines.len()))]
async fn logs(
    State(state): State<AppState>,
    ApiPath(job_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<LogsRequest>,
) -> ApiResult<StatusCode> {
    runner::logs(&state, job_id, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[tracing::instrument(skip_all, fields(job_id = %job_id, runner_id = %body.runner_id, outcome = ?body.outcome))]
async fn report(
    State(state): State<AppState>,
    ApiPath(job_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ReportRequest>,
) -> ApiResult<Json<Job>> {
    Ok(Json(runner::report(&state, job_id, body).await?.to_view()))
}
