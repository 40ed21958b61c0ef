//! Jobs as the deploy and admin APIs see them: create (idempotent), read, wait for a change,
//! follow until the end, list, cancel; a job's logs and an app's last-known run.

use std::sync::Arc;
use std::time::Duration;

use berth_shared::ids::AppId;
use berth_shared::wire::limits::MAX_WAIT_SECS;
use berth_shared::wire::{is_label_part, AppRun, CreateJobRequest, JobPage, JobState, JobTimeline};
use futures::Stream;
use schemars::JsonSchema;
use serde::Deserialize;
use uuid::Uuid;

use super::watch;
use super::{ServiceError, ServiceResult};
use crate::queue::attempt;
use crate::queue::{now_millis, JobRecord, LogLine};
use crate::state::AppState;
use crate::storage::{Created, JobFilter, JobSpec, NewJob, StoreError};
use crate::wake::{Published, Watched};

/// Checks a `wait` parameter (seconds); none is no wait.
pub fn check_wait(wait: Option<u64>) -> ServiceResult<Duration> {
    match wait {
        Some(w) if w > MAX_WAIT_SECS => Err(ServiceError::Invalid(format!(
            "wait must be at most {MAX_WAIT_SECS} seconds"
        ))),
        w => Ok(Duration::from_secs(w.unwrap_or(0))),
    }
}

/// Checks an `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub fn idempotency_key(raw: Option<&[u8]>) -> ServiceResult<Option<String>> {
    let Some(raw) = raw else { return Ok(None) };
    let ok = !raw.is_empty() && raw.len() <= 255 && raw.iter().all(u8::is_ascii_graphic);
    if !ok {
        return Err(ServiceError::Invalid(
            "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
        ));
    }
    Ok(Some(String::from_utf8_lossy(raw).into_owned()))
}

/// A created job, and whether an earlier request with the same key had created it.
#[derive(Debug)]
pub struct CreatedJob {
    /// The job.
    pub job: JobRecord,
    /// True when the job is the one an earlier request with the same key created.
    pub replayed: bool,
}

/// Validates `request` and creates its job; with `idempotency_key`, a retry of the same
/// request returns the first job and a different request with the key is a conflict.
pub async fn create(
    state: &AppState,
    request: CreateJobRequest,
    idempotency_key: Option<String>,
) -> ServiceResult<CreatedJob> {
    // The parsed request is hashed (maps are ordered), so whitespace or field order in a retry
    // does not matter but any change of value does. The hash is keyed (an HMAC under
    // BERTH_SECRET_KEY): it covers the secret values without letting anyone who reads the
    // database check a guess at them.
    let keys = &state.settings().secrets.secret_key;
    let request_hash = keys.fingerprint(&serde_json::to_vec(&request).unwrap_or_default());
    let job = request.validate().map_err(ServiceError::Invalid)?;
    let new = NewJob {
        job_id: Uuid::now_v7(),
        job: JobSpec::seal(job, keys),
        idempotency_key,
        request_hash,
        max_attempts: state.settings().retry.max_attempts,
        now: now_millis(),
    };
    Ok(match state.store().create_job(new).await? {
        Created::New(job) => {
            state.wake().work_available();
            state.wake().job_changed(job.job_id);
            CreatedJob {
                job,
                replayed: false,
            }
        }
        Created::Existing(job) => CreatedJob {
            job,
            replayed: true,
        },
    })
}

/// The job as it is now.
pub async fn get(state: &AppState, job_id: Uuid) -> ServiceResult<JobRecord> {
    Ok(state.store().get_job(job_id).await?)
}

