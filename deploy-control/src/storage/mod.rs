//! Storage behind one trait, [`Store`], with one module per database.
//!
//! Every method is one transaction. Methods that change a job load the row locked, let the
//! state machine in [`crate::queue`] decide, then write the job, the app's last-known run and
//! an `outbox_event` row before committing — so a crash at any point leaves either all of a
//! change or none of it. Time is passed in (`now`), never read from the database clock.

pub mod claim;
pub mod mysql;
pub mod node_cache;
pub mod postgres;
pub mod primitives;
pub mod rows;
pub mod sql;
pub mod sqlite;
pub mod transitions;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use berth_shared::ids::AppId;
use berth_shared::sealed::{SealedEnv, SealingKeys};
use berth_shared::wire::{
    DisplacedApp, JobKind, JobPayload, JobState, NodeApp, NodeHeartbeat, NodeRef, NodeState,
    Scheduling, ValidJob,
};
use uuid::Uuid;

use crate::queue::attempt::AttemptRecord;
use crate::queue::credential::{CredentialRefused, NodeCredential};
use crate::queue::machine::{Refused, Report};
use crate::queue::retry::RetryPolicy;
use crate::queue::{AppRunRecord, JobRecord, LogLine, Millis, NodeRecord, Placement};

/// What can go wrong in storage, in terms the HTTP layer maps to statuses.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No job with that id (404).
    #[error("no job with id {0}")]
    JobNotFound(Uuid),
    /// No node with that id (404).
    #[error("no runtime node with id {0}")]
    NodeNotFound(String),
    /// The change conflicts with the row's state: a stale lease, a cancel of a running job,
    /// a reused idempotency key (409).
    #[error(transparent)]
    Conflict(#[from] Refused),
    /// The database failed or could not be reached (503/500, logged, never shown).
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// A row could not be read back (a bug or a hand-edited row).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A node credential was refused: unknown or revoked (401).
    #[error(transparent)]
    Credential(#[from] CredentialRefused),
    /// The failure of a claim batch, shared by every claim in it (503, like its cause).
    #[error("the claim batch failed")]
    Batch(#[source] Arc<StoreError>),
}

impl StoreError {
    /// Whether the database could not be reached (no connection within the pool's wait, a
    /// broken or refused connection), as opposed to an answer it gave: what
    /// [`crate::watch::Watch`] counts as an outage.
    pub fn is_outage(&self) -> bool {
        match self {
            Self::Database(
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed,
            ) => true,
            Self::Batch(cause) => cause.is_outage(),
            _ => false,
        }
    }
}

/// Shorthand for storage results.
pub type StoreResult<T> = Result<T, StoreError>;

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Its id (UUID v7).
    pub job_id: Uuid,
    /// What it asks for.
    pub job: JobSpec,
    /// `Idempotency-Key` header, if any.
    pub idempotency_key: Option<String>,
    /// Hash of the request body, to refuse a reused key with a different request.
    pub request_hash: String,
    /// Claims it gets.
    pub max_attempts: i32,
    /// Creation time.
    pub now: Millis,
}

/// What a new job asks for: a validated request with its secret values sealed.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The app.
    pub app_id: AppId,
    /// Deploy or stop.
    pub kind: JobKind,
    /// Everything but secret values.
    pub payload: JobPayload,
    /// The secret values, sealed for the app.
    pub secret_env: SealedEnv,
}

impl JobSpec {
    /// `job` with its secret values sealed under `keys` (the plain values are dropped here).
    pub fn seal(job: ValidJob, keys: &SealingKeys) -> Self {
        let secret_env = SealedEnv::seal(keys, &job.secret_env, job.app_id.as_str());
        Self {
            app_id: job.app_id,
            kind: job.kind,
            payload: job.payload,
            secret_env,
        }
    }
}

/// Whether a create made a new job or found the one an earlier call with the same key made.
#[derive(Debug, Clone)]
pub enum Created {
    /// A new job.
    New(JobRecord),
    /// The job an earlier request with the same `Idempotency-Key` created.
    Existing(JobRecord),
}

