//! Rows as the databases return them, and their conversion to the domain records; and the
//! statements that write them, with their binds, shared by every database.
//!
//! Columns are plain text and integers in every database, so one set of row types serves all.
//! The shared statements are written with `?` placeholders (MySQL and SQLite take them as they
//! are; PostgreSQL numbers them with [`numbered`]) and [`Bind`] binds their values in order.

use berth_shared::wire::{Capacity, JobKind, JobState, NodeHeartbeat, NodeState, Scheduling};
use sqlx::query::Query;
use sqlx::{Database, Encode, Type};
use uuid::Uuid;

use super::{StoreError, StoreResult};
use crate::queue::{AppRunRecord, JobRecord, LogLine, Millis, NodeRecord, OutboxEvent, Placement};

/// The column list every `SELECT` of a job uses, in [`JobRow`]'s order.
pub const JOB_COLUMNS: &str = "seq, job_id, app_id, kind, state, payload, secret_env, attempt, \
    max_attempts, run_after, node_id, runner_id, lease_token, lease_expires_at, waiting_reason, \
    error, result, version, idempotency_key, request_hash, created_at, updated_at, started_at, finished_at";

/// The column list every `SELECT` of a node uses, in [`NodeRow`]'s order.
pub const NODE_COLUMNS: &str = "node_id, name, agent_base_url, gateway_base_url, labels, cpus, \
    memory_mb, max_apps, reported_apps, version, scheduling, state, last_heartbeat_at, app_count, \
    reserved_memory_mb, reserved_cpu_millis";

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
            secret_env: serde_json::from_str(&r.secret_env)
                .map_err(|e| corrupt("secret_env", e))?,
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
    /// `secret_env`.
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
            secret_env: serde_json::to_string(&job.secret_env).map_err(ser)?,
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
            },
            node_id: r.node_id,
            name: r.name,
            agent_base_url: r.agent_base_url,
            gateway_base_url: r.gateway_base_url,
            version: r.version,
            last_heartbeat_at: r.last_heartbeat_at,
            app_count: r.app_count,
            reserved_memory_mb: r.reserved_memory_mb,
            reserved_cpu_millis: r.reserved_cpu_millis,
        })
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

/// The pick of MySQL and SQLite: up to `want` of the oldest claimable jobs but those in
/// `skipped`, followed by `lock` (MySQL's `FOR UPDATE SKIP LOCKED`, nothing in SQLite's single
/// writer). `LIMIT 1` keeps the running-job check a per-row index lookup: without it MariaDB
/// materializes every running job's app once per pick, which under concurrent claims cost tens
/// of milliseconds per claim (docs/benchmarks.md).
pub fn pick_jobs<'a, DB>(
    now: Millis,
    skipped: &[i64],
    want: usize,
    lock: &str,
) -> sqlx::QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut pick = sqlx::QueryBuilder::new(format!(
        "SELECT {JOB_COLUMNS} FROM deploy_job j WHERE j.state = 'PENDING' AND j.run_after <= "
    ));
    pick.push_bind(now);
    for seq in skipped {
        pick.push(" AND j.seq <> ").push_bind(*seq);
    }
    pick.push(
        " AND NOT EXISTS (SELECT 1 FROM deploy_job r WHERE r.app_id = j.app_id AND r.state = 'RUNNING' LIMIT 1) \
         AND NOT EXISTS (SELECT 1 FROM deploy_job o WHERE o.app_id = j.app_id AND o.state = 'PENDING' AND o.seq < j.seq) \
         ORDER BY j.seq LIMIT ",
    );
    // The limit is written into the statement, not bound: with `LIMIT ?` MariaDB no longer
    // walks the pending jobs in `seq` order to stop at the first ones (a claim took 8x longer).
    pick.push(want).push(" ").push(lock);
    pick
}

/// An app's placement (MySQL and SQLite), followed by a lock clause where the database takes
/// one.
pub const SELECT_PLACEMENT: &str =
    "SELECT app_id, node_id, memory_mb, cpu_millis FROM runtime_placement WHERE app_id = ?";

/// `INSERT` of an outbox event; binds with [`Bind::event`].
pub const INSERT_EVENT: &str =
    "INSERT INTO outbox_event (event_id, routing_key, body, created_at) VALUES (?, ?, ?, ?)";

