//! The named operations a database gives the store: [`Read`] and [`Write`] run one statement
//! each, [`Tuned`] holds what each database writes by hand (its claim pick, its insert of a new
//! job, and where it has them, cheaper ways to save a change), and [`Db`] opens connections and
//! transactions. The sequences that make a create, a claim, a report or a heartbeat out of these
//! are written once, in [`super::transitions`] and [`super::claim`].
//!
//! [`Read`], [`Write`] and [`Db`] only bind a named statement and convert its rows, the same way
//! on every database: [`database_primitives!`] writes them for a database's statements module
//! (see [`super::sql`]), so each database module holds only its connection settings and what it
//! tunes.

use std::time::Duration;

use async_trait::async_trait;
use berth_shared::wire::{AttemptOutcome, NodeHeartbeat, Scheduling};
use uuid::Uuid;

use super::claim::Candidate;
use super::rows::JobRow;
use super::{JobFilter, OutboxRow, StoreError, StoreResult};
use crate::queue::attempt::AttemptRecord;
use crate::queue::credential::NodeCredential;
use crate::queue::events::job_event;
use crate::queue::machine::next_app_run;
use crate::queue::{AppRunRecord, JobRecord, LogLine, Millis, NodeRecord, OutboxEvent, Placement};

/// How a read locks the row it reads, where the database locks rows (SQLite's single writer
/// needs none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// A plain read.
    None,
    /// Other readers may share it, no writer may change it (logs beside a heartbeat).
    Share,
    /// No one else may lock or change it until the transaction ends.
    Update,
}

/// What a claim's pick asks for.
#[derive(Debug, Clone, Copy)]
pub struct Pick<'a> {
    /// Now: only jobs whose `run_after` has come.
    pub now: Millis,
    /// Jobs the claim already looked at.
    pub skipped: &'a [i64],
    /// How many jobs, at most.
    pub want: usize,
}

/// A database: its connections and transactions, and how its claims behave.
#[async_trait]
pub trait Db: Clone + Send + Sync + 'static {
    /// A connection from the pool, for reads outside a transaction.
    type Conn: Read + 'static;
    /// A transaction.
    type Tx: Tuned + 'static;
    /// Whether claims decide with the fleet this process keeps between claims
    /// ([`super::node_cache::NodeCache`]: no read of every node per claim), or with the table
    /// read inside their transaction (SQLite, where reading costs no round trip).
    const CACHE_NODES: bool;
    /// Whether a relay's batch keeps its transaction, and the rows' locks, while it publishes
    /// (not SQLite: the single connection would block every change meanwhile).
    const HOLD_OUTBOX: bool;

    /// A connection.
    async fn conn(&self) -> StoreResult<Self::Conn>;

    /// A new transaction.
    async fn begin(&self) -> StoreResult<Self::Tx>;

    /// How long a claim that failed with `error` on its `tries`-th try waits before it runs
    /// again; `None`: it fails.
    fn claim_retry(error: &StoreError, tries: u32) -> Option<Duration>;
}

