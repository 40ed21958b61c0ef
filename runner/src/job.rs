//! One claimed job, from claim to report: keep the lease alive, do the work, stream the log,
//! report the outcome.
//!
//! The lease is the runner's only right to act. Heartbeats renew it every third of its length;
//! when the control plane says it is gone (`409`: it expired and another runner claimed the
//! job), the work stops where it is and nothing is reported — the new holder redoes the job,
//! and the agent's per-job idempotency keeps a deploy that already happened from happening again.
//! Each heartbeat also renews the claim's agent grants ([`crate::grants`]), which end with the
//! lease: a runner that lost its lease can no longer act at any agent. A report the control
//! plane cannot answer (its database away) is tried again until it does: the lease is not given
//! up to the control plane's own outage.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_shared::image::credentials_fit;
use berth_shared::wire::agent::{AgentDeployRequest, RegistryAuth};
use berth_shared::wire::{ClaimResponse, JobKind, JobResult, NodeRef, Outcome, ReportRequest};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::agent::AgentClient;
use crate::build;
use crate::config::Settings;
use crate::control::ControlClient;
use crate::error::JobError;
use crate::grants::JobGrants;
use crate::joblog::{self, JobLog};
use crate::metrics::Metrics;
use crate::retry::RetryPolicy;

/// Shortest heartbeat interval, whatever the lease.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// Pause between two rounds of a report's retries while the control plane cannot answer.
const REPORT_PAUSE: Duration = Duration::from_secs(1);

/// What every job needs: settings and clients.
#[derive(Debug)]
pub struct Context {
    /// The runner's settings.
    pub settings: Settings,
    /// The control plane.
    pub control: ControlClient,
    /// The agents.
    pub agents: AgentClient,
    /// What `/metrics` shows.
    pub metrics: Arc<Metrics>,
}

