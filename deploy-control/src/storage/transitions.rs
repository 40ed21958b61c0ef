//! The store's every sequence, written once over a database's named operations
//! ([`super::primitives`]): lock the row, let the state machine in [`crate::queue`] decide, save
//! the job, its event and the app's run, commit.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use berth_shared::wire::{DisplacedApp, JobState, NodeApp, NodeHeartbeat, NodeState, Scheduling};
use uuid::Uuid;

use super::claim::claim_batch;
use super::node_cache::NodeCache;
use super::primitives::{Db, Lock, Read, Tuned, Write};
use super::{
    existing, in_order, new_record, ClaimBatch, Claimed, Created, HeartbeatSaved, HeartbeatSeed,
    JobFilter, LastSeen, NewJob, OutboxBatch, OutboxRow, QueueStats, StillSeen, Store, StoreError,
    StoreResult,
};
use crate::queue::attempt::{self, AttemptRecord};
use crate::queue::credential::{CredentialRefused, NodeCredential};
use crate::queue::displaced::{displaced, Settlement};
use crate::queue::events::{
    job_event, node_agent_moved_event, node_app_removed_event, node_event, node_scheduling_event,
};
use crate::queue::fleet::Fleet;
use crate::queue::machine::{reported_app_run, PlacementAfter, Refused, Report};
use crate::queue::retry::RetryPolicy;
use crate::queue::{AppRunRecord, JobRecord, LogLine, Millis, NodeRecord, Placement};

/// The [`Store`] on database `D`.
#[derive(Debug)]
pub struct SqlStore<D> {
    db: D,
    /// Node rows kept between claims (where `D::CACHE_NODES`).
    nodes: Arc<NodeCache>,
    /// Jobs created since the statistics were last refreshed (the first refresh comes soon
    /// after the start).
    created: AtomicU64,
}

impl<D: Db> SqlStore<D> {
    /// The store on `db` (its migrations applied).
    pub fn new(db: D) -> Self {
        Self {
            db,
            nodes: Arc::default(),
            created: AtomicU64::new(super::STATS_EVERY),
        }
    }

    /// Locks node `node_id`'s credential; one that went away meanwhile is refused.
    async fn lock_credential(tx: &mut D::Tx, node_id: &str) -> StoreResult<NodeCredential> {
        let locked = tx.lock_credential(node_id).await?;
        Ok(locked.ok_or(CredentialRefused::Unknown)?)
    }

    /// Locks job `job_id`, or fails with [`StoreError::JobNotFound`].
    async fn lock_job(tx: &mut D::Tx, job_id: Uuid, lock: Lock) -> StoreResult<JobRecord> {
        tx.job(job_id, lock)
            .await?
            .ok_or(StoreError::JobNotFound(job_id))
    }

    /// Saves `job`'s change ([`Tuned::save_transition`]) and, when the change gives the app's
    /// placement back ([`PlacementAfter`]: a stop that succeeded, a deploy that failed for good
    /// while nothing serves the app), deletes the placement and frees the room it reserved on
    /// its node, in the same transaction. Returns whether it did (node rows kept between
    /// claims are then stale).
    async fn save_releasing(tx: &mut D::Tx, job: &JobRecord) -> StoreResult<bool> {
        let after = PlacementAfter::of(job);
        // The run before the change: whether an earlier deploy serves the app.
        let prev = match after {
            PlacementAfter::ReleasedUnlessServing => tx.app_run(&job.app_id, Lock::Update).await?,
            _ => None,
        };
        tx.save_transition(job).await?;
        if !after.releases(prev.as_ref()) {
            return Ok(false);
        }
        let Some(placement) = tx.placement(&job.app_id).await? else {
            return Ok(false);
        };
        tracing::info!(job_id = %job.job_id, app_id = %job.app_id, node_id = %placement.node_id, "placement given back");
        tx.delete_placement(&job.app_id).await?;
        tx.release(&placement).await?;
        Ok(true)
    }