/// Filters of `GET /deploy/jobs` and `GET /admin/jobs`.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this app's jobs.
    pub app_id: Option<String>,
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs with this label (`key`, `value`).
    pub label: Option<(String, String)>,
    /// At most this many (1 to 500).
    pub limit: u32,
    /// Only jobs older than this `seq` (the cursor).
    pub before_seq: Option<i64>,
}

/// Claims made together: one transaction hands out up to one job per claimer.
#[derive(Debug, Clone)]
pub struct ClaimBatch {
    /// The claimers, in the order the jobs (oldest first) are handed to them.
    pub claimers: Vec<Claimer>,
    /// When the new leases run out.
    pub lease_expires_at: Millis,
    /// Now.
    pub now: Millis,
    /// Node heartbeat TTL, ms: older heartbeats mean `OFFLINE`.
    pub node_ttl_ms: i64,
    /// Whether the control plane has watched heartbeats for one TTL without a break
    /// ([`crate::watch`]); when not, no app moves off a node that looks `OFFLINE`
    /// ([`crate::queue::placement::on_stale_view`]).
    pub nodes_settled: bool,
    /// A node silent for longer than this (ms) is lost: a `STOP` of an app placed there fails
    /// ([`crate::queue::placement::lost_stop`]). `None` while the control plane has not itself
    /// watched for that long.
    pub node_lost_ms: Option<i64>,
}

/// One runner waiting in a [`ClaimBatch`].
#[derive(Debug, Clone)]
pub struct Claimer {
    /// The claiming runner.
    pub runner_id: String,
    /// The fencing token of the lease it gets.
    pub lease_token: String,
}

/// A successful claim.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The job, now `RUNNING`.
    pub job: JobRecord,
    /// Where it runs (`None` for a stop of an app never placed).
    pub node: Option<NodeRef>,
    /// Where the app ran before, when it moved and that node is still reachable.
    pub previous_node: Option<NodeRef>,
}

/// Counts the `/metrics` endpoint shows.
#[derive(Debug, Clone, Default)]
pub struct QueueStats {
    /// Jobs per state.
    pub jobs_by_state: Vec<(JobState, i64)>,
}

