//! The dashboard's live streams (Server-Sent Events, read by the page with `fetch`, since
//! `EventSource` cannot send `X-Admin-Token`):
//!
//! - `GET /admin/events`: `nodes` (a [`NodesSnapshot`]) at the start and whenever a node
//!   changes, and `jobs` (a counter) whenever a job changed, so the page re-reads its lists.
//! - `GET /admin/jobs/{id}/follow`: `job` (the job) at the start and at each change, `logs`
//!   (new lines) as they arrive, until the job is final and its last lines are sent.

use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::Stream;
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use super::dashboard::{nodes_snapshot, NodesSnapshot};
use crate::error::ApiResult;
use crate::queue::to_datetime;
use crate::state::AppState;
use berth_shared::extract::ApiPath;

/// How often a stream looks again without a wake-up: nodes go `OFFLINE` by the clock, other
/// replicas change rows without telling this one, and log lines ring no wake-up.
const RECHECK: Duration = Duration::from_millis(500);

/// The streams' routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/events", get(events))
        .route("/admin/jobs/{job_id}/follow", get(follow))
}

fn sse(stream: impl Stream<Item = Result<Event, axum::Error>> + Send + 'static) -> Response {
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn events(State(state): State<AppState>) -> ApiResult<Response> {
    struct Watch {
        state: AppState,
        jobs: watch::Receiver<u64>,
        last_nodes: Option<NodesSnapshot>,
        jobs_seen: u64,
    }
    // Subscribed before the first snapshot, so no change after it is missed.
    let jobs = state.wake().job_changes();
    let first = nodes_snapshot(&state).await?;
    let jobs_seen = *jobs.borrow();
    let start = Watch {
        jobs_seen,
        jobs,
        state,
        last_nodes: None,
    };
    let first = Some(first);
    let stream = futures::stream::unfold((start, first), |(mut w, mut next)| async move {
        loop {
            if let Some(snapshot) = next.take() {
                // `now` moves on every read; only a change of the nodes themselves is news.
                let changed = w
                    .last_nodes
                    .as_ref()
                    .is_none_or(|l| l.items != snapshot.items);
                if changed {
                    let event = Event::default().event("nodes").json_data(&snapshot);
                    w.last_nodes = Some(snapshot);
                    return Some((event, (w, None)));
                }
            }
            let jobs_now = *w.jobs.borrow();
            if jobs_now != w.jobs_seen {
                w.jobs_seen = jobs_now;
                let event = Event::default()
                    .event("jobs")
                    .json_data(json!({ "changes": jobs_now }));
                return Some((event, (w, None)));
            }
            {
                let work = w.state.wake().work();
                tokio::select! {
                    _ = w.jobs.changed() => {}
                    _ = work => {}
                    _ = tokio::time::sleep(RECHECK) => {}
                }
            }
            match nodes_snapshot(&w.state).await {
                Ok(snapshot) => next = Some(snapshot),
                Err(e) => {
                    tracing::warn!(error = %e, "dashboard event stream ends");
                    return None;
                }
            }
        }
    });
    Ok(sse(stream))
}

#[tracing::instrument(skip_all, fields(job_id = %job_id))]
async fn follow(
    State(state): State<AppState>,
    ApiPath(job_id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    struct Follow {
        state: AppState,
        job_id: Uuid,
        changes: watch::Receiver<u64>,
        version: Option<i64>,
        lines_sent: usize,
        /// Look again at once, without waiting for a change (after sending something).
        fresh: bool,
        done: bool,
    }
    let changes = state.wake().job_changes();
    // A job that does not exist is a 404 before the stream starts.
    state.store().get_job(job_id).await?;
    let start = Follow {
        state,
        job_id,
        changes,
        version: None,
        lines_sent: 0,
        fresh: true,
        done: false,
    };
    let stream = futures::stream::unfold(start, |mut f| async move {
        loop {
            if f.done {
                return None;
            }
            if !f.fresh {
                tokio::select! {
                    _ = f.changes.changed() => {}
                    _ = tokio::time::sleep(RECHECK) => {}
                }
            }
            // Read the job before its logs: lines written before it turned final are all in
            // the read that follows, so the stream may end once it sent them.
            let read = async {
                let job = f.state.store().get_job(f.job_id).await?;
                let logs = f.state.store().job_logs(f.job_id).await?;
                Ok::<_, crate::storage::StoreError>((job, logs))
            };
            let (job, logs) = match read.await {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!(error = ?anyhow::Error::from(e), "job follow stream ends");
                    return None;
                }
            };
            f.fresh = true;
            if f.version != Some(job.version) {
                f.version = Some(job.version);
                return Some((Event::default().event("job").json_data(job.to_view()), f));
            }
            if logs.len() > f.lines_sent {
                let new: Vec<_> = logs[f.lines_sent..]
                    .iter()
                    .map(|l| json!({ "at": to_datetime(l.at), "line": l.line }))
                    .collect();
                f.lines_sent = logs.len();
                return Some((Event::default().event("logs").json_data(new), f));
            }
            if job.state.is_final() {
                f.done = true;
                return Some((
                    Ok(Event::default().event("end").data(job.state.as_str())),
                    f,
                ));
            }
            f.fresh = false;
        }
    });
    Ok(sse(stream))
}