/// `INSERT` of a new job, without a conflict clause (each database adds its own); binds with
/// [`Bind::new_job`].
pub const INSERT_JOB: &str =
    "INSERT INTO deploy_job (job_id, app_id, kind, state, payload, secret_env, attempt, \
    max_attempts, run_after, version, idempotency_key, request_hash, created_at, updated_at) \
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// `UPDATE` of every mutable column of a job; binds with [`Bind::job_update`].
pub const UPDATE_JOB: &str = "UPDATE deploy_job SET state = ?, attempt = ?, run_after = ?, node_id = ?, runner_id = ?, \
    lease_token = ?, lease_expires_at = ?, waiting_reason = ?, error = ?, result = ?, version = ?, updated_at = ?, \
    started_at = ?, finished_at = ? WHERE seq = ?";

/// The `INSERT` part of an `app_run` upsert; binds with [`Bind::app_run`].
pub const INSERT_APP_RUN: &str =
    "INSERT INTO app_run (app_id, last_job_id, state, image, node_id, url, error, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";

/// The `INSERT` part of a node heartbeat upsert; binds with [`Bind::heartbeat`].
pub const INSERT_NODE: &str =
    "INSERT INTO runtime_node (node_id, name, agent_base_url, gateway_base_url, labels, cpus, \
    memory_mb, max_apps, reported_apps, version, scheduling, state, last_heartbeat_at) \
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'ACTIVE', 'ONLINE', ?)";

/// Columns a heartbeat refreshes on a known node (`state` goes back to `ONLINE` separately).
pub const HEARTBEAT_COLUMNS: [&str; 9] = [
    "name",
    "agent_base_url",
    "gateway_base_url",
    "labels",
    "cpus",
    "memory_mb",
    "max_apps",
    "reported_apps",
    "version",
];

/// Columns an `app_run` upsert replaces.
pub const APP_RUN_COLUMNS: [&str; 7] = [
    "last_job_id",
    "state",
    "image",
    "node_id",
    "url",
    "error",
    "updated_at",
];

/// Reserves an app's room on a node, only while the node still has it (the guard against two
/// claims filling the last slot); binds `memory, cpu, node_id, memory, memory, cpu, cpu`.
pub const RESERVE: &str = "UPDATE runtime_node SET app_count = app_count + 1, reserved_memory_mb = reserved_memory_mb + ?, \
    reserved_cpu_millis = reserved_cpu_millis + ? WHERE node_id = ? AND app_count < max_apps \
    AND (? = 0 OR reserved_memory_mb + ? <= memory_mb) AND (? = 0 OR reserved_cpu_millis + ? <= ROUND(cpus * 1000))";

/// Gives back what an app reserved on a node; binds `memory, cpu, node_id`.
pub const RELEASE: &str = "UPDATE runtime_node SET app_count = app_count - 1, reserved_memory_mb = reserved_memory_mb - ?, \
    reserved_cpu_millis = reserved_cpu_millis - ? WHERE node_id = ?";

/// The `app_run` upsert of PostgreSQL and SQLite, with `?` placeholders.
pub fn upsert_app_run_on_conflict() -> String {
    format!(
        "{INSERT_APP_RUN} ON CONFLICT (app_id) DO UPDATE SET {}",
        set_excluded(&APP_RUN_COLUMNS)
    )
}

/// The heartbeat upsert of PostgreSQL and SQLite, returning the node, with `?` placeholders.
pub fn upsert_node_on_conflict() -> String {
    format!(
        "{INSERT_NODE} ON CONFLICT (node_id) DO UPDATE SET {}, state = 'ONLINE', \
         last_heartbeat_at = excluded.last_heartbeat_at RETURNING {NODE_COLUMNS}",
        set_excluded(&HEARTBEAT_COLUMNS)
    )
}

