//! SQLite storage, the embedded default. SQLite has no row locks and no `SKIP LOCKED`: the store
//! has one connection, and every change runs in a `BEGIN IMMEDIATE` transaction on it, so
//! changes (claims among them) run one at a time and each sees all the others. WAL lets other
//! processes read meanwhile; `busy_timeout` makes a second writer wait rather than fail.

use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use berth_shared::wire::{NodeHeartbeat, NodeState, Scheduling};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, Transaction};
use uuid::Uuid;

use super::claim::{claim_batch, Candidate, ClaimTx};
use super::rows::{
    self, AppRunRow, Bind, JobJson, JobRow, LogRow, NodeRow, PlacementRow, JOB_COLUMNS,
    NODE_COLUMNS,
};
use super::{
    existing, heartbeat_json, new_record, removes_placement, ClaimBatch, Claimed, Created,
    JobFilter, NewJob, OutboxBatch, OutboxRow, QueueStats, Store, StoreError, StoreResult,
    PRUNE_CHUNK,
};
use crate::queue::events::{job_event, node_event, node_scheduling_event};
use crate::queue::machine::{next_app_run, Report};
use crate::queue::retry::RetryPolicy;
use crate::queue::{AppRunRecord, JobRecord, LogLine, Millis, NodeRecord, OutboxEvent, Placement};

static UPSERT_APP_RUN: LazyLock<String> = LazyLock::new(rows::upsert_app_run_on_conflict);
static UPSERT_NODE: LazyLock<String> = LazyLock::new(rows::upsert_node_on_conflict);

/// Storage in an SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it and its folder when missing) the file `url` names and applies the
    /// migrations in `migrations/sqlite`.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        if let Some(folder) = options
            .get_filename()
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(folder)?;
        }
        // One connection: the single writer that makes every change, claims included, exclusive.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }

    /// The pool, for benchmarks that run the same SQL by hand.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A write transaction: `IMMEDIATE` takes the file's write lock at once, so a transaction
    /// never fails half-way when another process writes.
    async fn write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

async fn insert_event(conn: &mut SqliteConnection, event: &OutboxEvent) -> StoreResult<()> {
    Bind(sqlx::query(rows::INSERT_EVENT))
        .event(event)
        .execute(conn)
        .await?;
    Ok(())
}

async fn select_job(conn: &mut SqliteConnection, job_id: Uuid) -> StoreResult<JobRecord> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM deploy_job WHERE job_id = ?");
    let row: Option<JobRow> = sqlx::query_as(&sql)
        .bind(job_id.to_string())
        .fetch_optional(conn)
        .await?;
    row.ok_or(StoreError::JobNotFound(job_id))?.try_into()
}

/// Writes every mutable column of `job`.
async fn update_job(conn: &mut SqliteConnection, job: &JobRecord) -> StoreResult<()> {
    let json = JobJson::of(job)?;
    Bind(sqlx::query(rows::UPDATE_JOB))
        .job_update(job, &json)
        .execute(conn)
        .await?;
    Ok(())
}

/// Saves a job that changed state: the row, its event and the app's last-known run.
async fn save_transition(conn: &mut SqliteConnection, job: &JobRecord) -> StoreResult<()> {
    update_job(&mut *conn, job).await?;
    insert_event(&mut *conn, &job_event(job)).await?;
    let prev: Option<AppRunRow> = sqlx::query_as("SELECT * FROM app_run WHERE app_id = ?")
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

async fn find_by_key(conn: &mut SqliteConnection, key: &str) -> StoreResult<Option<JobRecord>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM deploy_job WHERE idempotency_key = ?");
    let row: Option<JobRow> = sqlx::query_as(&sql).bind(key).fetch_optional(conn).await?;
    row.map(JobRecord::try_from).transpose()
}

/// Reserves room for an app on a node; false when the node has none left.
async fn reserve(
    conn: &mut SqliteConnection,
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
async fn release(conn: &mut SqliteConnection, placement: &Placement) -> StoreResult<()> {
    Bind(sqlx::query(rows::RELEASE))
        .release(placement)
        .execute(conn)
        .await?;
    Ok(())
}

/// A claim's transaction in SQLite's single writer.
struct SqliteClaim<'c> {
    conn: &'c mut SqliteConnection,
}

