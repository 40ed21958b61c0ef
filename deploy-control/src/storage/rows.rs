//! Rows as the databases return them, and their conversion to the domain records (and of a
//! job's JSON columns back to text).
//!
//! Columns are plain text and integers in every database, so one set of row types serves all.

use berth_shared::sealed::SealedEnv;
use berth_shared::wire::{AttemptOutcome, Capacity, JobKind, JobState, NodeState, Scheduling};
use uuid::Uuid;

use super::{StoreError, StoreResult};
use crate::queue::attempt::AttemptRecord;
use crate::queue::credential::NodeCredential;
use crate::queue::{AgentUrlChange, AppRunRecord, JobRecord, LogLine, NodeRecord, Placement};

/// A `deploy_job` row.
#[derive(Debug, sqlx::FromRow)]
pub struct JobRow {
    seq: i64,
    job_id: String,
    app_id: String,
    kind: String,
    state: String,
    payload: String,
    secret_env: String,
    attempt: i32,
    max_attempts: i32,
    run_after: i64,
    node_id: Option<String>,
    runner_id: Option<String>,
    lease_token: Option<String>,
    lease_expires_at: Option<i64>,
    waiting_reason: Option<String>,
    error: Option<String>,
    result: Option<String>,
    version: i64,
    idempotency_key: Option<String>,
    request_hash: Option<String>,
    created_at: i64,
    updated_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

impl TryFrom<JobRow> for JobRecord {
    type Error = StoreError;

    fn try_from(r: JobRow) -> StoreResult<Self> {
        Ok(JobRecord {
            seq: r.seq,
            job_id: Uuid::parse_str(&r.job_id).map_err(|e| corrupt("job_id", e))?,
            kind: JobKind::parse(&r.kind).ok_or_else(|| corrupt("kind", &r.kind))?,
            state: JobState::parse(&r.state).ok_or_else(|| corrupt("state", &r.state))?,
            payload: serde_json::from_str(&r.payload).map_err(|e| corrupt("payload", e))?,
            secret_env: SealedEnv::from_stored(r.secret_env),
            result: r
                .result
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| corrupt("result", e))?,
            app_id: r.app_id,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            run_after: r.run_after,
            node_id: r.node_id,
            runner_id: r.runner_id,
            lease_token: r.lease_token,
            lease_expires_at: r.lease_expires_at,
            waiting_reason: r.waiting_reason,
            error: r.error,
            version: r.version,
            idempotency_key: r.idempotency_key,
            request_hash: r.request_hash,
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        })
    }
}

/// Converts fetched job rows.
pub fn jobs(rows: Vec<JobRow>) -> StoreResult<Vec<JobRecord>> {
    rows.into_iter().map(JobRecord::try_from).collect()
}

/// The JSON columns of a job, serialised once for an insert or update.
pub struct JobJson {
    /// `payload`.
    pub payload: String,
    /// `secret_env`, as sealed.
    pub secret_env: String,
    /// `result`.
    pub result: Option<String>,
}

impl JobJson {
    /// Serialises `job`'s JSON columns.
    pub fn of(job: &JobRecord) -> StoreResult<Self> {
        let ser = |e: serde_json::Error| corrupt("serialise", e);
        Ok(Self {
            payload: serde_json::to_string(&job.payload).map_err(ser)?,
            secret_env: job.secret_env.as_stored().to_owned(),
            result: job
                .result
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(ser)?,
        })
    }
}

/// A `runtime_node` row.
#[derive(Debug, sqlx::FromRow)]
pub struct NodeRow {
    node_id: String,
    name: String,
    agent_base_url: String,
    gateway_base_url: String,
    labels: String,
    cpus: f64,
    memory_mb: i64,
    max_apps: i64,
    reported_apps: String,
    version: String,
    scheduling: String,
    state: String,
    last_heartbeat_at: i64,
    app_count: i64,
    reserved_memory_mb: i64,
    reserved_cpu_millis: i64,
    max_sleeping_apps: i64,
    sleeping_apps: i64,
    previous_agent_base_url: Option<String>,
    agent_url_changed_at: Option<i64>,
}

impl TryFrom<NodeRow> for NodeRecord {
    type Error = StoreError;

    fn try_from(r: NodeRow) -> StoreResult<Self> {
        Ok(NodeRecord {
            labels: serde_json::from_str(&r.labels).map_err(|e| corrupt("labels", e))?,
            reported_apps: serde_json::from_str(&r.reported_apps)
                .map_err(|e| corrupt("reported_apps", e))?,
            scheduling: Scheduling::parse(&r.scheduling)
                .ok_or_else(|| corrupt("scheduling", &r.scheduling))?,
            recorded_state: if r.state == "OFFLINE" {
                NodeState::Offline
            } else {
                NodeState::Online
            },
            capacity: Capacity {
                cpus: r.cpus,
                memory_mb: u64::try_from(r.memory_mb).unwrap_or(0),
                max_apps: u32::try_from(r.max_apps).unwrap_or(0),
                max_sleeping_apps: u32::try_from(r.max_sleeping_apps).unwrap_or(0),
            },
            node_id: r.node_id,
            name: r.name,
            agent_base_url: r.agent_base_url,
            gateway_base_url: r.gateway_base_url,
            version: r.version,
            last_heartbeat_at: r.last_heartbeat_at,
            app_count: r.app_count,
            sleeping_apps: r.sleeping_apps,
            reserved_memory_mb: r.reserved_memory_mb,
            reserved_cpu_millis: r.reserved_cpu_millis,
            agent_url_change: match (r.previous_agent_base_url, r.agent_url_changed_at) {
                (Some(previous), Some(at)) => Some(AgentUrlChange { previous, at }),
                _ => None,
            },
        })
    }
}

