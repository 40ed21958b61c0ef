//! The runner's loop: long-poll for a job whenever a slot is free, run up to `concurrency` jobs
//! at once, and on shutdown stop claiming and give running jobs the grace period to finish.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::agent::AgentClient;
use crate::config::Settings;
use crate::control::ControlClient;
use crate::job::{self, Context};
use crate::metrics::{self, Metrics};

/// Runs the runner until `shutdown` completes, then lets running jobs finish within
/// `settings.shutdown_grace` and returns. Fails only when the control plane refuses the runner
/// itself (a wrong token) or the metrics address cannot be bound; an unreachable control plane
/// is waited out.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let stop_metrics = CancellationToken::new();
    let metrics_server = match settings.metrics_addr {
        Some(addr) => {
            let stop = stop_metrics.clone();
            let (bound, task) =
                metrics::serve(addr, metrics.clone(), async move { stop.cancelled().await })
                    .await?;
            tracing::info!(%bound, "metrics at http://{bound}/metrics");
            Some(task)
        }
        None => None,
    };
    let result = claim_and_work(settings, metrics, shutdown).await;
    stop_metrics.cancel();
    if let Some(task) = metrics_server {
        let _ = task.await;
    }
    result
}

/// [`run`]'s loop, with the metrics it keeps.
async fn claim_and_work(
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()?;
    let control = ControlClient::new(
        http.clone(),
        &settings.control_url,
        settings.runner_token.clone(),
        &settings.runner_id,
        settings.retry,
        metrics.control_errors.clone(),
    );
    let agents = AgentClient::new(http, settings.retry, metrics.agent_errors.clone());
    let ctx = Arc::new(Context {
        settings,
        control,
        agents,
        metrics,
    });
    let slots = Arc::new(Semaphore::new(ctx.settings.concurrency));
    let abandon = CancellationToken::new();
    let mut jobs = JoinSet::new();
    tracing::info!(
        runner_id = %ctx.settings.runner_id,
        control = %ctx.settings.control_url,
        concurrency = ctx.settings.concurrency,
        "runner started"
    );
    tokio::pin!(shutdown);

    let refused = loop {
        while jobs.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot?,
            () = &mut shutdown => break None,
        };
        // Dropping a claim in flight is safe: a job it may have taken returns when its lease expires.
        let claimed = tokio::select! {
            claimed = ctx.control.claim(ctx.settings.claim_wait) => claimed,
            () = &mut shutdown => break None,
        };
        match claimed {
            Ok(Some(claim)) => {
                ctx.metrics.claims_job.inc();
                let ctx = ctx.clone();
                let abandon = abandon.clone();
                jobs.spawn(async move {
                    job::execute(ctx, claim, abandon).await;
                    drop(slot);
                });
            }
            Ok(None) => {
                ctx.metrics.claims_empty.inc();
            }
            Err(e) if !e.transient => {
                ctx.metrics.claims_failed.inc();
                break Some(e);
            }
            Err(e) => {
                ctx.metrics.claims_failed.inc();
                tracing::warn!(error = %e, "cannot claim; trying again");
                tokio::select! {
                    () = tokio::time::sleep(ctx.settings.retry.max_delay) => {}
                    () = &mut shutdown => break None,
                }
            }
        }
    };

    if !jobs.is_empty() {
        tracing::info!(running = jobs.len(), grace = ?ctx.settings.shutdown_grace, "stopped claiming; letting running jobs finish");
    }
    let finished = tokio::time::timeout(ctx.settings.shutdown_grace, async {
        while jobs.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            left = jobs.len(),
            "shutdown grace over; leaving the remaining jobs to their leases"
        );
        abandon.cancel();
        while jobs.join_next().await.is_some() {}
    }
    match refused {
        Some(e) => Err(anyhow::anyhow!(
            "the control plane refused this runner: {e}"
        )),
        None => {
            tracing::info!("runner stopped");
            Ok(())
        }
    }
}
