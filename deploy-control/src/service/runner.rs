//! What runners do to jobs: claim one (a long poll woken at once by new work), renew its
//! lease, send log lines, report the outcome. Every call after the claim carries the lease's
//! fencing token; a stale token is a conflict.
//!
//! A claim hands the runner an agent grant per node it names (SPEC §7, [`berth_shared::grant`]):
//! the job's app on that node, until the lease ends; each lease renewal renews them.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_shared::grant::Grant;
use berth_shared::ids::NodeId;
use berth_shared::wire::{
    ClaimRequest, JobHeartbeatRequest, LogsRequest, NodeRef, Outcome, ReportRequest,
};
use tokio::time::Instant;
use uuid::Uuid;

use super::{ServiceError, ServiceResult};
use crate::dispatch::{is_lease_token, new_lease_token};
use crate::queue::machine::Report;
use crate::queue::{now_millis, JobRecord, Millis};
use crate::state::AppState;
use crate::storage::{Claimed, Claimer};
use crate::wake::{Look, RECHECK};

/// Lines one log request may carry.
pub const MAX_LOG_LINES: usize = 1000;
/// Bytes in one log line (longer lines are cut).
pub const MAX_LOG_LINE: usize = 8 * 1024;
/// Bytes of a reported error (longer ones are cut).
pub const MAX_ERROR: usize = 8 * 1024;
/// Grants one heartbeat may renew (a claim hands out two at most: the node and the previous).
pub const MAX_GRANTS: usize = 4;

fn runner_id(id: &str) -> ServiceResult<()> {
    NodeId::parse(id)
        .map(|_| ())
        .map_err(|e| ServiceError::Invalid(format!("runnerId: {}", e.0)))
}

fn lease_token(token: &str) -> ServiceResult<()> {
    if is_lease_token(token) {
        Ok(())
    } else {
        Err(ServiceError::Invalid(
            "leaseToken is not a lease token (32 hex characters from a claim)".into(),
        ))
    }
}

/// A claimed job with its secret values opened and its nodes' grants signed, for the runner
/// that claimed it only.
#[derive(Debug)]
pub struct Handed {
    /// The claim.
    pub claimed: Claimed,
    /// The job's `secretEnv`, in clear.
    pub secret_env: BTreeMap<String, String>,
}

/// Claims a job for the runner, waiting up to `request.wait` seconds for one; `None` when
/// none came. A job whose secret values do not open (sealed with a key `BERTH_SECRET_KEY` no
/// longer holds) fails at once with the reason, and the claim looks further.
pub async fn claim(state: &AppState, request: &ClaimRequest) -> ServiceResult<Option<Handed>> {
    runner_id(&request.runner_id)?;
    let wait = super::jobs::check_wait(Some(request.wait))?;
    let _waiting = Waiting::new(state);
    let started = Instant::now();
    let deadline = started + wait;
    loop {
        // Listen before looking, so a job created while we look wakes us.
        let woken = state.wake().work();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let seq = state.wake().work_seq();
        let looked_at = Instant::now();
        // Without a remembered empty queue, this claim looks again on its own after RECHECK.
        let mut own_recheck = false;
        if let Some(look) = state.wake().should_look(seq, looked_at) {
            let claimer = Claimer {
                runner_id: request.runner_id.clone(),
                lease_token: new_lease_token(),
            };
            if let Some(claimed) = state.claims().claim(claimer).await? {
                state.metrics().claims.inc();
                state
                    .metrics()
                    .claim_wait
                    .observe(started.elapsed().as_secs_f64());
                state.wake().claimed(Instant::now());
                state.wake().job_changed(claimed.job.job_id);
                if look == Look::Recheck {
                    // Claimable by time alone (a backoff ended): others may be too, and
                    // the other waiting claims were not told.
                    state.wake().work_available();
                }
                if let Some(handed) = open_secrets(state, claimed).await? {
                    return Ok(Some(handed));
                }
                continue;
            }
            own_recheck = !state.wake().found_nothing(seq, looked_at);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        // Jobs also become claimable with time; one waiting claim of this process looks for
        // all of them once per `wake::RECHECK` (see `Wake::should_look`).
        let shared = state.wake().next_recheck();
        let recheck = if own_recheck { now + RECHECK } else { shared }
            .max(now + Duration::from_millis(10))
            .min(deadline);
        tokio::select! {
            _ = &mut woken => {}
            _ = tokio::time::sleep_until(recheck) => {}
        }
    }
}

/// Opens the claimed job's secret values; a job whose values do not open is failed (no retry
/// would open them) and `None` returned.
async fn open_secrets(state: &AppState, claimed: Claimed) -> ServiceResult<Option<Handed>> {
    let job = &claimed.job;
    let keys = &state.settings().secrets.secret_key;
    let error = match job.secret_env.open(keys, &job.app_id) {
        Ok(secret_env) => {
            let mut claimed = claimed;
            let (job, nodes) = (
                &claimed.job,
                [&mut claimed.node, &mut claimed.previous_node],
            );
            for node in nodes.into_iter().flatten() {
                node.agent_grant = sign_grant(state, job, node);
            }
            return Ok(Some(Handed {
                claimed,
                secret_env,
            }));
        }
        Err(e) => format!("secretEnv cannot be opened: {e}"),
    };
    tracing::error!(job_id = %job.job_id, app_id = %job.app_id, "{error}");
    let report = Report {
        outcome: Outcome::Failed,
        error: Some(error),
        retryable: false,
        result: None,
    };
    let lease = job.lease_token.clone().unwrap_or_default();
    let failed = state
        .store()
        .report_job(
            job.job_id,
            &lease,
            report,
            &state.settings().retry,
            now_millis(),
        )
        .await?;
    state.wake().job_changed(failed.job_id);
    state.wake().work_available();
    Ok(None)
}

/// A grant for `job`'s app on `node` until the job's lease ends.
fn sign_grant(state: &AppState, job: &JobRecord, node: &NodeRef) -> String {
    state.grants().sign(&Grant {
        job_id: job.job_id,
        attempt: i64::from(job.attempt),
        app_id: job.app_id.to_string(),
        node_id: node.node_id.clone(),
        expires_at: job.lease_expires_at.unwrap_or_default(),
    })
}

/// Counts a claim in the `claims_waiting` gauge while it lives.
struct Waiting<'a>(&'a AppState);