/// A `node_credential` row.
#[derive(Debug, sqlx::FromRow)]
pub struct CredentialRow {
    node_id: String,
    credential_hash: String,
    previous_hash: Option<String>,
    created_at: i64,
    rotated_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl From<CredentialRow> for NodeCredential {
    fn from(r: CredentialRow) -> Self {
        NodeCredential {
            node_id: r.node_id,
            credential_hash: r.credential_hash,
            previous_hash: r.previous_hash,
            created_at: r.created_at,
            rotated_at: r.rotated_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// Converts fetched node rows.
pub fn nodes(rows: Vec<NodeRow>) -> StoreResult<Vec<NodeRecord>> {
    rows.into_iter().map(NodeRecord::try_from).collect()
}

/// A job PostgreSQL's claim picked, with its app's placement and last-known run (columns
/// `placed_*` and `run_*`).
#[derive(Debug, sqlx::FromRow)]
pub struct PickRow {
    #[sqlx(flatten)]
    job: JobRow,
    placed_node_id: Option<String>,
    placed_memory_mb: Option<i64>,
    placed_cpu_millis: Option<i64>,
    run_last_job_id: Option<String>,
    run_state: Option<String>,
    run_image: Option<String>,
    run_node_id: Option<String>,
    run_url: Option<String>,
    run_error: Option<String>,
    run_updated_at: Option<i64>,
}

impl PickRow {
    /// The job, its app's placement and its app's last-known run.
    pub fn split(self) -> StoreResult<(JobRecord, Option<Placement>, Option<AppRunRecord>)> {
        let job = JobRecord::try_from(self.job)?;
        let placement = self.placed_node_id.map(|node_id| Placement {
            app_id: job.app_id.clone(),
            node_id,
            memory_mb: self.placed_memory_mb.unwrap_or(0),
            cpu_millis: self.placed_cpu_millis.unwrap_or(0),
        });
        let run = match (self.run_last_job_id, self.run_state) {
            (Some(last), Some(state)) => Some(AppRunRecord {
                app_id: job.app_id.clone(),
                last_job_id: Uuid::parse_str(&last)
                    .map_err(|e| StoreError::Corrupt(format!("app_run.last_job_id: {e}")))?,
                state,
                image: self.run_image,
                node_id: self.run_node_id,
                url: self.run_url,
                error: self.run_error,
                updated_at: self.run_updated_at.unwrap_or(0),
            }),
            _ => None,
        };
        Ok((job, placement, run))
    }
}

/// A `runtime_placement` row.
#[derive(Debug, sqlx::FromRow)]
pub struct PlacementRow {
    app_id: String,
    node_id: String,
    memory_mb: i64,
    cpu_millis: i64,
}

impl From<PlacementRow> for Placement {
    fn from(r: PlacementRow) -> Self {
        Placement {
            app_id: r.app_id,
            node_id: r.node_id,
            memory_mb: r.memory_mb,
            cpu_millis: r.cpu_millis,
        }
    }
}

/// An `app_run` row.
#[derive(Debug, sqlx::FromRow)]
pub struct AppRunRow {
    app_id: String,
    last_job_id: String,
    state: String,
    image: Option<String>,
    node_id: Option<String>,
    url: Option<String>,
    error: Option<String>,
    updated_at: i64,
}

impl TryFrom<AppRunRow> for AppRunRecord {
    type Error = StoreError;

    fn try_from(r: AppRunRow) -> StoreResult<Self> {
        Ok(AppRunRecord {
            last_job_id: Uuid::parse_str(&r.last_job_id).map_err(|e| corrupt("last_job_id", e))?,
            app_id: r.app_id,
            state: r.state,
            image: r.image,
            node_id: r.node_id,
            url: r.url,
            error: r.error,
            updated_at: r.updated_at,
        })
    }
}

/// A `job_log` row.
#[derive(Debug, sqlx::FromRow)]
pub struct LogRow {
    at: i64,
    line: String,
}

impl From<LogRow> for LogLine {
    fn from(r: LogRow) -> Self {
        LogLine {
            at: r.at,
            line: r.line,
        }
    }
}

/// A `job_attempt` row.
#[derive(Debug, sqlx::FromRow)]
pub struct AttemptRow {
    attempt: i32,
    runner_id: String,
    node_id: Option<String>,
    claimed_at: i64,
    ended_at: Option<i64>,
    outcome: Option<String>,
    error: Option<String>,
}

impl TryFrom<AttemptRow> for AttemptRecord {
    type Error = StoreError;

    fn try_from(r: AttemptRow) -> Result<Self, StoreError> {
        let outcome = r
            .outcome
            .map(|o| {
                AttemptOutcome::parse(&o)
                    .ok_or_else(|| StoreError::Corrupt(format!("attempt outcome {o:?}")))
            })
            .transpose()?;
        Ok(AttemptRecord {
            attempt: r.attempt,
            runner_id: r.runner_id,
            node_id: r.node_id,
            claimed_at: r.claimed_at,
            ended_at: r.ended_at,
            outcome,
            error: r.error,
        })
    }
}