/// The reads of a connection or a transaction.
#[async_trait]
pub trait Read: Send {
    /// A job, locked as `lock` says.
    async fn job(&mut self, job_id: Uuid, lock: Lock) -> StoreResult<Option<JobRecord>>;
    /// The job an idempotency key created.
    async fn job_by_key(&mut self, key: &str) -> StoreResult<Option<JobRecord>>;
    /// Jobs matching `filter`, newest first.
    async fn jobs(&mut self, filter: &JobFilter) -> StoreResult<Vec<JobRecord>>;
    /// `(job_id, version)` of those of the jobs `ids` (at least one) that exist.
    async fn job_versions(&mut self, ids: &[String]) -> StoreResult<Vec<(String, i64)>>;
    /// A job's log lines, oldest first.
    async fn logs(&mut self, job_id: Uuid) -> StoreResult<Vec<LogLine>>;
    /// A job's attempts, first first.
    async fn attempts(&mut self, job_id: Uuid) -> StoreResult<Vec<AttemptRecord>>;
    /// An app's last-known run, locked as `lock` says.
    async fn app_run(&mut self, app_id: &str, lock: Lock) -> StoreResult<Option<AppRunRecord>>;
    /// The runs of the apps last known `RUNNING` or `SLEEPING` on node `node_id`.
    async fn node_app_runs(&mut self, node_id: &str) -> StoreResult<Vec<AppRunRecord>>;
    /// The apps placed on node `node_id`.
    async fn node_placed_apps(&mut self, node_id: &str) -> StoreResult<Vec<String>>;
    /// Every node, by id.
    async fn nodes(&mut self) -> StoreResult<Vec<NodeRecord>>;
    /// One node.
    async fn node(&mut self, node_id: &str) -> StoreResult<Option<NodeRecord>>;
    /// Every placement, by app id.
    async fn placements(&mut self) -> StoreResult<Vec<Placement>>;
    /// `(state, count)` of the jobs.
    async fn job_counts(&mut self) -> StoreResult<Vec<(String, i64)>>;
    /// Up to `limit` unpublished events, oldest first, locked (skipping locked ones) where the
    /// database locks rows.
    async fn unpublished(&mut self, limit: u32) -> StoreResult<Vec<OutboxRow>>;
    /// Unpublished events before `seq` but those in `taken`, as `(seq, body)`.
    async fn unpublished_before(
        &mut self,
        seq: i64,
        taken: &[i64],
    ) -> StoreResult<Vec<(i64, String)>>;
    /// The node credential whose current or previous credential hashes to `hash`.
    async fn credential_by_hash(&mut self, hash: &str) -> StoreResult<Option<NodeCredential>>;
    /// Of the nodes in `seen` (a flush's JSON array, [`super::sql::last_seen_json`]), those
    /// still `ONLINE` with the credential they presented good, as `(node id, scheduling)`.
    async fn still_seen(&mut self, seen: &str) -> StoreResult<Vec<(String, String)>>;
    /// The placements on the nodes in `seen`, as `(node id, app id)`.
    async fn placed_on_seen(&mut self, seen: &str) -> StoreResult<Vec<(String, String)>>;
    /// The nodes whose credential was revoked or rotated at or after `since`.
    async fn credentials_changed(&mut self, since: Millis) -> StoreResult<Vec<String>>;
    /// Every credential neither revoked nor in a rotation.
    async fn current_credentials(&mut self) -> StoreResult<Vec<NodeCredential>>;
    /// Refreshes the database's statistics of the job table (not a read, but a connection's
    /// maintenance outside any transaction).
    async fn analyze_queue(&mut self) -> StoreResult<()>;
}

