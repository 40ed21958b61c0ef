//! PostgreSQL storage. Claims lock one pending row with `FOR UPDATE SKIP LOCKED`, so claimers
//! never wait on each other; a partial unique index keeps one running job per app.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use berth_shared::wire::{NodeHeartbeat, NodeState, Scheduling};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, QueryBuilder, Transaction};
use uuid::Uuid;

use super::claim::{claim_batch, Candidate, ClaimTx};
use super::node_cache::NodeCache;
use super::rows::{
    self, numbered, AppRunRow, Bind, JobJson, JobRow, LogRow, NodeRow, PlacementRow, JOB_COLUMNS,
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

/// The shared statements of [`rows`], numbered for PostgreSQL once.
static INSERT_EVENT: LazyLock<String> = LazyLock::new(|| numbered(rows::INSERT_EVENT));
static INSERT_JOB: LazyLock<String> = LazyLock::new(|| {
    numbered(&format!(
        "{} ON CONFLICT (idempotency_key) DO NOTHING RETURNING seq",
        rows::INSERT_JOB
    ))
});
static UPDATE_JOB: LazyLock<String> = LazyLock::new(|| numbered(rows::UPDATE_JOB));
static UPSERT_NODE: LazyLock<String> = LazyLock::new(|| numbered(&rows::upsert_node_on_conflict()));
static RESERVE: LazyLock<String> = LazyLock::new(|| numbered(rows::RESERVE));
static RELEASE: LazyLock<String> = LazyLock::new(|| numbered(rows::RELEASE));
/// A job's update with its event, in one statement.
static SAVE: LazyLock<String> = LazyLock::new(|| {
    numbered(&format!(
        "WITH event AS ({}) {}",
        rows::INSERT_EVENT,
        rows::UPDATE_JOB
    ))
});
/// A job's update with its event and the app's last-known run, in one statement.
static SAVE_WITH_RUN: LazyLock<String> = LazyLock::new(|| {
    numbered(&format!(
        "WITH event AS ({}), run AS ({}) {}",
        rows::INSERT_EVENT,
        rows::upsert_app_run_on_conflict(),
        rows::UPDATE_JOB
    ))
});
/// The claims of one batch in one statement: their events, their apps' runs and their rows,
/// one array per column ([`save_claims`]); the job columns are [`rows::UPDATE_JOB`]'s.
static SAVE_CLAIMS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH event AS (INSERT INTO outbox_event (event_id, routing_key, body, created_at) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])), \
         run AS (INSERT INTO app_run (app_id, last_job_id, state, image, node_id, url, error, updated_at) \
         SELECT * FROM unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[]) \
         ON CONFLICT (app_id) DO UPDATE SET {}) \
         UPDATE deploy_job d SET state = u.state, attempt = u.attempt, run_after = u.run_after, node_id = u.node_id, \
         runner_id = u.runner_id, lease_token = u.lease_token, lease_expires_at = u.lease_expires_at, \
         waiting_reason = u.waiting_reason, error = u.error, result = u.result, version = u.version, \
         updated_at = u.updated_at, started_at = u.started_at, finished_at = u.finished_at \
         FROM unnest($13::text[], $14::int[], $15::bigint[], $16::text[], $17::text[], $18::text[], $19::bigint[], \
         $20::text[], $21::text[], $22::text[], $23::bigint[], $24::bigint[], $25::bigint[], $26::bigint[], $27::bigint[]) \
         AS u(state, attempt, run_after, node_id, runner_id, lease_token, lease_expires_at, waiting_reason, error, \
         result, version, updated_at, started_at, finished_at, seq) WHERE d.seq = u.seq",
        rows::set_excluded(&rows::APP_RUN_COLUMNS)
    )
});