/// The control plane's storage. One implementation per database; the contract tests in
/// `tests/store_contract.rs` run unchanged against each.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a `PENDING` job (and its `job.created` event), or returns the job an earlier
    /// create with the same idempotency key made. A reused key with a different request
    /// hash is a [`StoreError::Conflict`].
    async fn create_job(&self, new: NewJob) -> StoreResult<Created>;

    /// One job.
    async fn get_job(&self, job_id: Uuid) -> StoreResult<JobRecord>;

    /// Jobs matching `filter`, newest first.
    async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<JobRecord>>;

    /// The versions of those of the jobs `ids` that exist, in no order: one statement per
    /// [`VERSIONS_PER_READ`] ids, whatever the jobs hold.
    async fn job_versions(&self, ids: &[Uuid]) -> StoreResult<Vec<(Uuid, i64)>>;

    /// `PENDING → CANCELLED`.
    async fn cancel_job(&self, job_id: Uuid, now: Millis) -> StoreResult<JobRecord>;

    /// Claims the oldest claimable jobs, at most one per claimer of `batch`, in one
    /// transaction: `PENDING`, `run_after <= now`, no other job of its app `RUNNING` and no
    /// older job of its app `PENDING` (jobs of one app run in order, so a batch never holds two
    /// jobs of one app), and a node decided by [`crate::queue::placement::decide`]. Jobs no
    /// node can take are skipped and get their `waiting_reason`. Placements are written in the
    /// same transaction. The `i`-th job returned goes to the `i`-th claimer; fewer jobs than
    /// claimers (none at all) when fewer are claimable.
    async fn claim_jobs(&self, batch: &ClaimBatch) -> StoreResult<Vec<Claimed>>;

    /// Extends a running job's lease; returns the job.
    async fn renew_lease(
        &self,
        job_id: Uuid,
        lease_token: &str,
        expires_at: Millis,
        now: Millis,
    ) -> StoreResult<JobRecord>;

    /// Appends log lines sent under a valid lease.
    async fn append_logs(
        &self,
        job_id: Uuid,
        lease_token: &str,
        lines: &[String],
        now: Millis,
    ) -> StoreResult<()>;

    /// Applies a runner's report (see [`JobRecord::report`]); a successful `STOP`, or a
    /// `DEPLOY` that failed for good while nothing serves the app, removes the app's placement
    /// ([`crate::queue::machine::PlacementAfter`]).
    async fn report_job(
        &self,
        job_id: Uuid,
        lease_token: &str,
        report: Report,
        policy: &RetryPolicy,
        now: Millis,
    ) -> StoreResult<JobRecord>;

    /// A job with its attempts (`job_attempt`), first first: its timeline.
    async fn job_timeline(&self, job_id: Uuid) -> StoreResult<(JobRecord, Vec<AttemptRecord>)>;

    /// Every log line of a job, oldest first.
    async fn job_logs(&self, job_id: Uuid) -> StoreResult<Vec<LogLine>>;

    /// Sends every `RUNNING` job whose lease ended by `now` back to `PENDING`, or to `FAILED`
    /// when out of attempts (a deploy that fails so gives its placement back as
    /// [`Store::report_job`] says). Returns the jobs it changed.
    async fn expire_leases(&self, policy: &RetryPolicy, now: Millis)
        -> StoreResult<Vec<JobRecord>>;

    /// The app's last-known run.
    async fn app_run(&self, app_id: &str) -> StoreResult<Option<AppRunRecord>>;

    /// Records a node heartbeat (inserting the node on its first), with a `node.online` event
    /// when it was new or `OFFLINE`, a `node.app_removed` event for each container it reports
    /// `removed`, and a `node.agent_moved` event (and the node's
    /// [`crate::queue::AgentUrlChange`]) when it announces another agent address than before.
    async fn node_heartbeat(
        &self,
        heartbeat: &NodeHeartbeat,
        now: Millis,
    ) -> StoreResult<HeartbeatSaved>;

    /// The containers node `node_id` reports (`apps`) that it must remove (SPEC §8: one version
    /// per app): of apps placed elsewhere or nowhere, those [`crate::queue::displaced::displaced`]
    /// finds settled by a later success (or a stop) than what the container runs.
    async fn displaced_apps(
        &self,
        node_id: &str,
        apps: &[NodeApp],
    ) -> StoreResult<Vec<DisplacedApp>>;

    /// Records node `node_id`'s first credential, by its hash (SPEC §7: a node joins once); a
    /// node that joined before is a [`StoreError::Conflict`].
    async fn join_node(
        &self,
        node_id: &str,
        credential_hash: &str,
        now: Millis,
    ) -> StoreResult<NodeCredential>;

    /// The credential whose current or previous credential hashes to `hash`, refused
    /// ([`StoreError::Credential`]) when there is none or it is revoked. The first use of a new
    /// credential after a rotation retires the previous one.
    async fn use_credential(&self, hash: &str) -> StoreResult<NodeCredential>;

    /// Gives the node whose credential hashes to `presented_hash` the new credential
    /// `new_hash`; the presented one stays accepted until the new one is used once.
    async fn rotate_credential(
        &self,
        presented_hash: &str,
        new_hash: &str,
        now: Millis,
    ) -> StoreResult<NodeCredential>;

    /// Revokes node `node_id`'s credential at `now` and records the node `OFFLINE` at once (a
    /// `node.offline` event when it was `ONLINE`), its last heartbeat moved back past `ttl_ms`
    /// so that no claim places an app on it. A node that never joined is
    /// [`StoreError::NodeNotFound`].
    async fn revoke_node(
        &self,
        node_id: &str,
        now: Millis,
        ttl_ms: i64,
    ) -> StoreResult<NodeCredential>;

    /// Writes the heartbeats a control plane coalesced ([`crate::service::beats`]) in one
    /// transaction of three statements, whatever their number: each node of `seen` recorded
    /// `ONLINE` whose current or previous credential hashes to its `credential_hash`, not
    /// revoked, gets its last heartbeat moved forward to `at` (never back); nothing else
    /// changes and no event is written. Returns those nodes with their scheduling and placed
    /// apps; the others (revoked, the credential retired by a rotation, `OFFLINE`, unknown) are
    /// left as they are and out of the answer.
    async fn flush_heartbeats(&self, seen: &[LastSeen]) -> StoreResult<Vec<StillSeen>>;

    /// The nodes whose credential was revoked or rotated at or after `since`, by id: what a
    /// control plane that keeps credentials must forget ([`crate::service::beats`]).
    async fn credentials_changed(&self, since: Millis) -> StoreResult<Vec<String>>;

    /// The nodes recorded `ONLINE` whose credential is neither revoked nor rotating, each with
    /// what its last heartbeat written in full reported: what a control plane that just started
    /// coalesces their next heartbeats from ([`crate::service::beats`]). Three reads (nodes,
    /// placements, credentials), not one snapshot: every flush checks each node again.
    async fn heartbeat_seeds(&self) -> StoreResult<Vec<HeartbeatSeed>>;

    /// Every node, by id.
    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>>;

    /// Every placement, by app id.
    async fn list_placements(&self) -> StoreResult<Vec<Placement>>;

    /// Cordons, uncordons or drains a node. Returns it.
    async fn set_scheduling(
        &self,
        node_id: &str,
        scheduling: Scheduling,
        now: Millis,
    ) -> StoreResult<NodeRecord>;

    /// Marks `OFFLINE` (with a `node.offline` event) every node recorded `ONLINE` whose last
    /// heartbeat is older than `ttl_ms`. Returns those nodes.
    async fn mark_offline_nodes(&self, now: Millis, ttl_ms: i64) -> StoreResult<Vec<NodeRecord>>;

    /// Job counts by state.
    async fn stats(&self) -> StoreResult<QueueStats>;

    /// Takes up to `limit` unpublished `outbox_event` rows, oldest first, for the relay. On
    /// PostgreSQL and MariaDB the rows stay locked (`FOR UPDATE SKIP LOCKED`) until the batch is
    /// marked or dropped, so relays of other replicas take other rows; SQLite has one writer
    /// and one relay. Rows whose job or node has an earlier unpublished event held by another
    /// relay are left out, so the events of one job go out in order. Dropping the batch without
    /// [`OutboxBatch::mark_published`] leaves every row unpublished (a replica that dies
    /// mid-batch loses nothing).
    async fn claim_outbox(&self, limit: u32) -> StoreResult<Box<dyn OutboxBatch>>;

    /// Deletes up to [`PRUNE_CHUNK`] events published before `before`, and with
    /// `unpublished_too` also unpublished ones created before it (without a broker nothing
    /// ever publishes them). Returns how many it deleted.
    async fn prune_outbox(&self, before: Millis, unpublished_too: bool) -> StoreResult<u64>;

    /// Deletes up to [`PRUNE_JOBS_CHUNK`] jobs that finished before `before`, with their logs,
    /// attempts and labels — but never an app's last known run nor its newest successful
    /// `DEPLOY`, whatever their age (redeploys, drains and lost-node moves repeat it). Returns how many it deleted.
    async fn prune_jobs(&self, before: Millis) -> StoreResult<u64>;

    /// Refreshes the database's statistics of the job table once [`STATS_EVERY`] jobs were
    /// created through this store since the last refresh (or since it opened); returns whether
    /// it did. A queue that grew from empty faster than the database's own auto-analyze is
    /// otherwise planned as if it were empty: on PostgreSQL the pick then compared every pending
    /// job with every other, 1.3 s per claim with 2,000 pending instead of 0.4 ms.
    async fn refresh_statistics(&self) -> StoreResult<bool>;
}

