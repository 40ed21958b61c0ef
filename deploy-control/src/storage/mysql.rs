//! MySQL / MariaDB storage. Claims lock one pending row with `FOR UPDATE SKIP LOCKED` (MariaDB
//! 10.6+, MySQL 8+); a unique index on a generated column (`running_app`, the app id while the
//! job is `RUNNING`, else NULL) keeps one running job per app, as PostgreSQL's partial index does.
//!
//! Every connection runs at `READ COMMITTED`, like PostgreSQL: each statement sees what others
//! committed before it, and locking reads take no gap locks that would make claimers wait on
//! each other. MariaDB has no `UPDATE … RETURNING`, so changes are read back with a `SELECT`.

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use berth_shared::wire::{NodeHeartbeat, NodeState, Scheduling};
use rand::Rng;
use sqlx::mysql::{MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::{Executor, MySql, QueryBuilder, Transaction};
use uuid::Uuid;

use super::claim::{claim_batch, Candidate, ClaimTx};
use super::node_cache::NodeCache;
use super::rows::{
    self, set_values, AppRunRow, Bind, JobJson, JobRow, LogRow, PlacementRow, JOB_COLUMNS,
    NODE_COLUMNS,
};
use super::{
    existing, heartbeat_json, in_order, new_record, removes_placement, ClaimBatch, Claimed,
    Created, JobFilter, NewJob, OutboxBatch, OutboxRow, QueueStats, Store, StoreError, StoreResult,
    PRUNE_CHUNK,
};
use crate::queue::events::{job_event, node_event, node_scheduling_event};
use crate::queue::machine::{next_app_run, Report};
use crate::queue::retry::RetryPolicy;
use crate::queue::{AppRunRecord, JobRecord, LogLine, Millis, NodeRecord, OutboxEvent, Placement};

/// MariaDB's "deadlock found": InnoDB rolled the transaction back and it may simply run again.
const ER_LOCK_DEADLOCK: &str = "40001";

/// How many times a claim that lost a race or a deadlock runs again before it fails.
const CLAIM_TRIES: u64 = 10;

static UPSERT_APP_RUN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} ON DUPLICATE KEY UPDATE {}",
        rows::INSERT_APP_RUN,
        set_values(&rows::APP_RUN_COLUMNS)
    )
});
static UPSERT_NODE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} ON DUPLICATE KEY UPDATE {}, state = 'ONLINE', last_heartbeat_at = VALUES(last_heartbeat_at)",
        rows::INSERT_NODE,
        set_values(&rows::HEARTBEAT_COLUMNS)
    )
});

/// Storage on MySQL or MariaDB.
#[derive(Debug, Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
    nodes: Arc<NodeCache>,
}

impl MySqlStore {
    /// Connects and applies the migrations in `migrations/mysql`.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let url = url.replacen("mariadb://", "mysql://", 1);
        let pool = MySqlPoolOptions::new()
            .max_connections(16)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                        .await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        sqlx::migrate!("../migrations/mysql").run(&pool).await?;
        Ok(Self {
            pool,
            nodes: Arc::default(),
        })
    }

    /// The pool, for benchmarks that run the same SQL by hand.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }
}

async fn insert_event(conn: &mut MySqlConnection, event: &OutboxEvent) -> StoreResult<()> {
    Bind(sqlx::query(rows::INSERT_EVENT))
        .event(event)
        .execute(conn)
        .await?;
    Ok(())
}

async fn select_job(
    conn: &mut MySqlConnection,
    job_id: Uuid,
    lock: &str,
) -> StoreResult<JobRecord> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM deploy_job WHERE job_id = ? {lock}");
    let row: Option<JobRow> = sqlx::query_as(&sql)
        .bind(job_id.to_string())
        .fetch_optional(conn)
        .await?;
    row.ok_or(StoreError::JobNotFound(job_id))?.try_into()
}

/// Writes every mutable column of `job`.
async fn update_job(conn: &mut MySqlConnection, job: &JobRecord) -> StoreResult<()> {
    let json = JobJson::of(job)?;
    Bind(sqlx::query(rows::UPDATE_JOB))
        .job_update(job, &json)
        .execute(conn)
        .await?;
    Ok(())
}