/// The claim's pick: the oldest claimable jobs (at most `$3`), locked, with their apps'
/// placements and last-known runs in the same round trip.
static PICK: LazyLock<String> = LazyLock::new(|| {
    // The jobs are picked (and locked) alone, so the index on pending jobs stops at the last
    // match; the joins then touch one row. `OFFSET 0` keeps the running-job check a per-row
    // probe of the index on running jobs: as an anti-join, statistics taken while few jobs ran
    // (before a burst of claims) made the planner scan every running job for every pick. The
    // older-pending check stays an anti-join: as a probe, missing statistics led the planner
    // to the pending-jobs index and a scan of it per row. The generic plan guesses that
    // `LIMIT $3` keeps a tenth of the pending jobs, and would hash-join every placement and
    // run against them; `LATERAL … LIMIT 1` keeps those joins one index lookup per picked job.
    format!(
        "WITH j AS (SELECT {JOB_COLUMNS} FROM deploy_job c WHERE c.state = 'PENDING' AND c.run_after <= $1 \
         AND NOT (c.seq = ANY($2)) \
         AND NOT EXISTS (SELECT 1 FROM deploy_job b WHERE b.app_id = c.app_id AND b.state = 'RUNNING' OFFSET 0) \
         AND NOT EXISTS (SELECT 1 FROM deploy_job o WHERE o.app_id = c.app_id AND o.state = 'PENDING' AND o.seq < c.seq) \
         ORDER BY c.seq LIMIT $3 FOR UPDATE SKIP LOCKED) \
         SELECT j.*, p.node_id AS placed_node_id, p.memory_mb AS placed_memory_mb, p.cpu_millis AS placed_cpu_millis, \
         r.last_job_id AS run_last_job_id, r.state AS run_state, r.image AS run_image, r.node_id AS run_node_id, \
         r.url AS run_url, r.error AS run_error, r.updated_at AS run_updated_at \
         FROM j LEFT JOIN LATERAL (SELECT * FROM runtime_placement p WHERE p.app_id = j.app_id LIMIT 1) p ON TRUE \
         LEFT JOIN LATERAL (SELECT * FROM app_run r WHERE r.app_id = j.app_id LIMIT 1) r ON TRUE \
         ORDER BY j.seq"
    )
});

/// A picked job with its app's placement and last-known run.
#[derive(Debug, sqlx::FromRow)]
struct PickRow {
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
    fn split(self) -> StoreResult<(JobRecord, Option<Placement>, Option<AppRunRecord>)> {
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

/// Storage on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    nodes: Arc<NodeCache>,
}

impl PgStore {
    /// Connects and applies the migrations in `migrations/postgres`.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        // Every statement here is a prepared OLTP shape whose best plan does not depend on
        // its values; planning each execution anew (PostgreSQL's default for many of them)
        // cost a quarter of the database's CPU in a claim.
        let options: sqlx::postgres::PgConnectOptions = url.parse()?;
        let options = options.options([("plan_cache_mode", "force_generic_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // No ping before each use (a round trip per transaction): a connection the
            // server closed fails its statement once, and the pool drops it.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(Self {
            pool,
            nodes: Arc::default(),
        })
    }

    /// The pool, for benchmarks that run the same SQL by hand.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

async fn insert_event(conn: &mut PgConnection, event: &OutboxEvent) -> StoreResult<()> {
    Bind(sqlx::query(&INSERT_EVENT))
        .event(event)
        .execute(conn)
        .await?;
    Ok(())
}

async fn lock_job(conn: &mut PgConnection, job_id: Uuid) -> StoreResult<JobRecord> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM deploy_job WHERE job_id = $1 FOR UPDATE");
    let row: Option<JobRow> = sqlx::query_as(&sql)
        .bind(job_id.to_string())
        .fetch_optional(conn)
        .await?;
    row.ok_or(StoreError::JobNotFound(job_id))?.try_into()
}

/// Writes every mutable column of `job`.
async fn update_job(conn: &mut PgConnection, job: &JobRecord) -> StoreResult<()> {
    let json = JobJson::of(job)?;
    Bind(sqlx::query(&UPDATE_JOB))
        .job_update(job, &json)
        .execute(conn)
        .await?;
    Ok(())
}

/// Saves a job that changed state: the row, its event and the app's last-known run.
async fn save_transition(conn: &mut PgConnection, job: &JobRecord) -> StoreResult<()> {
    let prev: Option<AppRunRow> = sqlx::query_as("SELECT * FROM app_run WHERE app_id = $1")
        .bind(&job.app_id)
        .fetch_optional(&mut *conn)
        .await?;
    let prev = prev.map(AppRunRecord::try_from).transpose()?;
    save_transition_after(conn, job, prev.as_ref()).await
}

/// [`save_transition`] when the app's previous run is already known: one statement, the
/// event and the app run written by data-modifying CTEs around the job's update, so a claim
/// costs as few round trips as possible.
async fn save_transition_after(
    conn: &mut PgConnection,
    job: &JobRecord,
    prev: Option<&AppRunRecord>,
) -> StoreResult<()> {
    let json = JobJson::of(job)?;
    let event = job_event(job);
    match next_app_run(prev, job) {
        Some(run) => {
            let q = Bind(sqlx::query(&SAVE_WITH_RUN)).event(&event);
            let q = Bind(q).app_run(&run);
            Bind(q).job_update(job, &json).execute(conn).await?;
        }
        None => {
            let q = Bind(sqlx::query(&SAVE)).event(&event);
            Bind(q).job_update(job, &json).execute(conn).await?;
        }
    }
    Ok(())
}

async fn find_by_key(conn: &mut PgConnection, key: &str) -> StoreResult<Option<JobRecord>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM deploy_job WHERE idempotency_key = $1");
    let row: Option<JobRow> = sqlx::query_as(&sql).bind(key).fetch_optional(conn).await?;
    row.map(JobRecord::try_from).transpose()
}