/// The writes (and locking reads) of a transaction.
#[async_trait]
pub trait Write: Read {
    /// Inserts a new job; returns its `seq`, or `None` when a job with the same idempotency
    /// key exists (a concurrent create won).
    async fn insert_job(&mut self, job: &JobRecord) -> StoreResult<Option<i64>>;
    /// Writes every mutable column of `job`.
    async fn update_job(&mut self, job: &JobRecord) -> StoreResult<()>;
    /// Adds a label to the job `seq`.
    async fn insert_label(&mut self, seq: i64, key: &str, value: &str) -> StoreResult<()>;
    /// Adds an outbox event.
    async fn insert_event(&mut self, event: &OutboxEvent) -> StoreResult<()>;
    /// Records an app's last-known run.
    async fn upsert_app_run(&mut self, run: &AppRunRecord) -> StoreResult<()>;
    /// Sets the state, error and time of `prev`'s app run to `next`'s, only while the run is
    /// still `prev` (same last job, same state); false when a job changed it meanwhile.
    async fn set_app_run_state(
        &mut self,
        prev: &AppRunRecord,
        next: &AppRunRecord,
    ) -> StoreResult<bool>;
    /// Records the attempts (at least one) a claim batch opened, `(job id, attempt)`.
    async fn open_attempts(&mut self, opened: &[(Uuid, AttemptRecord)]) -> StoreResult<()>;
    /// Ends job `job_id`'s open attempt number `attempt` at `now` with `outcome` and `error`
    /// (nothing when that attempt is not open).
    async fn end_attempt(
        &mut self,
        job_id: Uuid,
        attempt: i32,
        now: Millis,
        (outcome, error): (AttemptOutcome, Option<String>),
    ) -> StoreResult<()>;
    /// Adds log lines (at least one) of a job, all at `now`.
    async fn insert_logs(&mut self, job_id: Uuid, lines: &[String], now: Millis)
        -> StoreResult<()>;
    /// Up to 100 running jobs whose lease ended by `now`, oldest first, locked (skipping
    /// locked ones).
    async fn expired(&mut self, now: Millis) -> StoreResult<Vec<JobRecord>>;
    /// An app's placement, locked.
    async fn placement(&mut self, app_id: &str) -> StoreResult<Option<Placement>>;
    /// Removes an app's placement.
    async fn delete_placement(&mut self, app_id: &str) -> StoreResult<()>;
    /// Reserves `memory_mb` MiB and `cpu_millis` on node `node_id`, only while the node still
    /// has that room (the guard against two claims filling its last slot); false when not.
    async fn reserve(
        &mut self,
        node_id: &str,
        memory_mb: i64,
        cpu_millis: i64,
    ) -> StoreResult<bool>;
    /// Gives back what `placement` reserved on its node.
    async fn release(&mut self, placement: &Placement) -> StoreResult<()>;
    /// Records `placement` (inserts it, or replaces the app's old one) at `now`.
    async fn record_placement(&mut self, placement: &Placement, now: Millis) -> StoreResult<()>;
    /// A node's recorded state (`ONLINE`, `OFFLINE`) and agent address, locked.
    async fn node_state(&mut self, node_id: &str) -> StoreResult<Option<(String, String)>>;
    /// Records that a heartbeat moved node `node_id`'s agent away from `previous` at `now`.
    async fn agent_moved(&mut self, node_id: &str, previous: &str, now: Millis) -> StoreResult<()>;
    /// Records a revoked node `OFFLINE`, its last heartbeat no later than `trusted_until`.
    async fn cut_off_node(&mut self, node_id: &str, trusted_until: Millis) -> StoreResult<()>;
    /// A node's credential, locked.
    async fn lock_credential(&mut self, node_id: &str) -> StoreResult<Option<NodeCredential>>;
    /// Inserts a node's first credential; false when the node has one (it joined before): the
    /// transaction is then unusable on some databases and must be dropped.
    async fn insert_credential(&mut self, credential: &NodeCredential) -> StoreResult<bool>;
    /// Writes a credential's hashes and times.
    async fn update_credential(&mut self, credential: &NodeCredential) -> StoreResult<()>;
    /// Records a heartbeat: inserts the node, or refreshes it and marks it `ONLINE`.
    async fn upsert_node(&mut self, heartbeat: &NodeHeartbeat, now: Millis) -> StoreResult<()>;
    /// Moves the last heartbeats of the nodes in `seen` forward (see [`Read::still_seen`] for
    /// which nodes).
    async fn flush_last_seen(&mut self, seen: &str) -> StoreResult<()>;
    /// Sets a node's scheduling (nothing when there is no such node).
    async fn set_scheduling(&mut self, node_id: &str, scheduling: Scheduling) -> StoreResult<()>;
    /// The nodes recorded `ONLINE` whose last heartbeat is older than `before`, by id, locked
    /// (skipping locked ones).
    async fn stale_nodes(&mut self, before: Millis) -> StoreResult<Vec<String>>;
    /// Records a node `OFFLINE`.
    async fn set_offline(&mut self, node_id: &str) -> StoreResult<()>;
    /// Marks the events `seqs` (at least one) published at `now`.
    async fn mark_published(&mut self, seqs: &[i64], now: Millis) -> StoreResult<()>;
    /// Deletes a chunk of old events (see [`super::Store::prune_outbox`]); returns how many.
    async fn prune_outbox(&mut self, before: Millis, unpublished_too: bool) -> StoreResult<u64>;
    /// Up to `limit` ids of jobs retention may delete (see [`super::Store::prune_jobs`]).
    async fn prunable_jobs(&mut self, before: Millis, limit: i64) -> StoreResult<Vec<String>>;
    /// Deletes the jobs `ids` (at least one) with their logs, attempts and labels.
    async fn delete_jobs(&mut self, ids: &[String]) -> StoreResult<()>;
    /// Commits.
    async fn commit(self) -> StoreResult<()>
    where
        Self: Sized;
}

