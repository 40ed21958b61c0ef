//! Draining a node: every app placed on it gets a redeploy job, which placement sends to
//! another node because a draining node is not schedulable. The runner stops the old
//! container once the new one runs (the claim names the previous node).

use berth_shared::ids::AppId;
use berth_shared::wire::{JobKind, JobState, ValidJob};
use uuid::Uuid;

use crate::error::ApiResult;
use crate::queue::{now_millis, JobRecord};
use crate::state::AppState;
use crate::storage::{Created, JobFilter, NewJob};

/// Queues a redeploy of each app placed on `node_id`, from its last successful deploy.
/// Idempotent: draining twice queues nothing new (the idempotency key names the source job).
pub async fn redeploy_apps_of(state: &AppState, node_id: &str) -> ApiResult<Vec<Uuid>> {
    let store = state.store();
    let placements = store.list_placements().await?;
    let mut queued = Vec::new();
    for placement in placements.iter().filter(|p| p.node_id == node_id) {
        let filter = JobFilter {
            app_id: Some(placement.app_id.clone()),
            state: Some(JobState::Succeeded),
            limit: 20,
            ..JobFilter::default()
        };
        let last = store
            .list_jobs(&filter)
            .await?
            .into_iter()
            .find(|j| j.kind == JobKind::Deploy);
        let Some(source) = last else { continue };
        let Some(job) = redeploy_of(&source) else {
            continue;
        };
        let new = NewJob {
            job_id: Uuid::now_v7(),
            job,
            idempotency_key: Some(format!("drain:{node_id}:{}", source.job_id)),
            request_hash: format!("drain:{}", source.job_id),
            max_attempts: state.settings().retry.max_attempts,
            now: now_millis(),
        };
        if let Created::New(job) = store.create_job(new).await? {
            tracing::info!(app_id = %job.app_id, job_id = %job.job_id, "drain: redeploy queued");
            queued.push(job.job_id);
        }
    }
    if !queued.is_empty() {
        state.wake().work_available();
        state.wake().job_changed();
    }
    Ok(queued)
}

/// The same app, image (the built one, for a build job), env and secrets as `source`.
pub fn redeploy_of(source: &JobRecord) -> Option<ValidJob> {
    let app_id = AppId::parse(&source.app_id).ok()?;
    let mut payload = source.payload.clone();
    if let Some(built) = source.result.as_ref().and_then(|r| r.image.clone()) {
        payload.image = Some(built);
        payload.build = None;
    }
    payload.image.as_ref()?;
    Some(ValidJob {
        app_id,
        kind: JobKind::Deploy,
        payload,
        secret_env: source.secret_env.clone(),
    })
}