/// An `outbox_event` row on its way to the broker.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxRow {
    /// Position in the outbox (insert order).
    pub seq: i64,
    /// The event's id, also the AMQP `message_id`.
    pub event_id: String,
    /// `job.created`, `node.offline`, …
    pub routing_key: String,
    /// The JSON body.
    pub body: String,
    /// When it happened (ms since the epoch).
    pub created_at: Millis,
}

/// Outbox rows one relay holds until it marks them published or drops the batch.
#[async_trait]
pub trait OutboxBatch: Send {
    /// The rows to publish, oldest first.
    fn events(&self) -> &[OutboxRow];

    /// Marks the rows with these `seq`s published at `now` and releases the batch; every other
    /// row of the batch stays unpublished for the next relay pass.
    async fn mark_published(self: Box<Self>, seqs: &[i64], now: Millis) -> StoreResult<()>;
}

/// A heartbeat written: the node as it is now, and whether this heartbeat brought it (back)
/// online — the only heartbeats that can make a waiting job claimable.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatSaved {
    /// The node after the heartbeat.
    pub node: NodeRecord,
    /// It was unknown or `OFFLINE` before.
    pub came_online: bool,
}

/// A node's coalesced heartbeats since the last flush ([`Store::flush_heartbeats`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LastSeen {
    /// The node.
    pub node_id: String,
    /// When its latest heartbeat arrived.
    pub at: Millis,
    /// The hash of the credential that heartbeat presented.
    #[serde(rename = "hash")]
    pub credential_hash: String,
}

