//! Every SQL statement of the store, named. Each database has one file of named, commented
//! statements — `postgres.sql`, `mysql.sql`, `sqlite.sql` beside this module — that `build.rs`
//! turns into the constants of [`postgres`], [`mysql`] and [`sqlite`]. The few statements whose
//! text depends on the call (a filter's conditions, a list of ids, a batch of rows) are built
//! here, once for every database, with `sqlx::QueryBuilder`.

use berth_shared::wire::NodeHeartbeat;
use sqlx::query::Query;
use sqlx::{Database, Encode, QueryBuilder, Type};
use uuid::Uuid;

use super::rows::JobJson;
use super::JobFilter;
use crate::queue::attempt::AttemptRecord;
use crate::queue::{AppRunRecord, JobRecord, Millis, OutboxEvent, Placement};

/// PostgreSQL's statements (`postgres.sql`).
pub mod postgres {
    include!(concat!(env!("OUT_DIR"), "/postgres.rs"));
}

/// MySQL's and MariaDB's statements (`mysql.sql`).
pub mod mysql {
    include!(concat!(env!("OUT_DIR"), "/mysql.rs"));
}

/// SQLite's statements (`sqlite.sql`).
pub mod sqlite {
    include!(concat!(env!("OUT_DIR"), "/sqlite.rs"));
}

/// `GET /deploy/jobs`' query: the jobs matching `filter`, newest first. (`l.key` needs no
/// quotes after its qualifier, even in MySQL, where `KEY` is reserved.)
pub fn list_jobs<'a, DB>(filter: &JobFilter) -> QueryBuilder<'a, DB>
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
    String: Encode<'a, DB> + Type<DB>,
    &'a str: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("SELECT * FROM deploy_job j WHERE TRUE");
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
    q
}

/// The `INSERT` of a job's log lines, all at `now`, in one statement.
pub fn insert_logs<'a, DB>(job_id: Uuid, lines: &[String], now: Millis) -> QueryBuilder<'a, DB>
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("INSERT INTO job_log (job_id, at, line) ");
    q.push_values(lines, |mut b, line| {
        b.push_bind(job_id.to_string())
            .push_bind(now)
            .push_bind(line.clone());
    });
    q
}

/// The `INSERT` of the attempts a claim batch opened (at least one), `(job id, attempt)`, in one
/// statement.
pub fn insert_attempts<'a, DB>(opened: &[(Uuid, AttemptRecord)]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    i32: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
    String: Encode<'a, DB> + Type<DB>,
    Option<String>: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(
        "INSERT INTO job_attempt (job_id, attempt, runner_id, node_id, claimed_at) ",
    );
    q.push_values(opened, |mut b, (job_id, a)| {
        b.push_bind(job_id.to_string())
            .push_bind(a.attempt)
            .push_bind(a.runner_id.clone())
            .push_bind(a.node_id.clone())
            .push_bind(a.claimed_at);
    });
    q
}

/// The unpublished events before `seq` but those in `taken`, `(seq, body)`: the rows another
/// relay holds, which events of the same subject must not overtake.
pub fn unpublished_before<'a, DB>(seq: i64, taken: &[i64]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(
        "SELECT seq, body FROM outbox_event WHERE published_at IS NULL AND seq < ",
    );
    q.push_bind(seq);
    if !taken.is_empty() {
        q.push(" AND seq NOT IN (");
        let mut list = q.separated(", ");
        for seq in taken {
            list.push_bind(*seq);
        }
        q.push(")");
    }
    q
}

/// The one parameter of a flush's statements (`FLUSH_LAST_SEEN`, `STILL_SEEN`,
/// `PLACED_ON_SEEN`): `seen` as a JSON array of `{node_id, at, hash}`, which each database reads
/// as a table (`jsonb_to_recordset`, `JSON_TABLE`, `json_each`), so one statement carries any
/// number of nodes.
pub fn last_seen_json(seen: &[super::LastSeen]) -> Result<String, serde_json::Error> {
    serde_json::to_string(seen)
}

/// `UPDATE` marking the outbox rows `seqs` published at `now`.
pub fn mark_published<'a, DB>(now: Millis, seqs: &[i64]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("UPDATE outbox_event SET published_at = ");
    q.push_bind(now).push(" WHERE seq IN (");
    let mut list = q.separated(", ");
    for seq in seqs {
        list.push_bind(*seq);
    }
    q.push(")");
    q
}

/// `DELETE` of the rows of `table` (`deploy_job`, `job_log` or `job_attempt`) that belong to the jobs `ids`
/// (at least one).
pub fn delete_of_jobs<'a, DB>(table: &'static str, ids: &'a [String]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
{
    of_jobs(format!("DELETE FROM {table}"), ids)
}

/// `(job_id, version)` of the jobs `ids` (at least one) that exist.
pub fn job_versions<'a, DB>(ids: &'a [String]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
{
    of_jobs("SELECT job_id, version FROM deploy_job".to_owned(), ids)
}

/// `statement` limited to the rows of the jobs `ids` (at least one).
fn of_jobs<'a, DB>(statement: String, ids: &'a [String]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(statement);
    q.push(" WHERE job_id IN (");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(id.as_str());
    }
    q.push(")");
    q
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
    let mut pick = sqlx::QueryBuilder::new(
        "SELECT * FROM deploy_job j WHERE j.state = 'PENDING' AND j.run_after <= ",
    );
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

/// Binds the values of the statements that write a job, an event, an app run, a heartbeat or a
/// reservation, in their placeholders' order (the same in every database's file).
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
    /// `INSERT_EVENT`.
    pub fn event(self, event: &'q OutboxEvent) -> Query<'q, DB, <DB as Database>::Arguments<'q>> {
        self.0
            .bind(event.event_id.to_string())
            .bind(event.routing_key.as_str())
            .bind(event.body.as_str())
            .bind(event.created_at)
    }

    /// `INSERT_JOB`.
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

    /// `UPDATE_JOB` (the job's columns of `SAVE…`).
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

    /// `UPSERT_APP_RUN`.
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

    /// `UPSERT_NODE`, with the heartbeat's JSON columns from [`super::heartbeat_json`] and the
    /// count of the apps it reports asleep.
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
            .bind(i64::from(hb.capacity.max_sleeping_apps))
            .bind(super::sleeping_count(hb))
    }

    /// `RESERVE` for `memory_mb` MiB and `cpu_millis` on `node_id`.
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

    /// `RELEASE` of `placement`.
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