    /// Ends the attempt of `job`, which just left `RUNNING` (its lease ran out when `expired`,
    /// else its runner reported), in `job_attempt` ([`attempt::ended`]).
    async fn end_attempt(
        tx: &mut D::Tx,
        job: &JobRecord,
        expired: bool,
        now: Millis,
    ) -> StoreResult<()> {
        match attempt::ended(job, expired) {
            Some(end) => tx.end_attempt(job.job_id, job.attempt, now, end).await,
            None => Ok(()),
        }
    }

    /// Records in the runs of the apps last known on `hb`'s node which of them its agent reports
    /// asleep or awake again ([`reported_app_run`]). Each change is a compare-and-set in a
    /// transaction of its own, so it holds one row lock at a time and cannot deadlock with a
    /// claim or a report (which lock app runs and nodes in their own orders); a job that changed
    /// the run since it was read wins. The changes are written before the node's row, so whoever
    /// sees the node's new report sees the runs it changed.
    async fn record_reported_apps(&self, hb: &NodeHeartbeat, now: Millis) -> StoreResult<()> {
        let runs = self.db.conn().await?.node_app_runs(&hb.node_id).await?;
        if runs.is_empty() {
            return Ok(());
        }
        let reported: HashMap<&str, &NodeApp> =
            hb.apps.iter().map(|a| (a.app_id.as_str(), a)).collect();
        for prev in &runs {
            let Some(app) = reported.get(prev.app_id.as_str()) else {
                continue;
            };
            if let Some(next) = reported_app_run(prev, app, now) {
                let mut tx = self.db.begin().await?;
                tx.set_app_run_state(prev, &next).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// One claim transaction, deciding with this process's fleet ([`NodeCache`]) or, where
    /// the database does not cache nodes, with the table read in the transaction.
    async fn try_claim(&self, batch: &ClaimBatch) -> StoreResult<Vec<Claimed>> {
        if !D::CACHE_NODES {
            let mut tx = self.db.begin().await?;
            let mut nodes = Fleet::new(tx.nodes().await?);
            let outcome = claim_batch(&mut tx, &mut nodes, batch).await?;
            tx.commit().await?;
            return Ok(outcome.claimed);
        }
        let db = self.db.clone();
        let read = move || {
            let db = db.clone();
            async move { db.conn().await?.nodes().await }
        };
        let mut leased = self.nodes.lease(batch.now, batch.node_ttl_ms, read).await?;
        let mut tx = self.db.begin().await?;
        let outcome = claim_batch(&mut tx, &mut leased, batch).await?;
        tx.commit().await?;
        if !outcome.nodes_stale {
            leased.keep();
        }
        Ok(outcome.claimed)
    }
}

#[async_trait]
impl<D: Db> Store for SqlStore<D> {
    async fn create_job(&self, new: NewJob) -> StoreResult<Created> {
        let mut tx = self.db.begin().await?;
        if let Some(key) = &new.idempotency_key {
            if let Some(job) = tx.job_by_key(key).await? {
                return existing(job, &new.request_hash);
            }
        }
        let mut job = new_record(&new);
        let Some(seq) = tx.insert_job(&job).await? else {
            // A concurrent create with the same key won the insert: its job is visible once
            // this transaction is gone.
            drop(tx);
            let key = new.idempotency_key.as_deref().unwrap_or_default();
            let job = self.db.conn().await?.job_by_key(key).await?;
            return existing(
                job.ok_or(StoreError::JobNotFound(new.job_id))?,
                &new.request_hash,
            );
        };
        job.seq = seq;
        for (key, value) in &job.payload.labels {
            tx.insert_label(seq, key, value).await?;
        }
        tx.insert_event(&job_event(&job)).await?;
        tx.commit().await?;
        self.created.fetch_add(1, Ordering::Relaxed);
        Ok(Created::New(job))
    }

    async fn get_job(&self, job_id: Uuid) -> StoreResult<JobRecord> {
        let job = self.db.conn().await?.job(job_id, Lock::None).await?;
        job.ok_or(StoreError::JobNotFound(job_id))
    }

    async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<JobRecord>> {
        self.db.conn().await?.jobs(filter).await
    }

    async fn job_versions(&self, ids: &[Uuid]) -> StoreResult<Vec<(Uuid, i64)>> {
        let mut conn = self.db.conn().await?;
        let mut versions = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(super::VERSIONS_PER_READ) {
            let chunk: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
            for (id, version) in conn.job_versions(&chunk).await? {
                if let Ok(id) = id.parse() {
                    versions.push((id, version));
                }
            }
        }
        Ok(versions)
    }

    async fn cancel_job(&self, job_id: Uuid, now: Millis) -> StoreResult<JobRecord> {
        let mut tx = self.db.begin().await?;
        let mut job = Self::lock_job(&mut tx, job_id, Lock::Update).await?;
        job.cancel(now)?;
        tx.save_transition(&job).await?;
        tx.commit().await?;
        Ok(job)
    }

    async fn claim_jobs(&self, batch: &ClaimBatch) -> StoreResult<Vec<Claimed>> {
        let mut tries = 0;
        loop {
            match self.try_claim(batch).await {
                Err(e) => match D::claim_retry(&e, tries) {
                    Some(pause) => {
                        tries += 1;
                        tokio::time::sleep(pause).await;
                    }
                    None => return Err(e),
                },
                claimed => return claimed,
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
        let mut tx = self.db.begin().await?;
        let mut job = Self::lock_job(&mut tx, job_id, Lock::Update).await?;
        job.renew(lease_token, expires_at, now)?;
        tx.update_job(&job).await?;
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
        let mut tx = self.db.begin().await?;
        // A shared lock: logs may arrive alongside a heartbeat, but not after a report.
        let job = Self::lock_job(&mut tx, job_id, Lock::Share).await?;
        job.check_lease(lease_token)?;
        if !lines.is_empty() {
            tx.insert_logs(job_id, lines, now).await?;
        }
        tx.commit().await
    }

    async fn report_job(
        &self,
        job_id: Uuid,
        lease_token: &str,
        report: Report,
        policy: &RetryPolicy,
        now: Millis,
    ) -> StoreResult<JobRecord> {
        let mut tx = self.db.begin().await?;
        let mut job = Self::lock_job(&mut tx, job_id, Lock::Update).await?;
        job.report(lease_token, report, policy, now)?;
        Self::end_attempt(&mut tx, &job, false, now).await?;
        let released = Self::save_releasing(&mut tx, &job).await?;
        tx.commit().await?;
        if released {
            self.nodes.forget();
        }
        Ok(job)
    }

    async fn job_timeline(&self, job_id: Uuid) -> StoreResult<(JobRecord, Vec<AttemptRecord>)> {
        let mut conn = self.db.conn().await?;
        let job = conn
            .job(job_id, Lock::None)
            .await?
            .ok_or(StoreError::JobNotFound(job_id))?;
        let attempts = conn.attempts(job_id).await?;
        Ok((job, attempts))
    }

    async fn job_logs(&self, job_id: Uuid) -> StoreResult<Vec<LogLine>> {
        let mut conn = self.db.conn().await?;
        if conn.job(job_id, Lock::None).await?.is_none() {
            return Err(StoreError::JobNotFound(job_id));
        }
        conn.logs(job_id).await
    }

    async fn expire_leases(
        &self,
        policy: &RetryPolicy,
        now: Millis,
    ) -> StoreResult<Vec<JobRecord>> {
        let mut tx = self.db.begin().await?;
        let mut changed = tx.expired(now).await?;
        let mut released = false;
        for job in &mut changed {
            job.expire_lease(policy, now)?;
            Self::end_attempt(&mut tx, job, true, now).await?;
            released |= Self::save_releasing(&mut tx, job).await?;
        }
        tx.commit().await?;
        if released {
            self.nodes.forget();
        }
        Ok(changed)
    }

    async fn app_run(&self, app_id: &str) -> StoreResult<Option<AppRunRecord>> {
        self.db.conn().await?.app_run(app_id, Lock::None).await
    }

    async fn node_heartbeat(&self, hb: &NodeHeartbeat, now: Millis) -> StoreResult<HeartbeatSaved> {
        self.record_reported_apps(hb, now).await?;
        let mut tx = self.db.begin().await?;
        let before = tx.node_state(&hb.node_id).await?;
        tx.upsert_node(hb, now).await?;
        let moved_from = before
            .as_ref()
            .map(|(_, agent)| agent)
            .filter(|agent| **agent != hb.agent_base_url);
        if let Some(previous) = moved_from {
            tx.agent_moved(&hb.node_id, previous, now).await?;
        }
        let node = tx
            .node(&hb.node_id)
            .await?
            .ok_or_else(|| StoreError::NodeNotFound(hb.node_id.clone()))?;
        let came_online =
            before.as_ref().map(|(state, _)| state.as_str()) != Some(NodeState::Online.as_str());
        if came_online {
            tx.insert_event(&node_event(&node, NodeState::Online, now))
                .await?;
        }
        if let Some(previous) = moved_from {
            tx.insert_event(&node_agent_moved_event(&node, previous, now))
                .await?;
        }
        for removed in &hb.removed {
            tx.insert_event(&node_app_removed_event(&hb.node_id, removed, now))
                .await?;
        }
        tx.commit().await?;
        if D::CACHE_NODES {
            self.nodes.refresh(node.clone());
        }
        Ok(HeartbeatSaved { node, came_online })
    }

    async fn displaced_apps(
        &self,
        node_id: &str,
        apps: &[NodeApp],
    ) -> StoreResult<Vec<DisplacedApp>> {
        let mut conn = self.db.conn().await?;
        let placed: HashSet<String> = conn.node_placed_apps(node_id).await?.into_iter().collect();
        let mut displaced_here = Vec::new();
        for app in apps.iter().filter(|a| !placed.contains(&a.app_id)) {
            let newest = |state| JobFilter {
                app_id: Some(app.app_id.clone()),
                state: Some(state),
                limit: 1,
                ..JobFilter::default()
            };
            let last_success = conn.jobs(&newest(JobState::Succeeded)).await?;
            if last_success.is_empty() {
                continue;
            }
            let running = !conn.jobs(&newest(JobState::Running)).await?.is_empty();
            let container_job = match app.job_id.as_deref().map(Uuid::parse_str) {
                Some(Ok(job_id)) => conn
                    .job(job_id, Lock::None)
                    .await?
                    .filter(|j| j.app_id == app.app_id),
                _ => None,
            };
            let known = Settlement {
                last_success: last_success.first(),
                running,
                container_job: container_job.as_ref(),
            };
            displaced_here.extend(displaced(node_id, app, known));
        }
        Ok(displaced_here)
    }

    async fn join_node(
        &self,
        node_id: &str,
        credential_hash: &str,
        now: Millis,
    ) -> StoreResult<NodeCredential> {
        let credential = NodeCredential::joined(node_id, credential_hash.to_owned(), now);
        let mut tx = self.db.begin().await?;
        if !tx.insert_credential(&credential).await? {
            return Err(Refused(format!(
                "node {node_id} has joined before: it heartbeats with the credential it got then (an operator can revoke it; a new host joins under a new node id)"
            ))
            .into());
        }
        tx.commit().await?;
        Ok(credential)
    }

    async fn use_credential(&self, hash: &str) -> StoreResult<NodeCredential> {
        let found = self.db.conn().await?.credential_by_hash(hash).await?;
        let credential = found.ok_or(CredentialRefused::Unknown)?;
        credential.check(hash)?;
        if credential.previous_hash.is_none() {
            return Ok(credential);
        }
        // The first use of a new credential retires the previous one: decided again on the
        // locked row, which a concurrent rotation or revocation may have changed.
        let mut tx = self.db.begin().await?;
        let mut locked = Self::lock_credential(&mut tx, &credential.node_id).await?;
        let presented = locked.check(hash)?;
        if locked.used(presented) {
            tx.update_credential(&locked).await?;
        }
        tx.commit().await?;
        Ok(locked)
    }

    async fn rotate_credential(
        &self,
        presented_hash: &str,
        new_hash: &str,
        now: Millis,
    ) -> StoreResult<NodeCredential> {
        let found = self
            .db
            .conn()
            .await?
            .credential_by_hash(presented_hash)
            .await?;
        let node_id = found.ok_or(CredentialRefused::Unknown)?.node_id;
        let mut tx = self.db.begin().await?;
        let mut credential = Self::lock_credential(&mut tx, &node_id).await?;
        let presented = credential.check(presented_hash)?;
        credential.rotate(presented, new_hash.to_owned(), now);
        tx.update_credential(&credential).await?;
        tx.commit().await?;
        Ok(credential)
    }

    async fn revoke_node(
        &self,
        node_id: &str,
        now: Millis,
        ttl_ms: i64,
    ) -> StoreResult<NodeCredential> {
        let mut tx = self.db.begin().await?;
        let mut credential = tx
            .lock_credential(node_id)
            .await?
            .ok_or_else(|| StoreError::NodeNotFound(node_id.to_owned()))?;
        credential.revoke(now);
        tx.update_credential(&credential).await?;
        if let Some((state, _)) = tx.node_state(node_id).await? {
            tx.cut_off_node(node_id, now - ttl_ms - 1).await?;
            if state == NodeState::Online.as_str() {
                if let Some(node) = tx.node(node_id).await? {
                    tx.insert_event(&node_event(&node, NodeState::Offline, now))
                        .await?;
                }
            }
        }
        tx.commit().await?;
        self.nodes.forget();
        Ok(credential)
    }

    async fn flush_heartbeats(&self, seen: &[LastSeen]) -> StoreResult<Vec<StillSeen>> {
        if seen.is_empty() {
            return Ok(vec![]);
        }
        let json = super::sql::last_seen_json(seen)
            .map_err(|e| StoreError::Corrupt(format!("serialise heartbeats: {e}")))?;
        let mut tx = self.db.begin().await?;
        tx.flush_last_seen(&json).await?;
        let kept = tx.still_seen(&json).await?;
        let placed = tx.placed_on_seen(&json).await?;
        tx.commit().await?;
        let mut apps: HashMap<String, Vec<String>> = HashMap::new();
        for (node_id, app_id) in placed {
            apps.entry(node_id).or_default().push(app_id);
        }
        kept.into_iter()
            .map(|(node_id, scheduling)| {
                let scheduling = Scheduling::parse(&scheduling).ok_or_else(|| {
                    StoreError::Corrupt(format!("node {node_id}: scheduling {scheduling}"))
                })?;
                let placed_apps = apps.remove(&node_id).unwrap_or_default();
                Ok(StillSeen {
                    node_id,
                    scheduling,
                    placed_apps,
                })
            })
            .collect()
    }

    async fn credentials_changed(&self, since: Millis) -> StoreResult<Vec<String>> {
        self.db.conn().await?.credentials_changed(since).await
    }

    async fn heartbeat_seeds(&self) -> StoreResult<Vec<HeartbeatSeed>> {
        let mut conn = self.db.conn().await?;
        let nodes = conn.nodes().await?;
        let placements = conn.placements().await?;
        let credentials = conn.current_credentials().await?;
        Ok(super::heartbeat_seeds(nodes, placements, credentials))
    }

    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        self.db.conn().await?.nodes().await
    }

    async fn list_placements(&self) -> StoreResult<Vec<Placement>> {
        self.db.conn().await?.placements().await
    }

    async fn set_scheduling(
        &self,
        node_id: &str,
        scheduling: Scheduling,
        now: Millis,
    ) -> StoreResult<NodeRecord> {
        let mut tx = self.db.begin().await?;
        tx.set_scheduling(node_id, scheduling).await?;
        let node = tx
            .node(node_id)
            .await?
            .ok_or_else(|| StoreError::NodeNotFound(node_id.to_owned()))?;
        tx.insert_event(&node_scheduling_event(&node, now)).await?;
        tx.commit().await?;
        self.nodes.forget();
        Ok(node)
    }

    async fn mark_offline_nodes(&self, now: Millis, ttl_ms: i64) -> StoreResult<Vec<NodeRecord>> {
        let mut tx = self.db.begin().await?;
        let ids = tx.stale_nodes(now - ttl_ms).await?;
        for id in &ids {
            tx.set_offline(id).await?;
        }
        let mut gone = Vec::with_capacity(ids.len());
        if !ids.is_empty() {
            gone = tx.nodes().await?;
            gone.retain(|n| ids.contains(&n.node_id));
        }
        for node in &gone {
            tx.insert_event(&node_event(node, NodeState::Offline, now))
                .await?;
        }
        tx.commit().await?;
        if !ids.is_empty() {
            self.nodes.forget();
        }
        Ok(gone)
    }

    async fn stats(&self) -> StoreResult<QueueStats> {
        let counts = self.db.conn().await?.job_counts().await?;
        Ok(QueueStats::from_counts(counts))
    }

    async fn claim_outbox(&self, limit: u32) -> StoreResult<Box<dyn OutboxBatch>> {
        let (held, events) = if D::HOLD_OUTBOX {
            let mut tx = self.db.begin().await?;
            let events = take_outbox(&mut tx, limit).await?;
            (Some(tx), events)
        } else {
            (None, take_outbox(&mut self.db.conn().await?, limit).await?)
        };
        Ok(Box::new(SqlBatch {
            db: self.db.clone(),
            held,
            events,
        }))
    }

    async fn prune_outbox(&self, before: Millis, unpublished_too: bool) -> StoreResult<u64> {
        let mut tx = self.db.begin().await?;
        let deleted = tx.prune_outbox(before, unpublished_too).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn refresh_statistics(&self) -> StoreResult<bool> {
        if self.created.load(Ordering::Relaxed) < super::STATS_EVERY {
            return Ok(false);
        }
        self.created.store(0, Ordering::Relaxed);
        self.db.conn().await?.analyze_queue().await?;
        Ok(true)
    }

    async fn prune_jobs(&self, before: Millis) -> StoreResult<u64> {
        let mut tx = self.db.begin().await?;
        let ids = tx.prunable_jobs(before, super::PRUNE_JOBS_CHUNK).await?;
        if !ids.is_empty() {
            tx.delete_jobs(&ids).await?;
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }
}

/// Up to `limit` unpublished events (locked by `conn` where it is a transaction on a database
/// that locks rows), but those that would overtake an earlier event of their subject another
/// relay holds.
async fn take_outbox(conn: &mut impl Read, limit: u32) -> StoreResult<Vec<OutboxRow>> {
    let rows = conn.unpublished(limit).await?;
    let Some(last) = rows.last() else {
        return Ok(rows);
    };
    let taken: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    // Earlier unpublished rows we did not get: another relay holds them.
    let elsewhere = conn.unpublished_before(last.seq, &taken).await?;
    Ok(in_order(rows, &elsewhere))
}

/// A relay's batch: the rows stay locked by `held` until it commits or rolls back, or (without
/// `D::HOLD_OUTBOX`) were read without a lock and are marked in one short transaction.
struct SqlBatch<D: Db> {
    db: D,
    held: Option<D::Tx>,
    events: Vec<OutboxRow>,
}

#[async_trait]
impl<D: Db> OutboxBatch for SqlBatch<D> {
    fn events(&self) -> &[OutboxRow] {
        &self.events
    }

    async fn mark_published(self: Box<Self>, seqs: &[i64], now: Millis) -> StoreResult<()> {
        let mut tx = match self.held {
            Some(tx) => tx,
            None if seqs.is_empty() => return Ok(()),
            None => self.db.begin().await?,
        };
        if !seqs.is_empty() {
            tx.mark_published(seqs, now).await?;
        }
        tx.commit().await
    }
}
