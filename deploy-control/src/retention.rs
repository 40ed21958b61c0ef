//! Retention (`BERTH_JOB_RETENTION_SECS`, 30 days): finished jobs and their logs do not pile
//! up for ever. Every few minutes each replica deletes, in chunks, the jobs that finished longer
//! ago than that, with their log lines and labels — but never an app's last known run nor its
//! newest successful deploy ([`crate::storage::Store::prune_jobs`]). Replicas pruning at once
//! delete disjoint or already-gone rows; nothing else waits on it.

use std::future::Future;
use std::time::Duration;

use crate::queue::now_millis;
use crate::state::AppState;
use crate::storage::PRUNE_JOBS_CHUNK;

/// How often a replica prunes.
const EVERY: Duration = Duration::from_secs(300);

/// Prunes every [`EVERY`] until `shutdown` completes; nothing when retention is off.
pub async fn run(state: AppState, shutdown: impl Future<Output = ()>) {
    let Some(retention) = state.settings().job_retention else {
        return;
    };
    crate::background::every(EVERY, shutdown, || async {
        prune(&state, retention).await;
    })
    .await;
}

/// Deletes every job past `retention`, a chunk at a time; returns how many.
pub async fn prune(state: &AppState, retention: Duration) -> u64 {
    let before = now_millis() - retention.as_millis() as i64;
    let mut deleted = 0;
    loop {
        match state.store().prune_jobs(before).await {
            Ok(n) => {
                deleted += n;
                if n < PRUNE_JOBS_CHUNK as u64 {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = ?anyhow::Error::from(e), "job retention failed; trying again later");
                break;
            }
        }
    }
    if deleted > 0 {
        tracing::info!(deleted, "finished jobs past their retention deleted");
    }
    deleted
}