/// Saves a job that changed state: the row, its event and the app's last-known run.
async fn save_transition(conn: &mut MySqlConnection, job: &JobRecord) -> StoreResult<()> {
    update_job(&mut *conn, job).await?;
    insert_event(&mut *conn, &job_event(job)).await?;
    let prev: Option<AppRunRow> =
        sqlx::query_as("SELECT * FROM app_run WHERE app_id = ? FOR UPDATE")
            .bind(&job.app_id)
            .fetch_optional(&mut *conn)
            .await?;
    let prev = prev.map(AppRunRecord::try_from).transpose()?;
    if let Some(run) = next_app_run(prev.as_ref(), job) {
        Bind(sqlx::query(&UPSERT_APP_RUN))
            .app_run(&run)
            .execute(conn)
            .await?;
    }
    Ok(())
}

async fn find_by_key(conn: &mut MySqlConnection, key: &str) -> StoreResult<Option<JobRecord>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM deploy_job WHERE idempotency_key = ?");
    let row: Option<JobRow> = sqlx::query_as(&sql).bind(key).fetch_optional(conn).await?;
    row.map(JobRecord::try_from).transpose()
}

async fn select_nodes(
    conn: &mut MySqlConnection,
    ids: Option<&[String]>,
) -> StoreResult<Vec<NodeRecord>> {
    let mut q = QueryBuilder::new(format!("SELECT {NODE_COLUMNS} FROM runtime_node"));
    if let Some(ids) = ids {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        q.push(" WHERE node_id IN (");
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(id.clone());
        }
        q.push(")");
    }
    q.push(" ORDER BY node_id");
    rows::nodes(q.build_query_as().fetch_all(conn).await?)
}

/// Reserves room for an app on a node; false when the node has none left.
async fn reserve(
    conn: &mut MySqlConnection,
    node_id: &str,
    memory_mb: i64,
    cpu_millis: i64,
) -> StoreResult<bool> {
    let done = Bind(sqlx::query(rows::RESERVE))
        .reserve(node_id, memory_mb, cpu_millis)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives back what `placement` reserved.
async fn release(conn: &mut MySqlConnection, placement: &Placement) -> StoreResult<()> {
    Bind(sqlx::query(rows::RELEASE))
        .release(placement)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether a failed claim may simply run again: another claim won the app's running slot
/// (the unique index), or InnoDB chose it as a deadlock victim.
fn retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Database(e)) => {
            e.is_unique_violation() || e.code().as_deref() == Some(ER_LOCK_DEADLOCK)
        }
        _ => false,
    }
}

/// A claim's transaction on MySQL / MariaDB.
struct MySqlClaim<'c> {
    conn: &'c mut MySqlConnection,
}

#[async_trait]
impl ClaimTx for MySqlClaim<'_> {
    async fn pick(
        &mut self,
        now: Millis,
        skipped: &[i64],
        want: usize,
    ) -> StoreResult<Vec<Candidate>> {
        let mut pick = rows::pick_jobs(now, skipped, want, "FOR UPDATE SKIP LOCKED");
        let rows: Vec<JobRow> = pick.build_query_as().fetch_all(&mut *self.conn).await?;
        let mut picked = Vec::with_capacity(rows.len());
        for row in rows {
            let job = JobRecord::try_from(row)?;
            let placement: Option<Placement> = sqlx::query_as::<_, PlacementRow>(&format!(
                "{} FOR UPDATE",
                rows::SELECT_PLACEMENT
            ))
            .bind(&job.app_id)
            .fetch_optional(&mut *self.conn)
            .await?
            .map(Placement::from);
            picked.push(Candidate { job, placement });
        }
        Ok(picked)
    }

    async fn save_waiting(&mut self, job: &JobRecord) -> StoreResult<()> {
        update_job(self.conn, job).await
    }

    async fn reserve(
        &mut self,
        node_id: &str,
        memory_mb: i64,
        cpu_millis: i64,
    ) -> StoreResult<bool> {
        reserve(self.conn, node_id, memory_mb, cpu_millis).await
    }

    async fn release(&mut self, placement: &Placement) -> StoreResult<()> {
        release(self.conn, placement).await
    }

    async fn record_placement(&mut self, placement: &Placement, now: Millis) -> StoreResult<()> {
        sqlx::query(
                "INSERT INTO runtime_placement (app_id, node_id, memory_mb, cpu_millis, updated_at) VALUES (?, ?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE node_id = VALUES(node_id), memory_mb = VALUES(memory_mb), \
                 cpu_millis = VALUES(cpu_millis), updated_at = VALUES(updated_at)",
        )
        .bind(&placement.app_id)
        .bind(&placement.node_id)
        .bind(placement.memory_mb)
        .bind(placement.cpu_millis)
        .bind(now)
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }

    async fn save_claimed(&mut self, jobs: &[&JobRecord]) -> StoreResult<()> {
        for job in jobs {
            save_transition(self.conn, job).await?;
        }
        Ok(())
    }
}