/// `col = EXCLUDED.col, …` for an `ON CONFLICT … DO UPDATE SET` (PostgreSQL, SQLite).
pub fn set_excluded(columns: &[&str]) -> String {
    columns
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `col = VALUES(col), …` for an `ON DUPLICATE KEY UPDATE` (MySQL).
pub fn set_values(columns: &[&str]) -> String {
    columns
        .iter()
        .map(|c| format!("{c} = VALUES({c})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rewrites `?` placeholders as PostgreSQL's `$1, $2, …` (the shared statements hold no `?`
/// inside literals).
pub fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// Binds the values of the shared statements, in their placeholders' order, on any database.
pub struct Bind<'q, DB: Database>(pub Query<'q, DB, <DB as Database>::Arguments<'q>>);

impl<'q, DB: Database> Bind<'q, DB>
where
    i32: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    f64: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    String: Encode<'q, DB> + Type<DB>,
    Option<String>: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
{
    /// [`INSERT_EVENT`].
    pub fn event(self, event: &'q OutboxEvent) -> Query<'q, DB, <DB as Database>::Arguments<'q>> {
        self.0
            .bind(event.event_id.to_string())
            .bind(event.routing_key.as_str())
            .bind(event.body.as_str())
            .bind(event.created_at)
    }

    /// [`INSERT_JOB`].
    pub fn new_job(
        self,
        job: &'q JobRecord,
        json: &'q JobJson,
    ) -> Query<'q, DB, <DB as Database>::Arguments<'q>> {
        self.0
            .bind(job.job_id.to_string())
            .bind(job.app_id.as_str())
            .bind(job.kind.as_str())
            .bind(job.state.as_str())
            .bind(json.payload.as_str())
            .bind(json.secret_env.as_str())
            .bind(job.attempt)
            .bind(job.max_attempts)
            .bind(job.run_after)
            .bind(job.version)
            .bind(job.idempotency_key.clone())
            .bind(job.request_hash.clone())
            .bind(job.created_at)
            .bind(job.updated_at)
    }

    /// [`UPDATE_JOB`].
    pub fn job_update(
        self,
        job: &'q JobRecord,
        json: &'q JobJson,
    ) -> Query<'q, DB, <DB as Database>::Arguments<'q>> {
        self.0
            .bind(job.state.as_str())
            .bind(job.attempt)
            .bind(job.run_after)
            .bind(job.node_id.clone())
            .bind(job.runner_id.clone())
            .bind(job.lease_token.clone())
            .bind(job.lease_expires_at)
            .bind(job.waiting_reason.clone())
            .bind(job.error.clone())
            .bind(json.result.clone())
            .bind(job.version)
            .bind(job.updated_at)
            .bind(job.started_at)
            .bind(job.finished_at)
            .bind(job.seq)
    }

    /// [`INSERT_APP_RUN`].
    pub fn app_run(self, run: &'q AppRunRecord) -> Query<'q, DB, <DB as Database>::Arguments<'q>> {
        self.0
            .bind(run.app_id.as_str())
            .bind(run.last_job_id.to_string())
            .bind(run.state.as_str())
            .bind(run.image.clone())
            .bind(run.node_id.clone())
            .bind(run.url.clone())
            .bind(run.error.clone())
            .bind(run.updated_at)
    }

    /// [`INSERT_NODE`], with the heartbeat's JSON columns from [`super::heartbeat_json`].
    pub fn heartbeat(
        self,
        hb: &'q NodeHeartbeat,
        (labels, apps): (String, String),
        now: Millis,
    ) -> Query<'q, DB, <DB as Database>::Arguments<'q>> {
        self.0
            .bind(hb.node_id.as_str())
            .bind(hb.name.as_str())
            .bind(hb.agent_base_url.as_str())
            .bind(hb.gateway_base_url.as_str())
            .bind(labels)
            .bind(hb.capacity.cpus)
            .bind(i64::try_from(hb.capacity.memory_mb).unwrap_or(i64::MAX))
            .bind(i64::from(hb.capacity.max_apps))
            .bind(apps)
            .bind(hb.version.as_str())
            .bind(now)
    }

    /// [`RESERVE`] for `memory_mb` MiB and `cpu_millis` on `node_id`.
    pub fn reserve(
        self,
        node_id: &'q str,
        memory_mb: i64,
        cpu_millis: i64,
    ) -> Query<'q, DB, <DB as Database>::Arguments<'q>> {
        self.0
            .bind(memory_mb)
            .bind(cpu_millis)
            .bind(node_id)
            .bind(memory_mb)
            .bind(memory_mb)
            .bind(cpu_millis)
            .bind(cpu_millis)
    }

    /// [`RELEASE`] of `placement`.
    pub fn release(
        self,
        placement: &'q Placement,
    ) -> Query<'q, DB, <DB as Database>::Arguments<'q>> {
        self.0
            .bind(placement.memory_mb)
            .bind(placement.cpu_millis)
            .bind(placement.node_id.as_str())
    }
}

/// `UPDATE` marking the outbox rows `seqs` published at `now` (MariaDB and SQLite; PostgreSQL
/// binds the list as one array).
pub fn mark_published<'a, DB>(now: Millis, seqs: &[i64]) -> sqlx::QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut q = sqlx::QueryBuilder::new("UPDATE outbox_event SET published_at = ");
    q.push_bind(now).push(" WHERE seq IN (");
    let mut list = q.separated(", ");
    for seq in seqs {
        list.push_bind(*seq);
    }
    q.push(")");
    q
}
