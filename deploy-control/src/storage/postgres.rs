//! PostgreSQL storage. Claims lock pending rows with `FOR UPDATE SKIP LOCKED`, so claimers never
//! wait on each other; a partial unique index keeps one running job per app. The statements are
//! `sql/postgres.sql`'s; this module tunes the claim: its pick reads each job's placement and
//! app run in the same statement, and a batch's claims are written in one statement.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::claim::Candidate;
use super::primitives::{database_primitives, Lock, Pick, Read, Tuned};
use super::rows::{JobJson, PickRow};
use super::sql::postgres as statements;
use super::sql::Bind;
use super::transitions::SqlStore;
use super::{StoreError, StoreResult};
use crate::queue::events::job_event;
use crate::queue::machine::next_app_run;
use crate::queue::{AppRunRecord, JobRecord, Millis, OutboxEvent};

database_primitives! {
    handle: Postgres,
    conn: PgConn,
    // The apps' last-known runs the claim's picks read, by job `seq`, for its write.
    keeps: { runs: HashMap<i64, Option<AppRunRecord>> },
    driver: sqlx::Postgres,
    connection: sqlx::PgConnection,
    statements: statements,
    cache_nodes: true,
    hold_outbox: true,
    insert_job: returning_seq,
    claim_retry: retry,
}

/// Storage on PostgreSQL.
pub type PgStore = SqlStore<Postgres>;

/// Connects and applies the migrations in `migrations/postgres`.
pub async fn connect(url: &str) -> anyhow::Result<PgStore> {
    // Every statement here is a prepared OLTP shape whose best plan does not depend on its
    // values; planning each execution anew (PostgreSQL's default for many of them) cost a
    // quarter of the database's CPU in a claim. No JIT: the claim's pick is estimated above
    // `jit_above_cost` once ~100,000 jobs are pending (its generic plan guesses a tenth of
    // them), and compiling it took ~18 ms of a 0.3 ms statement on every execution — claim
    // p99 at 100,000 pending was 3.7× that at 1,000 until this (docs/benchmarks-scale.md).
    let options: PgConnectOptions = url.parse()?;
    let options = options.options([("plan_cache_mode", "force_generic_plan"), ("jit", "off")]);
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(super::ACQUIRE_TIMEOUT)
        // No ping before each use (a round trip per transaction): a connection the server
        // closed fails its statement once, and the pool drops it.
        .test_before_acquire(false)
        .connect_with(options)
        .await?;
    sqlx::migrate!("../migrations/postgres").run(&pool).await?;
    Ok(SqlStore::new(Postgres { pool }))
}

/// Two claims can pick two jobs of one app at once; the unique index on running jobs lets one
/// win and the other run again at once (it then sees the app busy and moves on), up to three
/// times.
fn retry(error: &StoreError, tries: u32) -> Option<Duration> {
    match error {
        StoreError::Database(sqlx::Error::Database(e)) if e.is_unique_violation() && tries < 3 => {
            Some(Duration::ZERO)
        }
        _ => None,
    }
}

type Tx = PgConn<sqlx::Transaction<'static, sqlx::Postgres>>;

#[async_trait]
impl Tuned for Tx {
    async fn pick(&mut self, pick: Pick<'_>) -> StoreResult<Vec<Candidate>> {
        let rows: Vec<PickRow> = sqlx::query_as(statements::PICK)
            .bind(pick.now)
            .bind(pick.skipped)
            .bind(pick.want as i64)
            .fetch_all(&mut *self.c)
            .await?;
        let mut picked = Vec::with_capacity(rows.len());
        for row in rows {
            let (job, placement, run) = row.split()?;
            self.runs.insert(job.seq, run);
            picked.push(Candidate { job, placement });
        }
        Ok(picked)
    }

    async fn save_transition(&mut self, job: &JobRecord) -> StoreResult<()> {
        let prev = self.app_run(&job.app_id, Lock::None).await?;
        save_after(self, job, prev.as_ref()).await
    }

    async fn save_claimed(&mut self, jobs: &[&JobRecord]) -> StoreResult<()> {
        if let [job] = jobs {
            let prev = self.runs.remove(&job.seq).flatten();
            return save_after(self, job, prev.as_ref()).await;
        }
        let runs: Vec<AppRunRecord> = jobs
            .iter()
            .filter_map(|job| next_app_run(self.runs.remove(&job.seq).flatten().as_ref(), job))
            .collect();
        save_claims(self, jobs, &runs).await
    }
}

/// Saves a job that changed state when the app's previous run is known: one statement, the
/// event and the app run written by data-modifying CTEs around the job's update, so a claim
/// costs as few round trips as possible.
async fn save_after(tx: &mut Tx, job: &JobRecord, prev: Option<&AppRunRecord>) -> StoreResult<()> {
    let json = JobJson::of(job)?;
    let event = job_event(job);
    match next_app_run(prev, job) {
        Some(run) => {
            let q = Bind(sqlx::query(statements::SAVE_WITH_RUN)).event(&event);
            let q = Bind(q).app_run(&run);
            Bind(q).job_update(job, &json).execute(&mut *tx.c).await?;
        }
        None => {
            let q = Bind(sqlx::query(statements::SAVE)).event(&event);
            Bind(q).job_update(job, &json).execute(&mut *tx.c).await?;
        }
    }
    Ok(())
}

/// Saves the jobs a batch claimed — their rows, their events and their apps' runs — in one
/// statement: each column travels as one array.
async fn save_claims(tx: &mut Tx, jobs: &[&JobRecord], runs: &[AppRunRecord]) -> StoreResult<()> {
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
    sqlx::query(statements::SAVE_CLAIMS)
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
        .execute(&mut *tx.c)
        .await?;
    Ok(())
}
