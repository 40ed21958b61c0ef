//! Reading jobs: list filters and cursors, and waiting for a job to change.

use std::time::Duration;

use axum::response::sse::Event;
use futures::Stream;

use berth_shared::ids::AppId;
use berth_shared::wire::{is_label_part, JobPage, JobState};
use serde::Deserialize;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::queue::events::job_routing_key;
use crate::queue::JobRecord;
use crate::state::AppState;
use crate::storage::JobFilter;

/// Longest `wait` a client may ask for, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;

/// Checks a `wait` parameter (seconds).
pub fn check_wait(wait: Option<u64>) -> ApiResult<u64> {
    match wait {
        Some(w) if w > MAX_WAIT_SECS => Err(ApiError::BadRequest(format!(
            "wait must be at most {MAX_WAIT_SECS} seconds"
        ))),
        w => Ok(w.unwrap_or(0)),
    }
}

/// Returns the job as soon as its version differs from `version`, or after `wait`.
pub async fn wait_for_change(
    state: &AppState,
    job_id: Uuid,
    version: i64,
    wait: Duration,
) -> ApiResult<JobRecord> {
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribe before reading, so a change between the read and the wait is seen.
    let mut changes = state.wake().job_changes();
    loop {
        let job = state.store().get_job(job_id).await?;
        if job.version != version || job.state.is_final() {
            return Ok(job);
        }
        // Another replica may change the job without telling this one: re-read every second.
        let tick = (tokio::time::Instant::now() + Duration::from_secs(1)).min(deadline);
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep_until(tick) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(state.store().get_job(job_id).await?);
        }
    }
}

/// The job's changes as Server-Sent Events, starting with `job` as it is, until it reaches a
/// final state. Each event is named by its routing key (`job.running`, …), carries the job's
/// version as its id and the job as its data. Changes that come faster than the stream reads
/// are coalesced into the latest; the final state is always sent. A client that reconnects
/// with `Last-Event-ID` (`last_seen`) does not get that version again. `changes` must be
/// subscribed before `job` was read, so no change in between is missed.
pub fn follow(
    state: AppState,
    changes: tokio::sync::watch::Receiver<u64>,
    job: JobRecord,
    last_seen: Option<i64>,
) -> impl Stream<Item = Result<Event, axum::Error>> {
    struct Follow {
        state: AppState,
        job_id: Uuid,
        changes: tokio::sync::watch::Receiver<u64>,
        next: Option<JobRecord>,
        last_sent: Option<i64>,
        done: bool,
    }
    let start = Follow {
        changes,
        job_id: job.job_id,
        state,
        next: Some(job),
        last_sent: last_seen,
        done: false,
    };
    futures::stream::unfold(start, |mut f| async move {
        if f.done {
            return None;
        }
        loop {
            if let Some(job) = f.next.take() {
                if f.last_sent != Some(job.version) {
                    f.last_sent = Some(job.version);
                    f.done = job.state.is_final();
                    let event = Event::default()
                        .event(job_routing_key(&job))
                        .id(job.version.to_string())
                        .json_data(job.to_view());
                    return Some((event, f));
                }
                if job.state.is_final() {
                    return None;
                }
            }
            // Another replica may change the job without telling this one (MySQL without a
            // broker): look again every second.
            tokio::select! {
                _ = f.changes.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let job_id = f.job_id;
            match f.state.store().get_job(job_id).await {
                Ok(job) => f.next = Some(job),
                Err(e) => {
                    tracing::warn!(error = ?anyhow::Error::from(e), %job_id, "job event stream ends");
                    return None;
                }
            }
        }
    })
}

/// The query of `GET /deploy/jobs` and `GET /admin/jobs`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    app_id: Option<String>,
    state: Option<String>,
    label: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Lists jobs, newest first, a page at a time.
pub async fn list(state: &AppState, q: ListQuery) -> ApiResult<JobPage> {
    let filter = filter(q)?;
    let items = state.store().list_jobs(&filter).await?;
    let next_cursor = (items.len() == filter.limit as usize)
        .then(|| items.last().map(|j| j.seq.to_string()))
        .flatten();
    Ok(JobPage {
        items: items.iter().map(JobRecord::to_view).collect(),
        next_cursor,
    })
}

fn filter(q: ListQuery) -> ApiResult<JobFilter> {
    let bad = ApiError::BadRequest;
    let app_id = q
        .app_id
        .map(|a| AppId::parse(&a).map(String::from))
        .transpose()
        .map_err(|e| bad(e.0))?;
    let state = q
        .state
        .map(|s| JobState::parse(&s).ok_or_else(|| bad(format!("state must be one of PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED, not {s:?}"))))
        .transpose()?;
    let label = q
        .label
        .map(|l| match l.split_once(':') {
            Some((k, v)) if is_label_part(k) && (v.is_empty() || is_label_part(v)) => {
                Ok((k.to_owned(), v.to_owned()))
            }
            _ => Err(bad("label must be key:value".into())),
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(bad("limit must be between 1 and 500".into()));
    }
    let before_seq = q
        .cursor
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| bad("cursor is not one this API returned".into()))
        })
        .transpose()?;
    Ok(JobFilter {
        app_id,
        state,
        label,
        limit,
        before_seq,
    })
}
