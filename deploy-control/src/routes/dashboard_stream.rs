//! The dashboard's live feeds as Server-Sent Events (read by the page with `fetch`, since
//! `EventSource` cannot send `X-Admin-Token`):
//!
//! - `GET /admin/events`: `nodes` (a [`NodesSnapshot`](crate::service::dashboard::NodesSnapshot))
//!   at the start and whenever a node changes, and `jobs` (`{"changes": n}`) whenever a job
//!   changed, so the page re-reads its lists.
//! - `GET /admin/jobs/{jobId}/follow`: `job` (the job) at the start and at each change, `logs`
//!   (new lines) as they arrive, and `end` (the final state) once the job is final and its
//!   last lines are sent.

use axum::extract::State;
use axum::http::Method;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use berth_shared::extract::ApiPath;
use berth_shared::openapi::{ApiRouter, Doc};
use futures::{Stream, StreamExt};
use serde_json::json;
use uuid::Uuid;

use crate::auth::Role;
use crate::error::ApiResult;
use crate::service::dashboard::{self, FleetChange, JobChange};
use crate::state::AppState;

/// The feeds' routes.
pub fn router() -> ApiRouter<AppState> {
    ApiRouter::secured(Role::Admin.scheme())
        .route(
            Method::GET,
            "/admin/events",
            events,
            Doc::new("The fleet's changes, as Server-Sent Events (`nodes`, `jobs`)").body(
                200,
                "text/event-stream",
                "The event stream",
            ),
        )
        .route(
            Method::GET,
            "/admin/jobs/{jobId}/follow",
            follow,
            Doc::new(
                "One job's changes and log lines, as Server-Sent Events (`job`, `logs`, `end`)",
            )
            .body(200, "text/event-stream", "The event stream")
            .problem(404, "No such job"),
        )
}

fn sse(stream: impl Stream<Item = Result<Event, axum::Error>> + Send + 'static) -> Response {
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn events(State(state): State<AppState>) -> ApiResult<Response> {
    let feed = dashboard::fleet_changes(state).await?;
    Ok(sse(feed.map(|change| match change {
        FleetChange::Nodes(snapshot) => Event::default().event("nodes").json_data(&snapshot),
        FleetChange::Jobs(changes) => Event::default()
            .event("jobs")
            .json_data(json!({ "changes": changes })),
    })))
}

#[tracing::instrument(skip_all, fields(job_id = %job_id))]
async fn follow(
    State(state): State<AppState>,
    ApiPath(job_id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let feed = dashboard::job_changes(state, job_id).await?;
    Ok(sse(feed.map(|change| match change {
        JobChange::Job(job) => Event::default().event("job").json_data(job),
        JobChange::Logs(lines) => Event::default().event("logs").json_data(lines),
        JobChange::End(final_state) => Ok(Event::default().event("end").data(final_state.as_str())),
    })))
}