impl MySqlStore {
    async fn try_claim(&self, batch: &ClaimBatch) -> StoreResult<Vec<Claimed>> {
        let nodes = self.nodes.get(batch.now, || self.list_nodes()).await?;
        let mut tx = self.pool.begin().await?;
        let outcome = claim_batch(&mut MySqlClaim { conn: &mut tx }, nodes, batch).await?;
        tx.commit().await?;
        if outcome.nodes_changed {
            self.nodes.forget();
        }
        Ok(outcome.claimed)
    }
}

#[async_trait]
impl Store for MySqlStore {
    async fn create_job(&self, new: NewJob) -> StoreResult<Created> {
        let mut conn = self.pool.acquire().await?;
        if let Some(key) = &new.idempotency_key {
            if let Some(job) = find_by_key(&mut conn, key).await? {
                return existing(job, &new.request_hash);
            }
        }
        let mut job = new_record(&new);
        let json = JobJson::of(&job)?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let inserted = Bind(sqlx::query(rows::INSERT_JOB))
            .new_job(&job, &json)
            .execute(&mut *tx)
            .await;
        let seq = match inserted {
            Ok(done) => i64::try_from(done.last_insert_id())
                .map_err(|e| StoreError::Corrupt(format!("seq: {e}")))?,
            Err(sqlx::Error::Database(e))
                if e.is_unique_violation() && new.idempotency_key.is_some() =>
            {
                // A concurrent create with the same key won the insert.
                drop(tx);
                let key = new.idempotency_key.as_deref().unwrap_or_default();
                let job = find_by_key(&mut conn, key)
                    .await?
                    .ok_or(StoreError::JobNotFound(new.job_id))?;
                return existing(job, &new.request_hash);
            }
            Err(e) => return Err(e.into()),
        };
        job.seq = seq;
        for (key, value) in &job.payload.labels {
            sqlx::query("INSERT INTO job_label (job_seq, `key`, value) VALUES (?, ?, ?)")
                .bind(seq)
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        insert_event(&mut tx, &job_event(&job)).await?;
        tx.commit().await?;
        Ok(Created::New(job))
    }

    async fn get_job(&self, job_id: Uuid) -> StoreResult<JobRecord> {
        select_job(&mut *self.pool.acquire().await?, job_id, "").await
    }

    async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<JobRecord>> {
        let mut q = QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM deploy_job j WHERE TRUE"));
        if let Some(app) = &filter.app_id {
            q.push(" AND j.app_id = ").push_bind(app.clone());
        }
        if let Some(state) = filter.state {
            q.push(" AND j.state = ").push_bind(state.as_str());
        }
        if let Some((key, value)) = &filter.label {
            q.push(" AND EXISTS (SELECT 1 FROM job_label l WHERE l.job_seq = j.seq AND l.`key` = ")
                .push_bind(key.clone())
                .push(" AND l.value = ")
                .push_bind(value.clone())
                .push(")");
        }
        if let Some(before) = filter.before_seq {
            q.push(" AND j.seq < ").push_bind(before);
        }
        q.push(" ORDER BY j.seq DESC LIMIT ")
            .push_bind(i64::from(filter.limit));
        let found: Vec<JobRow> = q.build_query_as().fetch_all(&self.pool).await?;
        rows::jobs(found)
    }

    async fn cancel_job(&self, job_id: Uuid, now: Millis) -> StoreResult<JobRecord> {
        let mut tx = self.pool.begin().await?;
        let mut job = select_job(&mut tx, job_id, "FOR UPDATE").await?;
        job.cancel(now)?;
        save_transition(&mut tx, &job).await?;
        tx.commit().await?;
        Ok(job)
    }

    async fn claim_jobs(&self, batch: &ClaimBatch) -> StoreResult<Vec<Claimed>> {
        // Two claims can pick two jobs of one app at once; the unique index on running jobs
        // lets one win and the other try again (it then sees the app busy and moves on).
        // InnoDB also picks deadlock victims among batches whose writes take gap locks on
        // neighbouring keys of the unique indexes; a victim waits a little, at random, so
        // victims that retry together do not meet again.
        let mut tries = 0;
        loop {
            match self.try_claim(batch).await {
                Err(e) if retryable(&e) && tries < CLAIM_TRIES => {
                    tries += 1;
                    let pause = rand::thread_rng().gen_range(1..=5 * tries);
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                other => return other,
            }
        }
    }

    async fn renew_lease(
        &self,
        job_id: Uuid,
        lease_token: &str,
        expires_at: Millis,
        now: Millis,
    ) -> StoreResult<JobRecord> {
        let mut tx = self.pool.begin().await?;
        let mut job = select_job(&mut tx, job_id, "FOR UPDATE").await?;
        job.renew(lease_token, expires_at, now)?;
        update_job(&mut tx, &job).await?;
        tx.commit().await?;
        Ok(job)
    }

    async fn append_logs(
        &self,
        job_id: Uuid,
        lease_token: &str,
        lines: &[String],
        now: Millis,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // A shared lock: logs may arrive alongside a heartbeat, but not after a report.
        let job = select_job(&mut tx, job_id, "LOCK IN SHARE MODE").await?;
        job.check_lease(lease_token)?;
        if !lines.is_empty() {
            let mut q = QueryBuilder::new("INSERT INTO job_log (job_id, at, line) ");
            q.push_values(lines, |mut b, line| {
                b.push_bind(job_id.to_string())
                    .push_bind(now)
                    .push_bind(line.clone());
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn report_job(
        &self,
        job_id: Uuid,
        lease_token: &str,
        report: Report,
        policy: &RetryPolicy,
        now: Millis,
    ) -> StoreResult<JobRecord> {
        let mut tx = self.pool.begin().await?;
        let mut job = select_job(&mut tx, job_id, "FOR UPDATE").await?;
        job.report(lease_token, report, policy, now)?;
        save_transition(&mut tx, &job).await?;
        if removes_placement(&job) {
            let gone: Option<PlacementRow> =
                sqlx::query_as("SELECT app_id, node_id, memory_mb, cpu_millis FROM runtime_placement WHERE app_id = ? FOR UPDATE")
                    .bind(&job.app_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(p) = gone.map(Placement::from) {
                sqlx::query("DELETE FROM runtime_placement WHERE app_id = ?")
                    .bind(&p.app_id)
                    .execute(&mut *tx)
                    .await?;
                release(&mut tx, &p).await?;
            }
        }
        tx.commit().await?;
        if removes_placement(&job) {
            self.nodes.forget();
        }
        Ok(job)
    }

    async fn job_logs(&self, job_id: Uuid) -> StoreResult<Vec<LogLine>> {
        self.get_job(job_id).await?;
        let found: Vec<LogRow> =
            sqlx::query_as("SELECT at, line FROM job_log WHERE job_id = ? ORDER BY id")
                .bind(job_id.to_string())
                .fetch_all(&self.pool)
                .await?;
        Ok(found.into_iter().map(LogLine::from).collect())
    }

    async fn expire_leases(
        &self,
        policy: &RetryPolicy,
        now: Millis,
    ) -> StoreResult<Vec<JobRecord>> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM deploy_job WHERE state = 'RUNNING' AND lease_expires_at <= ? \
             ORDER BY seq LIMIT 100 FOR UPDATE SKIP LOCKED"
        );
        let found: Vec<JobRow> = sqlx::query_as(&sql).bind(now).fetch_all(&mut *tx).await?;
        let mut changed = rows::jobs(found)?;
        for job in &mut changed {
            job.expire_lease(policy, now)?;
            save_transition(&mut tx, job).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn app_run(&self, app_id: &str) -> StoreResult<Option<AppRunRecord>> {
        let row: Option<AppRunRow> = sqlx::query_as("SELECT * FROM app_run WHERE app_id = ?")
            .bind(app_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(AppRunRecord::try_from).transpose()
    }

    async fn node_heartbeat(&self, hb: &NodeHeartbeat, now: Millis) -> StoreResult<NodeRecord> {
        let mut tx = self.pool.begin().await?;
        let before: Option<String> =
            sqlx::query_scalar("SELECT state FROM runtime_node WHERE node_id = ? FOR UPDATE")
                .bind(&hb.node_id)
                .fetch_optional(&mut *tx)
                .await?;
        Bind(sqlx::query(&UPSERT_NODE))
            .heartbeat(hb, heartbeat_json(hb)?, now)
            .execute(&mut *tx)
            .await?;
        let node = select_nodes(&mut tx, Some(std::slice::from_ref(&hb.node_id)))
            .await?
            .pop()
            .ok_or_else(|| StoreError::NodeNotFound(hb.node_id.clone()))?;
        if before.as_deref() != Some("ONLINE") {
            insert_event(&mut tx, &node_event(&node, NodeState::Online, now)).await?;
        }
        tx.commit().await?;
        self.nodes.forget();
        Ok(node)
    }

    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        select_nodes(&mut *self.pool.acquire().await?, None).await
    }

    async fn list_placements(&self) -> StoreResult<Vec<Placement>> {
        let found: Vec<PlacementRow> = sqlx::query_as(
            "SELECT app_id, node_id, memory_mb, cpu_millis FROM runtime_placement ORDER BY app_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(found.into_iter().map(Placement::from).collect())
    }

    async fn set_scheduling(
        &self,
        node_id: &str,
        scheduling: Scheduling,
        now: Millis,
    ) -> StoreResult<NodeRecord> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE runtime_node SET scheduling = ? WHERE node_id = ?")
            .bind(scheduling.as_str())
            .bind(node_id)
            .execute(&mut *tx)
            .await?;
        let ids = [node_id.to_owned()];
        let node = select_nodes(&mut tx, Some(&ids))
            .await?
            .pop()
            .ok_or_else(|| StoreError::NodeNotFound(node_id.to_owned()))?;
        insert_event(&mut tx, &node_scheduling_event(&node, now)).await?;
        tx.commit().await?;
        self.nodes.forget();
        Ok(node)
    }

    async fn mark_offline_nodes(&self, now: Millis, ttl_ms: i64) -> StoreResult<Vec<NodeRecord>> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT node_id FROM runtime_node WHERE state = 'ONLINE' AND last_heartbeat_at < ? ORDER BY node_id FOR UPDATE SKIP LOCKED",
        )
        .bind(now - ttl_ms)
        .fetch_all(&mut *tx)
        .await?;
        for id in &ids {
            sqlx::query("UPDATE runtime_node SET state = 'OFFLINE' WHERE node_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let gone = select_nodes(&mut tx, Some(&ids)).await?;
        for node in &gone {
            insert_event(&mut tx, &node_event(node, NodeState::Offline, now)).await?;
        }
        tx.commit().await?;
        self.nodes.forget();
        Ok(gone)
    }

    async fn stats(&self) -> StoreResult<QueueStats> {
        let counts: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, CAST(COUNT(*) AS SIGNED) FROM deploy_job GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        Ok(QueueStats::from_counts(counts))
    }

    async fn claim_outbox(&self, limit: u32) -> StoreResult<Box<dyn OutboxBatch>> {
        // READ COMMITTED (every connection): the locking read takes no gap lock, so jobs keep
        // inserting events while a relay holds its batch.
        let mut tx = self.pool.begin().await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT seq, event_id, routing_key, body, created_at FROM outbox_event \
             WHERE published_at IS NULL ORDER BY seq LIMIT ? FOR UPDATE SKIP LOCKED",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let events = match rows.last() {
            Some(last) => {
                // Earlier unpublished rows we did not get: another relay holds them.
                let mut q = QueryBuilder::new(
                    "SELECT seq, body FROM outbox_event WHERE published_at IS NULL AND seq < ",
                );
                q.push_bind(last.seq).push(" AND seq NOT IN (");
                let mut list = q.separated(", ");
                for row in &rows {
                    list.push_bind(row.seq);
                }
                q.push(")");
                let elsewhere: Vec<(i64, String)> = q.build_query_as().fetch_all(&mut *tx).await?;
                in_order(rows, &elsewhere)
            }
            None => rows,
        };
        Ok(Box::new(MySqlBatch { tx, events }))
    }

    async fn prune_outbox(&self, before: Millis, unpublished_too: bool) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM outbox_event WHERE (published_at IS NOT NULL AND published_at < ?) \
             OR (? AND created_at < ?) ORDER BY seq LIMIT ?",
        )
        .bind(before)
        .bind(unpublished_too)
        .bind(before)
        .bind(PRUNE_CHUNK)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

/// A relay's batch: the rows stay locked by `tx` until it commits or rolls back.
struct MySqlBatch {
    tx: Transaction<'static, MySql>,
    events: Vec<OutboxRow>,
}

#[async_trait]
impl OutboxBatch for MySqlBatch {
    fn events(&self) -> &[OutboxRow] {
        &self.events
    }

    async fn mark_published(mut self: Box<Self>, seqs: &[i64], now: Millis) -> StoreResult<()> {
        if !seqs.is_empty() {
            let mut q = rows::mark_published::<MySql>(now, seqs);
            q.build().execute(&mut *self.tx).await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}