/// Reserves room for an app on a node; false when the node has none left.
async fn reserve(
    conn: &mut PgConnection,
    node_id: &str,
    memory_mb: i64,
    cpu_millis: i64,
) -> StoreResult<bool> {
    let done = Bind(sqlx::query(&RESERVE))
        .reserve(node_id, memory_mb, cpu_millis)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives back what `placement` reserved.
async fn release(conn: &mut PgConnection, placement: &Placement) -> StoreResult<()> {
    Bind(sqlx::query(&RELEASE))
        .release(placement)
        .execute(conn)
        .await?;
    Ok(())
}

/// A claim's transaction on PostgreSQL. It keeps the apps' last-known runs its picks read, and
/// writes every claim of the batch in one statement ([`save_claims`]).
struct PgClaim<'c> {
    conn: &'c mut PgConnection,
    runs: HashMap<i64, Option<AppRunRecord>>,
}

#[async_trait]
impl ClaimTx for PgClaim<'_> {
    async fn pick(
        &mut self,
        now: Millis,
        skipped: &[i64],
        want: usize,
    ) -> StoreResult<Vec<Candidate>> {
        let rows: Vec<PickRow> = sqlx::query_as(&PICK)
            .bind(now)
            .bind(skipped)
            .bind(want as i64)
            .fetch_all(&mut *self.conn)
            .await?;
        let mut picked = Vec::with_capacity(rows.len());
        for row in rows {
            let (job, placement, run) = row.split()?;
            self.runs.insert(job.seq, run);
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
            "INSERT INTO runtime_placement (app_id, node_id, memory_mb, cpu_millis, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (app_id) DO UPDATE SET node_id = EXCLUDED.node_id, memory_mb = EXCLUDED.memory_mb, \
             cpu_millis = EXCLUDED.cpu_millis, updated_at = EXCLUDED.updated_at",
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
        if let [job] = jobs {
            let prev = self.runs.remove(&job.seq).flatten();
            return save_transition_after(self.conn, job, prev.as_ref()).await;
        }
        let runs: Vec<AppRunRecord> = jobs
            .iter()
            .filter_map(|job| next_app_run(self.runs.remove(&job.seq).flatten().as_ref(), job))
            .collect();
        save_claims(self.conn, jobs, &runs).await
    }
}