/// A node a flush kept, with what its next coalesced heartbeats answer from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StillSeen {
    /// The node.
    pub node_id: String,
    /// Its scheduling.
    pub scheduling: Scheduling,
    /// The apps placed on it, by id.
    pub placed_apps: Vec<String>,
}

/// A node as the database last recorded it `ONLINE` ([`Store::heartbeat_seeds`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatSeed {
    /// The hash of its one current credential.
    pub credential_hash: String,
    /// What its last heartbeat written in full reported (nothing `removed`).
    pub heartbeat: NodeHeartbeat,
    /// When its last heartbeat reached the database.
    pub last_heartbeat_at: Millis,
    /// Its scheduling.
    pub scheduling: Scheduling,
    /// The apps placed on it, by id.
    pub placed_apps: Vec<String>,
}

/// Most rows one [`Store::prune_outbox`] deletes, so a prune never holds locks for long.
pub const PRUNE_CHUNK: i64 = 5_000;
/// Jobs created between two [`Store::refresh_statistics`].
pub const STATS_EVERY: u64 = 500;
/// Most jobs one [`Store::prune_jobs`] deletes (each with its log lines and labels).
pub const PRUNE_JOBS_CHUNK: i64 = 500;
/// Most jobs one statement of [`Store::job_versions`] asks about (SQLite allows 32,766 bound
/// values, MySQL 65,535; a list this long stays an index lookup per id everywhere).
pub const VERSIONS_PER_READ: usize = 1_000;

/// How long a request waits for a database connection before it fails: with the database
/// away, calls answer `503` with `Retry-After` within this, instead of sqlx's default 30 s
/// (SPEC §8: outages fail fast). A claim's long poll holds no connection while it waits.
pub const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The job (`jobId`) or node (`nodeId`) an event body is about: its events go out in order.
pub fn event_subject(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    ["jobId", "nodeId"]
        .iter()
        .find_map(|k| value.get(*k).and_then(|v| v.as_str()).map(str::to_owned))
}

/// The rows of `batch` that may go out now: a row is held back when an earlier unpublished
/// event of its subject is in `elsewhere` (rows `(seq, body)` another relay holds), so it
/// cannot overtake it.
pub fn in_order(batch: Vec<OutboxRow>, elsewhere: &[(i64, String)]) -> Vec<OutboxRow> {
    if elsewhere.is_empty() {
        return batch;
    }
    let mut first_elsewhere: HashMap<String, i64> = Default::default();
    for (seq, body) in elsewhere {
        if let Some(subject) = event_subject(body) {
            let first = first_elsewhere.entry(subject).or_insert(*seq);
            *first = (*first).min(*seq);
        }
    }
    batch
        .into_iter()
        .filter(|row| match event_subject(&row.body) {
            Some(subject) => first_elsewhere.get(&subject).is_none_or(|s| *s > row.seq),
            None => true,
        })
        .collect()
}