/// What each database writes by hand.
#[async_trait]
pub trait Tuned: Write {
    /// Up to `pick.want` of the oldest claimable jobs (see [`super::Store::claim_jobs`]) but
    /// those in `pick.skipped`, oldest first, locked where the database locks rows, with their
    /// apps' placements.
    async fn pick(&mut self, pick: Pick<'_>) -> StoreResult<Vec<Candidate>>;

    /// Saves a job that changed state: the row, its event and the app's last-known run.
    async fn save_transition(&mut self, job: &JobRecord) -> StoreResult<()> {
        self.update_job(job).await?;
        self.insert_event(&job_event(job)).await?;
        let prev = self.app_run(&job.app_id, Lock::Update).await?;
        if let Some(run) = next_app_run(prev.as_ref(), job) {
            self.upsert_app_run(&run).await?;
        }
        Ok(())
    }

    /// Saves the jobs a claim batch claimed, once at the end of the batch (the jobs stay
    /// locked, and pending, until then).
    async fn save_claimed(&mut self, jobs: &[&JobRecord]) -> StoreResult<()> {
        for job in jobs {
            self.save_transition(job).await?;
        }
        Ok(())
    }
}

/// The candidates of picked job rows, each with its app's placement read (and locked) next:
/// the pick of the databases that read it in a second statement.
pub async fn with_placements(
    tx: &mut impl Write,
    rows: Vec<JobRow>,
) -> StoreResult<Vec<Candidate>> {
    let mut picked = Vec::with_capacity(rows.len());
    for row in rows {
        let job = JobRecord::try_from(row)?;
        let placement = tx.placement(&job.app_id).await?;
        picked.push(Candidate { job, placement });
    }
    Ok(picked)
}

/// Writes [`Db`], [`Read`] and [`Write`] for one database: `$handle` (a new struct holding the
/// pool), `$conn` (a new connection wrapper, generic over a pooled connection or a transaction,
/// with the fields `keeps` lists for what the database keeps during a transaction), on
/// sqlx's `$driver` and `$connection`, running the statements of module `$sql`.
macro_rules! database_primitives {
    // The insert returns the new `seq`, or no row on a conflict (`ON CONFLICT … DO NOTHING`).
    (@insert_job returning_seq, $sql:ident, $c:expr, $job:expr) => {{
        let json = $crate::storage::rows::JobJson::of($job)?;
        let row = $crate::storage::sql::Bind(sqlx::query($sql::INSERT_JOB))
            .new_job($job, &json)
            .fetch_optional($c)
            .await?;
        Ok(row.map(|r| sqlx::Row::try_get(&r, 0)).transpose()?)
    }};
    // No `RETURNING` (MySQL): the new `seq` is the connection's last insert id, and a conflict
    // on the idempotency key a unique violation.
    (@insert_job last_insert_id, $sql:ident, $c:expr, $job:expr) => {{
        let json = $crate::storage::rows::JobJson::of($job)?;
        let inserted = $crate::storage::sql::Bind(sqlx::query($sql::INSERT_JOB))
            .new_job($job, &json)
            .execute($c)
            .await;
        match inserted {
            Ok(done) => i64::try_from(done.last_insert_id())
                .map(Some)
                .map_err(|e| $crate::storage::StoreError::Corrupt(format!("seq: {e}"))),
            Err(sqlx::Error::Database(e))
                if e.is_unique_violation() && $job.idempotency_key.is_some() =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }};
    (
        handle: $handle:ident,
        conn: $conn:ident,
        keeps: { $($field:ident: $fty:ty),* $(,)? },
        driver: $driver:ty,
        connection: $connection:ty,
        statements: $sql:ident,
        cache_nodes: $cache_nodes:expr,
        hold_outbox: $hold_outbox:expr,
        insert_job: $insert_job:ident,
        claim_retry: $claim_retry:expr $(,)?
    ) => {
        /// The database's pool.
        #[derive(Debug, Clone)]
        pub struct $handle {
            pool: sqlx::Pool<$driver>,
        }

        /// A pooled connection or a transaction (`C`), with what the database keeps meanwhile.
        pub struct $conn<C> {
            c: C,
            $($field: $fty),*
        }

        impl<C> $conn<C> {
            fn new(c: C) -> Self {
                Self { c, $($field: Default::default()),* }
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::primitives::Db for $handle {
            type Conn = $conn<sqlx::pool::PoolConnection<$driver>>;
            type Tx = $conn<sqlx::Transaction<'static, $driver>>;
            const CACHE_NODES: bool = $cache_nodes;
            const HOLD_OUTBOX: bool = $hold_outbox;

            async fn conn(&self) -> $crate::storage::StoreResult<Self::Conn> {
                Ok($conn::new(self.pool.acquire().await?))
            }

            async fn begin(&self) -> $crate::storage::StoreResult<Self::Tx> {
                Ok($conn::new(self.pool.begin_with($sql::BEGIN).await?))
            }

            fn claim_retry(
                error: &$crate::storage::StoreError,
                tries: u32,
            ) -> Option<std::time::Duration> {
                ($claim_retry)(error, tries)
            }
        }

        #[async_trait::async_trait]
        impl<C> $crate::storage::primitives::Read for $conn<C>
        where
            C: std::ops::DerefMut<Target = $connection> + Send,
        {
            async fn job(
                &mut self,
                job_id: uuid::Uuid,
                lock: $crate::storage::primitives::Lock,
            ) -> $crate::storage::StoreResult<Option<$crate::queue::JobRecord>> {
                use $crate::storage::primitives::Lock;
                let sql = match lock {
                    Lock::None => $sql::GET_JOB,
                    Lock::Share => $sql::SHARE_JOB,
                    Lock::Update => $sql::LOCK_JOB,
                };
                let row: Option<$crate::storage::rows::JobRow> = sqlx::query_as(sql)
                    .bind(job_id.to_string())
                    .fetch_optional(&mut *self.c)
                    .await?;
                row.map(TryFrom::try_from).transpose()
            }

            async fn job_by_key(
                &mut self,
                key: &str,
            ) -> $crate::storage::StoreResult<Option<$crate::queue::JobRecord>> {
                let row: Option<$crate::storage::rows::JobRow> = sqlx::query_as($sql::JOB_BY_KEY)
                    .bind(key)
                    .fetch_optional(&mut *self.c)
                    .await?;
                row.map(TryFrom::try_from).transpose()
            }

            async fn jobs(
                &mut self,
                filter: &$crate::storage::JobFilter,
            ) -> $crate::storage::StoreResult<Vec<$crate::queue::JobRecord>> {
                let mut q = $crate::storage::sql::list_jobs::<$driver>(filter);
                $crate::storage::rows::jobs(q.build_query_as().fetch_all(&mut *self.c).await?)
            }

            async fn job_versions(
                &mut self,
                ids: &[String],
            ) -> $crate::storage::StoreResult<Vec<(String, i64)>> {
                let mut q = $crate::storage::sql::job_versions::<$driver>(ids);
                Ok(q.build_query_as().fetch_all(&mut *self.c).await?)
            }

            async fn logs(
                &mut self,
                job_id: uuid::Uuid,
            ) -> $crate::storage::StoreResult<Vec<$crate::queue::LogLine>> {
                let rows: Vec<$crate::storage::rows::LogRow> = sqlx::query_as($sql::JOB_LOGS)
                    .bind(job_id.to_string())
                    .fetch_all(&mut *self.c)
                    .await?;
                Ok(rows.into_iter().map(From::from).collect())
            }

            async fn attempts(
                &mut self,
                job_id: uuid::Uuid,
            ) -> $crate::storage::StoreResult<Vec<$crate::queue::attempt::AttemptRecord>> {
                let rows: Vec<$crate::storage::rows::AttemptRow> =
                    sqlx::query_as($sql::JOB_ATTEMPTS)
                        .bind(job_id.to_string())
                        .fetch_all(&mut *self.c)
                        .await?;
                rows.into_iter().map(TryFrom::try_from).collect()
            }

            async fn app_run(
                &mut self,
                app_id: &str,
                lock: $crate::storage::primitives::Lock,
            ) -> $crate::storage::StoreResult<Option<$crate::queue::AppRunRecord>> {
                let sql = match lock {
                    $crate::storage::primitives::Lock::Update => $sql::LOCK_APP_RUN,
                    _ => $sql::APP_RUN,
                };
                let row: Option<$crate::storage::rows::AppRunRow> = sqlx::query_as(sql)
                    .bind(app_id)
                    .fetch_optional(&mut *self.c)
                    .await?;
                row.map(TryFrom::try_from).transpose()
            }

            async fn node_app_runs(
                &mut self,
                node_id: &str,
            ) -> $crate::storage::StoreResult<Vec<$crate::queue::AppRunRecord>> {
                let rows: Vec<$crate::storage::rows::AppRunRow> =
                    sqlx::query_as($sql::NODE_APP_RUNS)
                        .bind(node_id)
                        .fetch_all(&mut *self.c)
                        .await?;
                rows.into_iter().map(TryFrom::try_from).collect()
            }

            async fn node_placed_apps(
                &mut self,
                node_id: &str,
            ) -> $crate::storage::StoreResult<Vec<String>> {
                let rows: Vec<(String,)> = sqlx::query_as($sql::NODE_PLACED_APPS)
                    .bind(node_id)
                    .fetch_all(&mut *self.c)
                    .await?;
                Ok(rows.into_iter().map(|(app,)| app).collect())
            }

            async fn nodes(
                &mut self,
            ) -> $crate::storage::StoreResult<Vec<$crate::queue::NodeRecord>> {
                $crate::storage::rows::nodes(
                    sqlx::query_as($sql::LIST_NODES).fetch_all(&mut *self.c).await?,
                )
            }

            async fn node(
                &mut self,
                node_id: &str,
            ) -> $crate::storage::StoreResult<Option<$crate::queue::NodeRecord>> {
                let row: Option<$crate::storage::rows::NodeRow> = sqlx::query_as($sql::NODE)
                    .bind(node_id)
                    .fetch_optional(&mut *self.c)
                    .await?;
                row.map(TryFrom::try_from).transpose()
            }

            async fn placements(
                &mut self,
            ) -> $crate::storage::StoreResult<Vec<$crate::queue::Placement>> {
                let rows: Vec<$crate::storage::rows::PlacementRow> =
                    sqlx::query_as($sql::LIST_PLACEMENTS).fetch_all(&mut *self.c).await?;
                Ok(rows.into_iter().map(From::from).collect())
            }

            async fn job_counts(&mut self) -> $crate::storage::StoreResult<Vec<(String, i64)>> {
                Ok(sqlx::query_as($sql::JOB_COUNTS).fetch_all(&mut *self.c).await?)
            }

            async fn analyze_queue(&mut self) -> $crate::storage::StoreResult<()> {
                // MySQL's `ANALYZE TABLE` answers with a row of its own; it is read and dropped.
                sqlx::query($sql::ANALYZE_QUEUE)
                    .fetch_all(&mut *self.c)
                    .await?;
                Ok(())
            }

            async fn unpublished(
                &mut self,
                limit: u32,
            ) -> $crate::storage::StoreResult<Vec<$crate::storage::OutboxRow>> {
                Ok(sqlx::query_as($sql::UNPUBLISHED)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *self.c)
                    .await?)
            }

            async fn unpublished_before(
                &mut self,
                seq: i64,
                taken: &[i64],
            ) -> $crate::storage::StoreResult<Vec<(i64, String)>> {
                let mut q = $crate::storage::sql::unpublished_before::<$driver>(seq, taken);
                Ok(q.build_query_as().fetch_all(&mut *self.c).await?)
            }

            async fn credential_by_hash(
                &mut self,
                hash: &str,
            ) -> $crate::storage::StoreResult<Option<$crate::queue::credential::NodeCredential>> {
                let row: Option<$crate::storage::rows::CredentialRow> =
                    sqlx::query_as($sql::CREDENTIAL_BY_HASH)
                        .bind(hash)
                        .bind(hash)
                        .fetch_optional(&mut *self.c)
                        .await?;
                Ok(row.map(From::from))
            }

            async fn still_seen(
                &mut self,
                seen: &str,
            ) -> $crate::storage::StoreResult<Vec<(String, String)>> {
                Ok(sqlx::query_as($sql::STILL_SEEN)
                    .bind(seen)
                    .fetch_all(&mut *self.c)
                    .await?)
            }

            async fn placed_on_seen(
                &mut self,
                seen: &str,
            ) -> $crate::storage::StoreResult<Vec<(String, String)>> {
                Ok(sqlx::query_as($sql::PLACED_ON_SEEN)
                    .bind(seen)
                    .fetch_all(&mut *self.c)
                    .await?)
            }

            async fn credentials_changed(
                &mut self,
                since: $crate::queue::Millis,
            ) -> $crate::storage::StoreResult<Vec<String>> {
                Ok(sqlx::query_scalar($sql::CREDENTIALS_CHANGED)
                    .bind(since)
                    .bind(since)
                    .fetch_all(&mut *self.c)
                    .await?)
            }

            async fn current_credentials(
                &mut self,
            ) -> $crate::storage::StoreResult<Vec<$crate::queue::credential::NodeCredential>> {
                let rows: Vec<$crate::storage::rows::CredentialRow> =
                    sqlx::query_as($sql::CURRENT_CREDENTIALS)
                        .fetch_all(&mut *self.c)
                        .await?;
                Ok(rows.into_iter().map(From::from).collect())
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::primitives::Write for $conn<sqlx::Transaction<'static, $driver>> {
            async fn insert_job(
                &mut self,
                job: &$crate::queue::JobRecord,
            ) -> $crate::storage::StoreResult<Option<i64>> {
                $crate::storage::primitives::database_primitives!(
                    @insert_job $insert_job, $sql, &mut *self.c, job
                )
            }

            async fn update_job(
                &mut self,
                job: &$crate::queue::JobRecord,
            ) -> $crate::storage::StoreResult<()> {
                let json = $crate::storage::rows::JobJson::of(job)?;
                $crate::storage::sql::Bind(sqlx::query($sql::UPDATE_JOB))
                    .job_update(job, &json)
                    .execute(&mut *self.c)
                    .await?;
                Ok(())
            }

            async fn insert_label(
                &mut self,
                seq: i64,
                key: &str,
                value: &str,
            ) -> $crate::storage::StoreResult<()> {
                sqlx::query($sql::INSERT_LABEL)
                    .bind(seq)
                    .bind(key)
                    .bind(value)
                    .execute(&mut *self.c)
                    .await?;
                Ok(())
            }

            async fn insert_event(
                &mut self,
                event: &$crate::queue::OutboxEvent,
            ) -> $crate::storage::StoreResult<()> {
                $crate::storage::sql::Bind(sqlx::query($sql::INSERT_EVENT))
                    .event(event)
                    .execute(&mut *self.c)
                    .await?;
                Ok(())
            }

            async fn upsert_app_run(
                &mut self,
                run: &$crate::queue::AppRunRecord,
            ) -> $crate::storage::StoreResult<()> {
                $crate::storage::sql::Bind(sqlx::query($sql::UPSERT_APP_RUN))
                    .app_run(run)
                    .execute(&mut *self.c)
                    .await?;
                Ok(())
            }

            async fn set_app_run_state(
                &mut self,
                prev: &$crate::queue::AppRunRecord,
                next: &$crate::queue::AppRunRecord,
            ) -> $crate::storage::StoreResult<bool> {
                let done = sqlx::query($sql::SET_APP_RUN_STATE)
                    .bind(next.state.as_str())
                    .bind(next.error.as_deref())
                    .bind(next.updated_at)
                    .bind(prev.app_id.as_str())
                    .bind(prev.last_job_id.to_string())
                    .bind(prev.state.as_str())
                    .execute(&mut *self.c)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn open_attempts(
                &mut self,
                opened: &[(uuid::Uuid, $crate::queue::attempt::AttemptRecord)],
            ) -> $crate::storage::StoreResult<()> {
                let mut q = $crate::storage::sql::insert_attempts::<$driver>(opened);
                q.build().execute(&mut *self.c).await?;
                Ok(())
            }

            async fn end_attempt(
                &mut self,
                job_id: uuid::Uuid,
                attempt: i32,
                now: $crate::queue::Millis,
                (outcome, error): (berth_shared::wire::AttemptOutcome, Option<String>),
            ) -> $crate::storage::StoreResult<()> {
                sqlx::query($sql::END_ATTEMPT)
                    .bind(now)
                    .bind(outcome.as_str())
                    .bind(error)
                    .bind(job_id.to_string())
                    .bind(attempt)
                    .execute(&mut *self.c)
                    .await?;
                Ok(())
            }

            async fn insert_logs(
                &mut self,
                job_id: uuid::Uuid,
                lines: &[String],
                now: $crate::queue::Millis,
            ) -> $crate::storage::StoreResult<()> {
                let mut q = $crate::storage::sql::insert_logs::<$driver>(job_id, lines, now);
                q.build().execute(&mut *self.c).await?;
                Ok(())
            }

            async fn expired(
                &mut self,
                now: $crate::queue::Millis,
            ) -> $crate::storage::StoreResult<Vec<$crate::queue::JobRecord>> {
                $crate::storage::rows::jobs(
                    sqlx::query_as($sql::EXPIRED_JOBS)
                        .bind(now)
                        .fetch_all(&mut *self.c)
                        .await?,
                )
            }

            async fn placement(
                &mut self,
                app_id: &str,
            ) -> $crate::storage::StoreResult<Option<$crate::queue::Placement>> {
                let row: Option<$crate::storage::rows::PlacementRow> =
                    sqlx::query_as($sql::PLACEMENT)
                        .bind(app_id)
                        .fetch_optional(&mut *self.c)
                        .await?;
                Ok(row.map(From::from))
            }

            async fn delete_placement(&mut self, app_id: &str) -> $crate::storage::StoreResult<()> {
                sqlx::query($sql::DELETE_PLACEMENT)
                    .bind(app_id)
                    .execute(&mut *self.c)
                    .await?;
                Ok(())
            }

            async fn reserve(
                &mut self,
                node_id: &str,
                memory_mb: i64,
                cpu_millis: i64,
            ) -> $crate::storage::StoreResult<bool> {
                let done = $crate::storage::sql::Bind(sqlx::query($sql::RESERVE))
                    .reserve(node_id, memory_mb, cpu_millis)
                    .execute(&mut *self.c)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn release(
                &mut self,
                placement: &$crate::queue::Placement,
            ) -> $crate::storage::StoreResult<()> {
                $crate::storage::sql::Bind(sqlx::query($sql::RELEASE))
                    .release(placement)
                    .execute(&mut *self.c)
                    .await?;
                Ok(())
            }

            async fn record_placement(
                &mut self,
                placement: &$crate::queue::Placement,
                now: $crate::queue::Millis,
            ) -> $crate::storage::StoreResult<()> {
                sqlx::query($sql::RECORD_PLACEMENT)
                    .bind(&placement.app_id)
                    .bind(&placement.node_id)
                    .bind(placement.memory_mb)
                    .bind(placement.cpu_millis)
                    .bind(now)
                    .execute(&mut *self.c)
                    .await?;
                Ok(())
            }

            async fn node_state(
                &mut self,
                node_id: &str,
            ) -> $crate::storage::StoreResult<Option<(String, String)>> {
                Ok(sqlx::query_as($sql::LOCK_NODE_STATE)
                    .bind(node_id)
                    .fetch_optional(&mut *self.c)
                    .await?)
            }

            async fn agent_moved(
                &mut self,
                node_id: &str,
                previous: &str,
                now: $crate::queue::Millis,
            ) -> $crate::storage::StoreResult<()> {
                sqlx::query($sql::AGENT_MOVED)
                    .bind(previous)
                    .bind(now)
                    .bind(node_id)
                    .execute(&mut *self.c)
                    .await?;
                Ok(())
            }

            async fn cut_off_node(
                &mut self,
                node_id: &str,
                trusted_until: $crate::queue::Millis,
            ) -> $crate::storage::StoreResult<()> {
                sqlx::query($sql::CUT_OFF_NODE)
                    .bind(trusted_until)
                    .bind(node_id)
                    .execute(&mut *self.c)
                    .await?;
                Ok(())
            }

            async fn lock_credential(
                &mut self,
                node_id: &str,
            ) -> $crate::storage::StoreResult<Option<$crate::queue::credential::NodeCredential>> {
                let row: Option<$crate::storage::rows::CredentialRow> =
                    sqlx::query_as($sql::LOCK_CREDENTIAL)
                        .bind(node_id)
                        .fetch_optional(&mut *self.c)
                        .await?;
                Ok(row.map(From::from))
            }

            async fn insert_credential(
                &mut self,
                credential: &$crate::queue::credential::NodeCredential,
            ) -> $crate::storage::StoreResult<bool> {
                let inserted = sqlx::query($sql::INSERT_CREDENTIAL)
                    .bind(credential.node_id.as_str())
                    .bind(credential.credential_hash.as_str())
                    .bind(credential.previous_hash.as_deref())
                    .bind(credential.created_at)
                    .bind(credential.rotated_at)
                    .bind(credential.revoked_at)
                    .execute(&mut *self.c)
                    .await;
                match inserted {
                    Ok(_) => Ok(true),
                    // The transaction is spoiled (PostgreSQL) and dropped by the caller.
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }

            async fn update_credential(
                &mut self,
                credential: &$crate::queue::credential::NodeCredential,
            ) -> $crate::storage::StoreResult<()> {
                sqlx::query($sql::UPDATE_CREDENTIAL)
                    .bind(credential.credential_hash.as_str())
                    .bind(credential.previous_hash.as_deref())
                    .bind(credential.rotated_at)
                    .bind(credential.revoked_at)
                    .bind(credential.node_id.as_str())
                    .execute(&mut *self.c)
                    .await?;
                Ok(())
            }

            async fn upsert_node(
                &mut self,
                heartbeat: &berth_shared::wire::NodeHeartbeat,
                now: $crate::queue::Millis,
            ) -> $crate::storage::StoreResult<()> {
                let json = $crate::storage::heartbeat_json(heartbeat)?;
                $crate::storage::sql::Bind(sqlx::query($sql::UPSERT_NODE))
                    .heartbeat(heartbeat, json, now)
                    .execute(&mut *self.c)
                    .await?;
                Ok(())
            }

            async fn flush_last_seen(&mut self, seen: &str) -> $crate::storage::StoreResult<()> {
                sqlx::query($sql::FLUSH_LAST_SEEN)
                    .bind(seen)
                    .execute(&mut *self.c)
                    .await?;
                Ok(())
            }

            async fn set_scheduling(
                &mut self,
                node_id: &str,
                scheduling: berth_shared::wire::Scheduling,
            ) -> $crate::storage::StoreResult<()> {
                sqlx::query($sql::SET_SCHEDULING)
                    .bind(scheduling.as_str())
                    .bind(node_id)
                    .execute(&mut *self.c)
                    .await?;
                Ok(())
            }

            async fn stale_nodes(
                &mut self,
                before: $crate::queue::Millis,
            ) -> $crate::storage::StoreResult<Vec<String>> {
                Ok(sqlx::query_scalar($sql::STALE_NODES)
                    .bind(before)
                    .fetch_all(&mut *self.c)
                    .await?)
            }

            async fn set_offline(&mut self, node_id: &str) -> $crate::storage::StoreResult<()> {
                sqlx::query($sql::SET_OFFLINE)
                    .bind(node_id)
                    .execute(&mut *self.c)
                    .await?;
                Ok(())
            }

            async fn mark_published(
                &mut self,
                seqs: &[i64],
                now: $crate::queue::Millis,
            ) -> $crate::storage::StoreResult<()> {
                let mut q = $crate::storage::sql::mark_published::<$driver>(now, seqs);
                q.build().execute(&mut *self.c).await?;
                Ok(())
            }

            async fn prune_outbox(
                &mut self,
                before: $crate::queue::Millis,
                unpublished_too: bool,
            ) -> $crate::storage::StoreResult<u64> {
                let done = sqlx::query($sql::PRUNE_OUTBOX)
                    .bind(before)
                    .bind(unpublished_too)
                    .bind(before)
                    .bind($crate::storage::PRUNE_CHUNK)
                    .execute(&mut *self.c)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn prunable_jobs(
                &mut self,
                before: $crate::queue::Millis,
                limit: i64,
            ) -> $crate::storage::StoreResult<Vec<String>> {
                Ok(sqlx::query_scalar($sql::PRUNABLE_JOBS)
                    .bind(before)
                    .bind(limit)
                    .fetch_all(&mut *self.c)
                    .await?)
            }

            async fn delete_jobs(&mut self, ids: &[String]) -> $crate::storage::StoreResult<()> {
                for table in ["job_log", "job_attempt", "deploy_job"] {
                    let mut q = $crate::storage::sql::delete_of_jobs::<$driver>(table, ids);
                    q.build().execute(&mut *self.c).await?;
                }
                Ok(())
            }

            async fn commit(self) -> $crate::storage::StoreResult<()> {
                self.c.commit().await?;
                Ok(())
            }
        }
    };
}

pub(crate) use database_primitives;