/// Saves the jobs a batch claimed — their rows, their events and their apps' runs — in one
/// statement: each column travels as one array.
async fn save_claims(
    conn: &mut PgConnection,
    jobs: &[&JobRecord],
    runs: &[AppRunRecord],
) -> StoreResult<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let events: Vec<OutboxEvent> = jobs.iter().map(|job| job_event(job)).collect();
    // Of the JSON columns a claim changes none but `result` (kept from an earlier attempt).
    let results = jobs
        .iter()
        .map(|job| job.result.as_ref().map(serde_json::to_string).transpose())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Corrupt(format!("serialise result: {e}")))?;
    let column =
        |f: fn(&JobRecord) -> Option<String>| jobs.iter().map(|j| f(j)).collect::<Vec<_>>();
    let millis =
        |f: fn(&JobRecord) -> Option<Millis>| jobs.iter().map(|j| f(j)).collect::<Vec<_>>();
    sqlx::query(&SAVE_CLAIMS)
        .bind(
            events
                .iter()
                .map(|e| e.event_id.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.routing_key.clone())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.body.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.created_at).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.app_id.clone()).collect::<Vec<_>>())
        .bind(
            runs.iter()
                .map(|r| r.last_job_id.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(runs.iter().map(|r| r.state.clone()).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.image.clone()).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.node_id.clone()).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.url.clone()).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.error.clone()).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.updated_at).collect::<Vec<_>>())
        .bind(column(|j| Some(j.state.as_str().to_owned())))
        .bind(jobs.iter().map(|j| j.attempt).collect::<Vec<_>>())
        .bind(millis(|j| Some(j.run_after)))
        .bind(column(|j| j.node_id.clone()))
        .bind(column(|j| j.runner_id.clone()))
        .bind(column(|j| j.lease_token.clone()))
        .bind(millis(|j| j.lease_expires_at))
        .bind(column(|j| j.waiting_reason.clone()))
        .bind(column(|j| j.error.clone()))
        .bind(results)
        .bind(millis(|j| Some(j.version)))
        .bind(millis(|j| Some(j.updated_at)))
        .bind(millis(|j| j.started_at))
        .bind(millis(|j| j.finished_at))
        .bind(millis(|j| Some(j.seq)))
        .execute(conn)
        .await?;
    Ok(())
}