/// Returns the job as soon as its version differs from `version` (or it is final), or as it
/// is after `wait`. Watchers of one job share its reads ([`super::watch`]) and the answer
/// about each change ([`Published::json`]).
pub async fn wait_for_change(
    state: &AppState,
    job_id: Uuid,
    version: i64,
    wait: Duration,
) -> ServiceResult<Arc<Published>> {
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribe before reading, so a change between the read and the wait is seen.
    let mut watched = watch::subscribe(state, job_id);
    let job = state.store().get_job(job_id).await?;
    state.wake().seed(&job);
    if job.version != version || job.state.is_final() {
        return Ok(Published::new(job));
    }
    loop {
        tokio::select! {
            changed = watched.changed() => {
                if changed.is_err() {
                    break; // The reader ended (the process shuts down).
                }
                let published = watched.borrow_and_update().clone();
                // A read begun before ours may land after it: only a newer version counts.
                if let Some(now) = published.filter(|now| now.job.version > job.version) {
                    return Ok(now);
                }
            }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    Ok(watch::newest(job, &watched))
}

/// The job as it is now, then each new version of it until it reaches a final state; a
/// version equal to `last_seen` (a client reconnecting) is not sent again. Versions that come
/// faster than the stream is read are coalesced into the latest; the final one is always
/// sent. A missing job is an error before the stream starts. Streams of one job share its
/// reads ([`super::watch`]).
pub async fn follow(
    state: AppState,
    job_id: Uuid,
    last_seen: Option<i64>,
) -> ServiceResult<impl Stream<Item = JobRecord>> {
    struct Follow {
        watched: Watched,
        next: Option<JobRecord>,
        last_sent: Option<i64>,
        done: bool,
    }
    // Subscribe before reading, so no change between the read and the stream is missed.
    let watched = watch::subscribe(&state, job_id);
    let job = state.store().get_job(job_id).await?;
    state.wake().seed(&job);
    // The job as it is now is sent unless the client saw exactly this version.
    let last_sent = last_seen.filter(|seen| *seen == job.version);
    let start = Follow {
        watched,
        next: Some(job),
        last_sent,
        done: false,
    };
    Ok(futures::stream::unfold(start, |mut f| async move {
        if f.done {
            return None;
        }
        loop {
            if let Some(job) = f.next.take() {
                // Versions only grow: a read that began before the last one sent is old news.
                if f.last_sent.is_none_or(|sent| job.version > sent) {
                    f.last_sent = Some(job.version);
                    f.done = job.state.is_final();
                    return Some((job, f));
                }
                if job.state.is_final() {
                    return None;
                }
            }
            if f.watched.changed().await.is_err() {
                return None; // The reader ended (the process shuts down).
            }
            f.next = f
                .watched
                .borrow_and_update()
                .as_ref()
                .map(|p| p.job.clone());
        }
    }))
}

/// The filters of `GET /deploy/jobs` and `GET /admin/jobs`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    /// Only this app's jobs.
    #[schemars(with = "Option<AppId>")]
    pub app_id: Option<String>,
    /// Only jobs in this state.
    #[schemars(with = "Option<JobState>")]
    pub state: Option<String>,
    /// Only jobs with this label, as `key:value`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._/-]{1,63}:[A-Za-z0-9._/-]{0,63}$"))]
    pub label: Option<String>,
    /// Jobs per page, 1 to 500 (50).
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    #[schemars(regex(pattern = r"^[0-9]{1,18}$"))]
    pub cursor: Option<String>,
}

/// Lists jobs, newest first, a page at a time.
pub async fn list(state: &AppState, q: ListQuery) -> ServiceResult<JobPage> {
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

fn filter(q: ListQuery) -> ServiceResult<JobFilter> {
    let bad = ServiceError::Invalid;
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

/// Cancels a `PENDING` job (anything else is a conflict).
pub async fn cancel(state: &AppState, job_id: Uuid) -> ServiceResult<JobRecord> {
    let job = state.store().cancel_job(job_id, now_millis()).await?;
    state.wake().job_changed(job_id);
    // The app's next job may be claimable now.
    state.wake().work_available();
    tracing::info!(app_id = %job.app_id, "job cancelled");
    Ok(job)
}

/// The lines runners sent for the job, oldest first.
pub async fn logs(state: &AppState, job_id: Uuid) -> ServiceResult<Vec<LogLine>> {
    Ok(state.store().job_logs(job_id).await?)
}

/// The job's timeline: its creation, each claim with its runner, node and outcome, its end.
pub async fn timeline(state: &AppState, job_id: Uuid) -> ServiceResult<JobTimeline> {
    let (job, attempts) = state.store().job_timeline(job_id).await?;
    Ok(attempt::timeline(&job, &attempts))
}

/// The app's last-known run; not found when it was never deployed.
pub async fn app_run(state: &AppState, app_id: &AppId) -> ServiceResult<AppRun> {
    let run = state
        .store()
        .app_run(app_id.as_str())
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("app {app_id} has never been deployed")))?;
    let mut view = run.to_view().ok_or_else(|| {
        ServiceError::Corrupt(StoreError::Corrupt(format!(
            "app_run {app_id}: unknown state {:?}",
            run.state
        )))
    })?;
    // An app with volumes on a lost node is not moved: its run says why (SPEC §8).
    if let Some(held) = super::nodes::held_reason(state, app_id.as_str()).await? {
        view.error = Some(held);
    }
    Ok(view)
}
