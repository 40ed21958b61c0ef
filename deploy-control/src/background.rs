//! Background sweeps: the lease reaper (expired leases go back to `PENDING` or to `FAILED`)
//! and the node watcher (silent nodes become `OFFLINE`). Every replica runs both; the
//! storage's row locks make concurrent sweeps safe.

use std::future::Future;

use crate::queue::now_millis;
use crate::state::AppState;

/// Runs both sweeps every `sweep_interval` until `shutdown` completes.
pub async fn run(state: AppState, shutdown: impl Future<Output = ()>) {
    let mut tick = tokio::time::interval(state.settings().sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => sweep(&state).await,
        }
    }
}

/// One pass of both sweeps. Errors are logged and the next pass tries again.
pub async fn sweep(state: &AppState) {
    let settings = state.settings();
    match state
        .store()
        .expire_leases(&settings.retry, now_millis())
        .await
    {
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
    match state
        .store()
        .mark_offline_nodes(now_millis(), settings.node_ttl.as_millis() as i64)
        .await
    {
        Ok(nodes) => {
            if !nodes.is_empty() {
                state.wake().events_written();
            }
            for node in nodes {
                tracing::warn!(node_id = %node.node_id, "node went OFFLINE: no heartbeat within the TTL");
            }
        }
        Err(e) => tracing::error!(error = ?anyhow::Error::from(e), "node watcher failed"),
    }
}