/// Works on `claim` until it is reported, the lease is lost, or `abandon` fires (the shutdown
/// grace ran out; the lease then expires and another runner finishes the job).
pub async fn execute(ctx: Arc<Context>, claim: ClaimResponse, abandon: CancellationToken) {
    let job_id = claim.job.job_id;
    let span = tracing::info_span!("job", %job_id, app_id = %claim.job.app_id, attempt = claim.job.attempt);
    ctx.metrics.jobs_running.inc();
    async move {
        let token = claim.lease.token.clone();
        let lease_lost = CancellationToken::new();
        let lease_len = (claim.lease.expires_at - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
        let grants = Arc::new(JobGrants::of(&claim));
        let lease = Lease { job_id, token: token.clone(), grants: grants.clone() };
        let heartbeats = tokio::spawn(heartbeat(ctx.control.clone(), lease, lease_len, lease_lost.clone()));
        let (log, flusher) = joblog::spawn(ctx.control.clone(), job_id, token.clone(), lease_lost.clone());

        let outcome = tokio::select! {
            result = work(&ctx, &claim, &grants, &log) => Some(result),
            () = lease_lost.cancelled() => None,
            () = abandon.cancelled() => None,
        };
        let Some(result) = outcome else {
            ctx.metrics.jobs_running.dec();
            ctx.metrics.jobs_abandoned.inc();
            heartbeats.abort();
            flusher.abort();
            if lease_lost.is_cancelled() {
                tracing::warn!("lease lost: another runner holds this job now; stopped without reporting");
            } else {
                tracing::warn!("shutdown grace over: left the job to its lease");
            }
            return;
        };
        let report = match result {
            Ok(result) => {
                log.line("job succeeded").await;
                ReportRequest {
                    runner_id: ctx.control.runner_id().to_owned(),
                    lease_token: token,
                    outcome: Outcome::Succeeded,
                    error: None,
                    retryable: false,
                    result,
                }
            }
            Err(e) => {
                log.line(format!("job failed{}: {}", if e.retryable { " (retryable)" } else { "" }, e.message)).await;
                ReportRequest {
                    runner_id: ctx.control.runner_id().to_owned(),
                    lease_token: token,
                    outcome: Outcome::Failed,
                    error: Some(e.message),
                    retryable: e.retryable,
                    result: None,
                }
            }
        };
        // Every line reaches the control plane before the report makes the job final.
        drop(log);
        let _ = flusher.await;
        ctx.metrics.jobs_running.dec();
        let ended = match report.outcome {
            Outcome::Succeeded => &ctx.metrics.jobs_succeeded,
            Outcome::Failed => &ctx.metrics.jobs_failed,
        };
        ended.inc();
        // The heartbeats go on while the report waits: they keep the lease, and a `409` to them
        // ends the wait.
        let reported = tokio::select! {
            reported = report_until_answered(&ctx.control, job_id, &report) => Some(reported),
            () = lease_lost.cancelled() => None,
            () = abandon.cancelled() => None,
        };
        match reported {
            Some(Ok(())) => tracing::info!(outcome = ?report.outcome, error = report.error.as_deref().unwrap_or(""), "job reported"),
            Some(Err(e)) if e.lease_lost() => tracing::warn!(error = %e, "report refused: the lease is gone (expired, or an earlier try of this report landed)"),
            Some(Err(e)) => tracing::error!(error = %e, "could not report; the lease will expire and the job will run again"),
            None if lease_lost.is_cancelled() => tracing::warn!("lease lost before the report landed: another runner holds this job now"),
            None => tracing::warn!("shutdown grace over before the report landed: left the job to its lease"),
        }
        heartbeats.abort();
    }
    .instrument(span)
    .await
}

/// Reports the outcome, trying again for as long as the control plane cannot answer (its
/// database may be away for longer than one call's retries): the work is done, and the lease
/// still ours until the control plane says otherwise. Ends with the first answer.
async fn report_until_answered(
    control: &ControlClient,
    job_id: uuid::Uuid,
    report: &ReportRequest,
) -> Result<(), crate::retry::CallError> {
    loop {
        match control.report(job_id, report).await {
            Err(e) if e.transient => {
                tracing::warn!(error = %e, "report not answered yet; trying again");
                tokio::time::sleep(REPORT_PAUSE).await;
            }
            answered => return answered,
        }
    }
}

/// What a heartbeat renews: the job's lease and its grants.
struct Lease {
    job_id: uuid::Uuid,
    token: String,
    grants: Arc<JobGrants>,
}

/// Renews the lease (and the grants) every third of its length until aborted; cancels `lost`
/// on a `409`.
async fn heartbeat(
    control: ControlClient,
    lease: Lease,
    lease_len: Duration,
    lost: CancellationToken,
) {
    let every = (lease_len / 3).max(MIN_HEARTBEAT);
    // Retries of one heartbeat must end well before the lease does.
    let policy = RetryPolicy {
        min_delay: every / 8,
        max_delay: every / 4,
        max_times: 3,
    };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match control
            .heartbeat(lease.job_id, &lease.token, lease.grants.all(), &policy)
            .await
        {
            Ok(renewed) => lease.grants.renew(renewed.agent_grants),
            Err(e) if e.lease_lost() => {
                lost.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed; trying again at the next tick"),
        }
    }
}

async fn work(
    ctx: &Context,
    claim: &ClaimResponse,
    grants: &JobGrants,
    log: &JobLog,
) -> Result<Option<JobResult>, JobError> {
    let job = &claim.job;
    log.line(format!(
        "runner {} claimed {} of app {} (attempt {} of {}){}",
        ctx.control.runner_id(),
        job.kind.as_str(),
        job.app_id,
        job.attempt,
        job.max_attempts,
        claim
            .node
            .as_ref()
            .map(|n| format!(" on node {}", n.node_id))
            .unwrap_or_default(),
    ))
    .await;
    match job.kind {
        JobKind::Stop => stop(ctx, claim, grants, log).await.map(|()| None),
        JobKind::Deploy => deploy(ctx, claim, grants, log).await.map(Some),
    }
}

async fn stop(
    ctx: &Context,
    claim: &ClaimResponse,
    grants: &JobGrants,
    log: &JobLog,
) -> Result<(), JobError> {
    let app = &claim.job.app_id;
    let nodes: Vec<&NodeRef> = claim
        .node
        .iter()
        .chain(claim.previous_node.iter())
        .collect();
    if nodes.is_empty() {
        log.line(format!(
            "app {app} was never placed on a node: nothing to stop"
        ))
        .await;
        return Ok(());
    }
    let remove_volumes = claim.job.payload.remove_volumes;
    for node in nodes {
        let stopped = ctx.agents.stop(node, grants, app, remove_volumes).await?;
        let volumes = if remove_volumes {
            format!(", {} volume(s) deleted", stopped.volumes_removed)
        } else {
            String::new()
        };
        log.line(format!(
            "stopped app {app} on node {} ({} container(s) removed{volumes})",
            node.node_id, stopped.removed
        ))
        .await;
    }
    Ok(())
}

async fn deploy(
    ctx: &Context,
    claim: &ClaimResponse,
    grants: &JobGrants,
    log: &JobLog,
) -> Result<JobResult, JobError> {
    let job = &claim.job;
    let payload = &job.payload;
    let Some(node) = &claim.node else {
        return Err(JobError::retryable(
            "the claim named no node to deploy on".into(),
        ));
    };
    let image = match (&payload.build, &payload.image) {
        (Some(spec), _) => {
            let started = std::time::Instant::now();
            let built = build::build_and_push(&ctx.settings, spec, log).await;
            ctx.metrics
                .build_seconds
                .observe(started.elapsed().as_secs_f64());
            built?
        }
        (None, Some(image)) => image.clone(),
        (None, None) => {
            return Err(JobError::fatal(
                "the job has neither an image nor a build".into(),
            ))
        }
    };
    // Secret values join the container's environment here and nowhere else: the log shows names.
    let mut env: BTreeMap<String, String> = payload.env.clone();
    env.extend(claim.secret_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let request = AgentDeployRequest {
        job_id: job.job_id.to_string(),
        app_id: job.app_id.clone(),
        image: image.clone(),
        env,
        container_port: payload.container_port,
        health_check_path: payload.health_check_path.clone(),
        resources: payload.resources,
        volumes: payload.volumes.clone(),
        read_only_rootfs: payload.read_only_rootfs,
        user: payload.user.clone(),
        // The login goes only to the registry it is for: an image from anywhere else is
        // pulled without it.
        registry_auth: ctx
            .settings
            .registry
            .as_ref()
            .filter(|r| credentials_fit(&r.server, &image))
            .map(|r| RegistryAuth {
                username: r.username.clone(),
                password: r.password.expose().to_owned(),
                server_address: Some(r.server.clone()),
            }),
        sleep_after_secs: payload.sleep_after_secs,
        sleep_mode: payload.sleep_mode,
        sleep_waiting_page: payload.sleep_waiting_page,
    };
    let secret_names = if claim.secret_env.is_empty() {
        String::new()
    } else {
        format!(
            " and secrets {}",
            claim
                .secret_env
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    log.line(format!(
        "deploying {image} to node {} at {}{secret_names}",
        node.node_id, node.agent_base_url
    ))
    .await;
    let started = std::time::Instant::now();
    let deployed = ctx.agents.deploy(node, grants, &request).await;
    ctx.metrics
        .deploy_seconds
        .observe(started.elapsed().as_secs_f64());
    let deployed = deployed.map_err(|e| {
        let mut e = JobError::from(e);
        if e.retryable {
            e.message = format!("{}: the app was not deployed", e.message);
        }
        e
    })?;
    log.line(format!(
        "app {} is running in container {} at {}",
        deployed.app_id, deployed.container_id, deployed.url
    ))
    .await;

    if let Some(previous) = claim
        .previous_node
        .as_ref()
        .filter(|p| p.node_id != node.node_id)
    {
        // The app moved: the new container serves, so the old one can go.
        match ctx.agents.stop(previous, grants, &job.app_id, false).await {
            Ok(stopped) => {
                log.line(format!(
                    "stopped the app's old container on node {} ({} removed)",
                    previous.node_id, stopped.removed
                ))
                .await
            }
            Err(e) => {
                log.line(format!(
                    "warning: could not stop the app on its previous node {}: {e}",
                    previous.node_id
                ))
                .await
            }
        }
    }
    Ok(JobResult {
        container_id: Some(deployed.container_id),
        url: Some(deployed.url),
        image: Some(image),
    })
}