impl PgStore {
    async fn try_claim(&self, batch: &ClaimBatch) -> StoreResult<Vec<Claimed>> {
        let nodes = self.nodes.get(batch.now, || self.list_nodes()).await?;
        let mut tx = self.pool.begin().await?;
        let mut claim = PgClaim {
            conn: &mut tx,
            runs: HashMap::new(),
        };
        let outcome = claim_batch(&mut claim, nodes, batch).await?;
        tx.commit().await?;
        if outcome.nodes_changed {
            self.nodes.forget();
        }
        Ok(outcome.claimed)
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_job(&self, new: NewJob) -> StoreResult<Created> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        if let Some(key) = &new.idempotency_key {
            if let Some(job) = find_by_key(&mut tx, key).await? {
                return existing(job, &new.request_hash);
            }
        }
        let mut job = new_record(&new);
        let json = JobJson::of(&job)?;
        let seq: Option<i64> = Bind(sqlx::query(&INSERT_JOB))
            .new_job(&job, &json)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| sqlx::Row::get(&row, 0));
        let Some(seq) = seq else {
            // A concurrent create with the same key won the insert.
            drop(tx);
            let key = new.idempotency_key.as_deref().unwrap_or_default();
            let job = find_by_key(&mut conn, key)
                .await?
                .ok_or(StoreError::JobNotFound(new.job_id))?;
            return existing(job, &new.request_hash);
        };
        job.seq = seq;
        for (key, value) in &job.payload.labels {
            sqlx::query("INSERT INTO job_label (job_seq, key, value) VALUES ($1, $2, $3)")
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
        let sql = format!("SELECT {JOB_COLUMNS} FROM deploy_job WHERE job_id = $1");
        let row: Option<JobRow> = sqlx::query_as(&sql)
            .bind(job_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.ok_or(StoreError::JobNotFound(job_id))?.try_into()
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
            q.push(" AND EXISTS (SELECT 1 FROM job_label l WHERE l.job_seq = j.seq AND l.key = ")
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
        let mut job = lock_job(&mut tx, job_id).await?;
        job.cancel(now)?;
        save_transition(&mut tx, &job).await?;
        tx.commit().await?;
        Ok(job)
    }

    async fn claim_jobs(&self, batch: &ClaimBatch) -> StoreResult<Vec<Claimed>> {
        // Two claims can pick two jobs of one app at once; the unique index on running jobs
        // lets one win and the other try again (it then sees the app busy and moves on).
        let mut tries = 0;
        loop {
            match self.try_claim(batch).await {
                Err(StoreError::Database(sqlx::Error::Database(e)))
                    if e.is_unique_violation() && tries < 3 =>
                {
                    tries += 1
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
        let mut job = lock_job(&mut tx, job_id).await?;
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
        let sql = format!("SELECT {JOB_COLUMNS} FROM deploy_job WHERE job_id = $1 FOR SHARE");
        let row: Option<JobRow> = sqlx::query_as(&sql)
            .bind(job_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let job = JobRecord::try_from(row.ok_or(StoreError::JobNotFound(job_id))?)?;
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
        let mut job = lock_job(&mut tx, job_id).await?;
        job.report(lease_token, report, policy, now)?;
        save_transition(&mut tx, &job).await?;
        if removes_placement(&job) {
            let gone: Option<PlacementRow> = sqlx::query_as(
                "DELETE FROM runtime_placement WHERE app_id = $1 RETURNING app_id, node_id, memory_mb, cpu_millis",
            )
            .bind(&job.app_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(p) = gone.map(Placement::from) {
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
            sqlx::query_as("SELECT at, line FROM job_log WHERE job_id = $1 ORDER BY id")
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
            "SELECT {JOB_COLUMNS} FROM deploy_job WHERE state = 'RUNNING' AND lease_expires_at <= $1 \
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
        let row: Option<AppRunRow> = sqlx::query_as("SELECT * FROM app_run WHERE app_id = $1")
            .bind(app_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(AppRunRecord::try_from).transpose()
    }

    async fn node_heartbeat(&self, hb: &NodeHeartbeat, now: Millis) -> StoreResult<NodeRecord> {
        let mut tx = self.pool.begin().await?;
        let before: Option<String> =
            sqlx::query_scalar("SELECT state FROM runtime_node WHERE node_id = $1 FOR UPDATE")
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
        self.nodes.forget();
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
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE runtime_node SET scheduling = $2 WHERE node_id = $1 RETURNING {NODE_COLUMNS}"
        );
        let row: Option<NodeRow> = sqlx::query_as(&sql)
            .bind(node_id)
            .bind(scheduling.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let node =
            NodeRecord::try_from(row.ok_or_else(|| StoreError::NodeNotFound(node_id.to_owned()))?)?;
        insert_event(&mut tx, &node_scheduling_event(&node, now)).await?;
        tx.commit().await?;
        self.nodes.forget();
        Ok(node)
    }

    async fn mark_offline_nodes(&self, now: Millis, ttl_ms: i64) -> StoreResult<Vec<NodeRecord>> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE runtime_node SET state = 'OFFLINE' WHERE node_id IN (SELECT node_id FROM runtime_node \
             WHERE state = 'ONLINE' AND last_heartbeat_at < $1 FOR UPDATE SKIP LOCKED) RETURNING {NODE_COLUMNS}"
        );
        let found: Vec<NodeRow> = sqlx::query_as(&sql)
            .bind(now - ttl_ms)
            .fetch_all(&mut *tx)
            .await?;
        let gone = rows::nodes(found)?;
        for node in &gone {
            insert_event(&mut tx, &node_event(node, NodeState::Offline, now)).await?;
        }
        tx.commit().await?;
        self.nodes.forget();
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
        let mut tx = self.pool.begin().await?;
        // The partial index on unpublished rows serves both statements.
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT seq, event_id, routing_key, body, created_at FROM outbox_event \
             WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let events = match rows.last() {
            Some(last) => {
                let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
                // Earlier unpublished rows we did not get: another relay holds them.
                let elsewhere: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT seq, body FROM outbox_event WHERE published_at IS NULL AND seq < $1 \
                     AND NOT (seq = ANY($2))",
                )
                .bind(last.seq)
                .bind(&seqs)
                .fetch_all(&mut *tx)
                .await?;
                in_order(rows, &elsewhere)
            }
            None => rows,
        };
        Ok(Box::new(PgBatch { tx, events }))
    }

    async fn prune_outbox(&self, before: Millis, unpublished_too: bool) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM outbox_event WHERE seq IN (SELECT seq FROM outbox_event \
             WHERE (published_at IS NOT NULL AND published_at < $1) OR ($2 AND created_at < $1) \
             LIMIT $3)",
        )
        .bind(before)
        .bind(unpublished_too)
        .bind(PRUNE_CHUNK)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

/// A relay's batch: the rows stay locked by `tx` until it commits or rolls back.
struct PgBatch {
    tx: Transaction<'static, Postgres>,
    events: Vec<OutboxRow>,
}

#[async_trait]
impl OutboxBatch for PgBatch {
    fn events(&self) -> &[OutboxRow] {
        &self.events
    }

    async fn mark_published(mut self: Box<Self>, seqs: &[i64], now: Millis) -> StoreResult<()> {
        if !seqs.is_empty() {
            sqlx::query("UPDATE outbox_event SET published_at = $1 WHERE seq = ANY($2)")
                .bind(now)
                .bind(seqs)
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}