/// Opens the store a `BERTH_DATABASE_URL` names and applies its migrations.
pub async fn connect(database_url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::connect(database_url).await?))
    } else if database_url.starts_with("mysql://") || database_url.starts_with("mariadb://") {
        Ok(Arc::new(mysql::connect(database_url).await?))
    } else if database_url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::connect(database_url).await?))
    } else {
        anyhow::bail!("BERTH_DATABASE_URL must start with postgres://, mysql:// or sqlite:")
    }
}

/// A new `PENDING` record for `new` (its `seq` is filled in by the insert).
pub fn new_record(new: &NewJob) -> JobRecord {
    JobRecord {
        seq: 0,
        job_id: new.job_id,
        app_id: new.job.app_id.to_string(),
        kind: new.job.kind,
        state: JobState::Pending,
        payload: new.job.payload.clone(),
        secret_env: new.job.secret_env.clone(),
        attempt: 0,
        max_attempts: new.max_attempts,
        run_after: new.now,
        node_id: None,
        runner_id: None,
        lease_token: None,
        lease_expires_at: None,
        waiting_reason: None,
        error: None,
        result: None,
        version: 1,
        idempotency_key: new.idempotency_key.clone(),
        request_hash: Some(new.request_hash.clone()),
        created_at: new.now,
        updated_at: new.now,
        started_at: None,
        finished_at: None,
    }
}

/// The seeds ([`Store::heartbeat_seeds`]) of `nodes`: those recorded `ONLINE` with one of
/// `credentials` (each its node's current one, no rotation under way), with their placed apps.
pub fn heartbeat_seeds(
    nodes: Vec<NodeRecord>,
    placements: Vec<Placement>,
    credentials: Vec<NodeCredential>,
) -> Vec<HeartbeatSeed> {
    let mut hash_of: HashMap<String, String> = credentials
        .into_iter()
        .filter(|c| c.previous_hash.is_none() && c.revoked_at.is_none())
        .map(|c| (c.node_id, c.credential_hash))
        .collect();
    let mut placed: HashMap<String, Vec<String>> = HashMap::new();
    for p in placements {
        placed.entry(p.node_id).or_default().push(p.app_id);
    }
    nodes
        .into_iter()
        .filter(|n| n.recorded_state == NodeState::Online)
        .filter_map(|n| {
            Some(HeartbeatSeed {
                credential_hash: hash_of.remove(&n.node_id)?,
                heartbeat: n.reported(),
                last_heartbeat_at: n.last_heartbeat_at,
                scheduling: n.scheduling,
                placed_apps: placed.remove(&n.node_id).unwrap_or_default(),
            })
        })
        .collect()
}

/// The JSON columns of a heartbeat: labels and reported apps.
pub fn heartbeat_json(hb: &NodeHeartbeat) -> StoreResult<(String, String)> {
    let ser = |e: serde_json::Error| StoreError::Corrupt(format!("serialise heartbeat: {e}"));
    Ok((
        serde_json::to_string(&hb.labels).map_err(ser)?,
        serde_json::to_string(&hb.apps).map_err(ser)?,
    ))
}

/// How many apps a heartbeat reports asleep.
pub fn sleeping_count(hb: &NodeHeartbeat) -> i64 {
    let asleep = hb
        .apps
        .iter()
        .filter(|a| a.state == berth_shared::wire::agent::AppState::Sleeping)
        .count();
    i64::try_from(asleep).unwrap_or(i64::MAX)
}

impl QueueStats {
    /// Builds the stats from `(state, count)` rows, listing every state (0 when absent).
    pub fn from_counts(counts: Vec<(String, i64)>) -> Self {
        let jobs_by_state = JobState::ALL
            .into_iter()
            .map(|s| {
                (
                    s,
                    counts
                        .iter()
                        .find(|(name, _)| name == s.as_str())
                        .map_or(0, |(_, n)| *n),
                )
            })
            .collect();
        Self { jobs_by_state }
    }
}

/// The job a reused idempotency key names, or a conflict when the request differs.
pub fn existing(job: JobRecord, request_hash: &str) -> StoreResult<Created> {
    if job.request_hash.as_deref() == Some(request_hash) {
        Ok(Created::Existing(job))
    } else {
        Err(Refused(format!(
            "Idempotency-Key was already used for job {} with a different request",
            job.job_id
        ))
        .into())
    }
}
