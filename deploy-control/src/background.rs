//! Background sweeps: the lease reaper (expired leases go back to `PENDING` or to `FAILED`),
//! the node watcher (silent nodes become `OFFLINE`), the lost-node sweep (SPEC §8) and the
//! refresh of the job table's statistics while the queue grows. Every replica runs both; the
//! storage's row locks make concurrent sweeps safe. Neither judges what it could not watch
//! ([`crate::watch`]): after the control plane's start or a database outage, the reaper waits
//! one lease length and the watcher one node TTL, so runners renew and nodes heartbeat first.

use std::future::Future;
use std::time::Duration;

use crate::queue::now_millis;
use crate::state::AppState;

/// Runs both sweeps every `sweep_interval` until `shutdown` completes.
pub async fn run(state: AppState, shutdown: impl Future<Output = ()>) {
    let period = state.settings().sweep_interval;
    every(period, shutdown, || sweep(&state)).await;
}

/// Runs `task` at once and then every `period` (a late run delays the next, never doubles it)
/// until `shutdown` completes; a run under way is finished first.
pub async fn every<F, Fut>(period: Duration, shutdown: impl Future<Output = ()>, mut task: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => task().await,
        }
    }
}

/// One pass of both sweeps. Errors are logged (and an outage told to the watch), and the next
/// pass tries again.
pub async fn sweep(state: &AppState) {
    if state.watch().away() {
        // Neither sweep judges while the database is away, so neither would learn it is back:
        // a look at the node table tells.
        let outcome = state.store().list_nodes().await;
        state.watch().saw(&outcome, now_millis());
    }
    reap_leases(state).await;
    mark_offline(state).await;
    redeploy_lost(state).await;
    refresh_statistics(state).await;
}

/// Keeps the database's statistics of the job table fresh while the queue grows fast
/// ([`crate::storage::Store::refresh_statistics`]).
async fn refresh_statistics(state: &AppState) {
    match state.store().refresh_statistics().await {
        Ok(true) => tracing::debug!("job table statistics refreshed"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = ?anyhow::Error::from(e), "refreshing the job table's statistics failed")
        }
    }
}

/// The lease reaper: expires the leases that ran out, unless the control plane has watched
/// for less than one lease length (runners may not have been able to renew meanwhile).
pub async fn reap_leases(state: &AppState) {
    let settings = state.settings();
    let now = now_millis();
    if !state
        .watch()
        .watched(now, settings.lease.as_millis() as i64)
    {
        return;
    }
    let outcome = state.store().expire_leases(&settings.retry, now).await;
    state.watch().saw(&outcome, now_millis());
    match outcome {
        Ok(jobs) if !jobs.is_empty() => {
            for job in &jobs {
                tracing::warn!(job_id = %job.job_id, app_id = %job.app_id, state = job.state.as_str(), attempt = job.attempt, "lease expired");
            }
            for job in &jobs {
                state.wake().job_changed(job.job_id);
            }
            state.wake().work_available();
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = ?anyhow::Error::from(e), "lease reaper failed"),
    }
}

/// The node watcher: marks `OFFLINE` the nodes silent for longer than the TTL, unless the
/// control plane has watched for less than one TTL (nodes may not have been able to
/// heartbeat meanwhile).
pub async fn mark_offline(state: &AppState) {
    let ttl_ms = state.settings().node_ttl.as_millis() as i64;
    let now = now_millis();
    if !state.watch().watched(now, ttl_ms) {
        return;
    }
    let outcome = state.store().mark_offline_nodes(now, ttl_ms).await;
    state.watch().saw(&outcome, now_millis());
    match outcome {
        Ok(nodes) => {
            if !nodes.is_empty() {
                state.wake().events_written();
            }
            for node in nodes {
                state.beats().forget(&node.node_id);
                tracing::warn!(node_id = %node.node_id, "node went OFFLINE: no heartbeat within the TTL");
            }
        }
        Err(e) => tracing::error!(error = ?anyhow::Error::from(e), "node watcher failed"),
    }
}

/// The lost-node sweep: once the control plane has watched for `BERTH_NODE_LOST_SECS`, each app
/// without volumes on a node `OFFLINE` that long gets one redeploy elsewhere (SPEC §8).
pub async fn redeploy_lost(state: &AppState) {
    match crate::service::nodes::redeploy_lost(state).await {
        Ok(done) => {
            for app_id in &done.held {
                tracing::warn!(app_id = %app_id, "node lost: app has volumes, held until POST /admin/apps/{{appId}}/evacuate");
            }
        }
        // An outage is told to the watch by the other sweeps of the same pass.
        Err(e) => tracing::error!(error = ?anyhow::Error::from(e), "lost-node sweep failed"),
    }
}