impl<'a> Waiting<'a> {
    fn new(state: &'a AppState) -> Self {
        state.metrics().claims_waiting.inc();
        Self(state)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.metrics().claims_waiting.dec();
    }
}

/// A renewed lease and the grants renewed with it.
#[derive(Debug)]
pub struct Renewed {
    /// When the lease now runs out.
    pub expires_at: Millis,
    /// The renewed grants, by node id.
    pub agent_grants: BTreeMap<String, String>,
}

/// Renews the job's lease and, until its new end, the agent grants the runner holds for it.
/// A presented grant that is not this job's, or that no key of `BERTH_SECRET_KEY` signed, is
/// not renewed (the runner's calls with it then fail at the agent).
pub async fn heartbeat(
    state: &AppState,
    job_id: Uuid,
    request: &JobHeartbeatRequest,
) -> ServiceResult<Renewed> {
    runner_id(&request.runner_id)?;
    lease_token(&request.lease_token)?;
    if request.agent_grants.len() > MAX_GRANTS {
        return Err(ServiceError::Invalid(format!(
            "agentGrants: a job has at most {MAX_GRANTS} grants"
        )));
    }
    let now = now_millis();
    let expires_at = now + state.settings().lease.as_millis() as i64;
    state
        .store()
        .renew_lease(job_id, &request.lease_token, expires_at, now)
        .await?;
    let verifier = state.grants().verifier();
    let mut agent_grants = BTreeMap::new();
    for text in &request.agent_grants {
        match verifier.verify(text) {
            Ok(grant) if grant.job_id == job_id => {
                let renewed = Grant {
                    expires_at,
                    ..grant
                };
                agent_grants.insert(renewed.node_id.clone(), state.grants().sign(&renewed));
            }
            Ok(_) => tracing::warn!(%job_id, "a grant of another job was presented; not renewed"),
            Err(e) => tracing::warn!(%job_id, error = %e, "a presented grant was not renewed"),
        }
    }
    Ok(Renewed {
        expires_at,
        agent_grants,
    })
}

/// Appends log lines to the job (each cut to [`MAX_LOG_LINE`] bytes).
pub async fn logs(state: &AppState, job_id: Uuid, request: LogsRequest) -> ServiceResult<()> {
    lease_token(&request.lease_token)?;
    if request.lines.len() > MAX_LOG_LINES {
        return Err(ServiceError::Invalid(format!(
            "send at most {MAX_LOG_LINES} lines per request"
        )));
    }
    let lines: Vec<String> = request
        .lines
        .into_iter()
        .map(|l| cut(l, MAX_LOG_LINE))
        .collect();
    state
        .store()
        .append_logs(job_id, &request.lease_token, &lines, now_millis())
        .await?;
    Ok(())
}

/// Records the attempt's outcome: the job succeeds, fails, or goes back to `PENDING` for a
/// retry, and the app's next job may become claimable.
pub async fn report(
    state: &AppState,
    job_id: Uuid,
    request: ReportRequest,
) -> ServiceResult<JobRecord> {
    runner_id(&request.runner_id)?;
    lease_token(&request.lease_token)?;
    let report = Report {
        outcome: request.outcome,
        error: request.error.map(|e| cut(e, MAX_ERROR)),
        retryable: request.retryable,
        result: request.result,
    };
    let job = state
        .store()
        .report_job(
            job_id,
            &request.lease_token,
            report,
            &state.settings().retry,
            now_millis(),
        )
        .await?;
    tracing::info!(app_id = %job.app_id, state = job.state.as_str(), "job reported");
    state.wake().job_changed(job_id);
    // The app's next job may be claimable now.
    state.wake().work_available();
    Ok(job)
}

/// Cuts `text` to at most `max` bytes on a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}