#[async_trait]
impl ClaimTx for SqliteClaim<'_> {
    async fn pick(
        &mut self,
        now: Millis,
        skipped: &[i64],
        want: usize,
    ) -> StoreResult<Vec<Candidate>> {
        let mut pick = rows::pick_jobs(now, skipped, want, "");
        let rows: Vec<JobRow> = pick.build_query_as().fetch_all(&mut *self.conn).await?;
        let mut picked = Vec::with_capacity(rows.len());
        for row in rows {
            let job = JobRecord::try_from(row)?;
            let placement: Option<Placement> =
                sqlx::query_as::<_, PlacementRow>(rows::SELECT_PLACEMENT)
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
                 ON CONFLICT (app_id) DO UPDATE SET node_id = excluded.node_id, memory_mb = excluded.memory_mb, \
                 cpu_millis = excluded.cpu_millis, updated_at = excluded.updated_at",
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

impl SqliteStore {
    async fn try_claim(&self, batch: &ClaimBatch) -> StoreResult<Vec<Claimed>> {
        let mut tx = self.write().await?;
        let nodes: Vec<NodeRow> = sqlx::query_as(&format!(
            "SELECT {NODE_COLUMNS} FROM runtime_node ORDER BY node_id"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let nodes = Arc::new(rows::nodes(nodes)?);
        let outcome = claim_batch(&mut SqliteClaim { conn: &mut tx }, nodes, batch).await?;
        tx.commit().await?;
        Ok(outcome.claimed)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_job(&self, new: NewJob) -> StoreResult<Created> {
        let mut tx = self.write().await?;
        if let Some(key) = &new.idempotency_key {
            if let Some(job) = find_by_key(&mut tx, key).await? {
                return existing(job, &new.request_hash);
            }
        }
        let mut job = new_record(&new);
        let json = JobJson::of(&job)?;
        let done = Bind(sqlx::query(rows::INSERT_JOB))
            .new_job(&job, &json)
            .execute(&mut *tx)
            .await?;
        job.seq = done.last_insert_rowid();
        for (key, value) in &job.payload.labels {
            sqlx::query("INSERT INTO job_label (job_seq, `key`, value) VALUES (?, ?, ?)")
                .bind(job.seq)
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
        select_job(&mut *self.pool.acquire().await?, job_id).await
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
        let mut tx = self.write().await?;
        let mut job = select_job(&mut tx, job_id).await?;
        job.cancel(now)?;
        save_transition(&mut tx, &job).await?;
        tx.commit().await?;
        Ok(job)
    }

    async fn claim_jobs(&self, batch: &ClaimBatch) -> StoreResult<Vec<Claimed>> {
        // The single writer sees every earlier claim: no race to retry.
        self.try_claim(batch).await
    }

    async fn renew_lease(
        &self,
        job_id: Uuid,
        lease_token: &str,
        expires_at: Millis,
        now: Millis,
    ) -> StoreResult<JobRecord> {
        let mut tx = self.write().await?;
        let mut job = select_job(&mut tx, job_id).await?;
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
        let mut tx = self.write().await?;
        let job = select_job(&mut tx, job_id).await?;
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
        let mut tx = self.write().await?;
        let mut job = select_job(&mut tx, job_id).await?;
        job.report(lease_token, report, policy, now)?;
        save_transition(&mut tx, &job).await?;
        if removes_placement(&job) {
            let gone: Option<PlacementRow> = sqlx::query_as(
                "DELETE FROM runtime_placement WHERE app_id = ? RETURNING app_id, node_id, memory_mb, cpu_millis",
            )
            .bind(&job.app_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(p) = gone.map(Placement::from) {
                release(&mut tx, &p).await?;
            }
        }
        tx.commit().await?;
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
        let mut tx = self.write().await?;
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM deploy_job WHERE state = 'RUNNING' AND lease_expires_at <= ? ORDER BY seq LIMIT 100"
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
        let mut tx = self.write().await?;
        let before: Option<String> =
            sqlx::query_scalar("SELECT state FROM runtime_node WHERE node_id = ?")
                .bind(&hb.node_id)
                .fetch_optional(&mut *tx)
                .await?;
        let row: NodeRow = Bind(sqlx::query(&UPSERT_NODE))
            .heartbeat(hb, heartbeat_json(hb)?, now)
            .try_map(|row| <NodeRow as sqlx::FromRow<_>>::from_row(&row))
            .fetch_one(&mut *tx)
            .await?;
        let node = NodeRecord::try_from(row)?;
        if before.as_deref() != Some("ONLINE") {
            insert_event(&mut tx, &node_event(&node, NodeState::Online, now)).await?;
        }
        tx.commit().await?;
        Ok(node)
    }

    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        let found: Vec<NodeRow> = sqlx::query_as(&format!(
            "SELECT {NODE_COLUMNS} FROM runtime_node ORDER BY node_id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows::nodes(found)
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
        let mut tx = self.write().await?;
        let sql = format!(
            "UPDATE runtime_node SET scheduling = ? WHERE node_id = ? RETURNING {NODE_COLUMNS}"
        );
        let row: Option<NodeRow> = sqlx::query_as(&sql)
            .bind(scheduling.as_str())
            .bind(node_id)
            .fetch_optional(&mut *tx)
            .await?;
        let node =
            NodeRecord::try_from(row.ok_or_else(|| StoreError::NodeNotFound(node_id.to_owned()))?)?;
        insert_event(&mut tx, &node_scheduling_event(&node, now)).await?;
        tx.commit().await?;
        Ok(node)
    }

    async fn mark_offline_nodes(&self, now: Millis, ttl_ms: i64) -> StoreResult<Vec<NodeRecord>> {
        let mut tx = self.write().await?;
        let sql = format!(
            "UPDATE runtime_node SET state = 'OFFLINE' WHERE state = 'ONLINE' AND last_heartbeat_at < ? RETURNING {NODE_COLUMNS}"
        );
        let found: Vec<NodeRow> = sqlx::query_as(&sql)
            .bind(now - ttl_ms)
            .fetch_all(&mut *tx)
            .await?;
        let mut gone = rows::nodes(found)?;
        gone.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        for node in &gone {
            insert_event(&mut tx, &node_event(node, NodeState::Offline, now)).await?;
        }
        tx.commit().await?;
        Ok(gone)
    }

    async fn stats(&self) -> StoreResult<QueueStats> {
        let counts: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM deploy_job GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        Ok(QueueStats::from_counts(counts))
    }

    async fn claim_outbox(&self, limit: u32) -> StoreResult<Box<dyn OutboxBatch>> {
        // No lock is held while the relay publishes: the single connection would block every
        // change meanwhile. One process writes the file and runs one relay, so no other relay
        // takes these rows.
        let events: Vec<OutboxRow> = sqlx::query_as(
            "SELECT seq, event_id, routing_key, body, created_at FROM outbox_event \
             WHERE published_at IS NULL ORDER BY seq LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(Box::new(SqliteBatch {
            store: self.clone(),
            events,
        }))
    }

    async fn prune_outbox(&self, before: Millis, unpublished_too: bool) -> StoreResult<u64> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "DELETE FROM outbox_event WHERE seq IN (SELECT seq FROM outbox_event \
             WHERE (published_at IS NOT NULL AND published_at < ?) OR (? AND created_at < ?) \
             LIMIT ?)",
        )
        .bind(before)
        .bind(unpublished_too)
        .bind(before)
        .bind(PRUNE_CHUNK)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}

/// A relay's batch on SQLite: read without a lock, marked in one short write.
struct SqliteBatch {
    store: SqliteStore,
    events: Vec<OutboxRow>,
}

#[async_trait]
impl OutboxBatch for SqliteBatch {
    fn events(&self) -> &[OutboxRow] {
        &self.events
    }

    async fn mark_published(self: Box<Self>, seqs: &[i64], now: Millis) -> StoreResult<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut tx = self.store.write().await?;
        let mut q = rows::mark_published::<Sqlite>(now, seqs);
        q.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}
