//! Claims that arrive together share one transaction, as commits share a flush in a group
//! commit.
//!
//! Alone, every claim costs the database a transaction: a few round trips and a commit. Here
//! a claim joins a queue, and a batch task hands every claim waiting (up to [`MAX_BATCH`]) to
//! [`Store::claim_jobs`], which picks that many jobs in one transaction. Nothing waits for a
//! batch to fill: a lone claim runs at once, in a batch of one, and batches only form from
//! claims that arrived while earlier ones were in the database. At most [`BATCHES`] batches
//! are in the database at a time, so a burst of claims holds one pool connection instead of
//! one each. On PostgreSQL and MySQL claims decide with their process's node fleet
//! (`storage::node_cache`), which they hold only while they decide where a job runs.
//!
//! A batch runs in a task of its own, so a runner that hangs up mid-claim cancels nobody
//! else's claim. A job claimed for a runner that hung up meanwhile keeps its lease until the
//! lease runs out and the reaper hands the job out again — as when the answer to a lone claim
//! is lost on the way.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::queue::{now_millis, Millis};
use crate::storage::{ClaimBatch, Claimed, Claimer, Store, StoreError, StoreResult};
use crate::watch::Watch;

/// Most claims one transaction serves.
pub const MAX_BATCH: usize = 32;

/// Most batches in the database at once. One: the next batch forms while it runs, and grows
/// with the claims that wait. Two overlapping batches served as many sticky claims per second
/// but fewer placements, each waiting on the other's reservations (docs/benchmarks.md).
pub const BATCHES: usize = 1;

/// The queue of claims waiting for a batch. Cheap to clone.
#[derive(Clone)]
pub struct ClaimQueue {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    lease_ms: Millis,
    node_ttl_ms: Millis,
    node_lost_ms: Millis,
    watch: Watch,
    batch_sizes: Histogram,
    waiting: Mutex<VecDeque<Waiting>>,
    batches: Arc<Semaphore>,
}

/// A claim in the queue, and where its answer goes.
struct Waiting {
    claimer: Claimer,
    reply: oneshot::Sender<StoreResult<Option<Claimed>>>,
}

impl ClaimQueue {
    /// A queue claiming from `store` with leases of `lease_ms`, counting nodes whose last
    /// heartbeat is older than `node_ttl_ms` as `OFFLINE`, and recording each batch's size in
    /// `batch_sizes`. Each batch tells `watch` whether it reached the database, moves no app
    /// off a node that looks `OFFLINE` until `watch` has watched for one TTL, and judges no
    /// node lost (silent for `node_lost_ms`) until it has watched that long ([`crate::watch`]).
    pub fn new(
        store: Arc<dyn Store>,
        lease_ms: Millis,
        (node_ttl_ms, node_lost_ms): (Millis, Millis),
        watch: Watch,
        batch_sizes: Histogram,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                lease_ms,
                node_ttl_ms,
                node_lost_ms,
                watch,
                batch_sizes,
                waiting: Mutex::default(),
                batches: Arc::new(Semaphore::new(BATCHES)),
            }),
        }
    }

    /// Claims one job for `claimer` in the next batch: `None` when nothing is claimable.
    pub async fn claim(&self, claimer: Claimer) -> StoreResult<Option<Claimed>> {
        let (reply, answer) = oneshot::channel();
        self.inner.lock().push_back(Waiting { claimer, reply });
        self.inner.clone().start_batches();
        answer
            .await
            .map_err(|_| StoreError::Corrupt("a claim batch ended without an answer".into()))?
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting>> {
        // The queue stays consistent whatever panicked while holding the lock.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a batch task unless [`BATCHES`] already run; a running one takes the new
    /// claims when its batch is done.
    fn start_batches(self: Arc<Self>) {
        if let Ok(permit) = self.batches.clone().try_acquire_owned() {
            tokio::spawn(self.run_batches(permit));
        }
    }

    /// Serves batches until the queue is empty.
    async fn run_batches(self: Arc<Self>, permit: OwnedSemaphorePermit) {
        loop {
            let batch: Vec<Waiting> = {
                let mut waiting = self.lock();
                let n = waiting.len().min(MAX_BATCH);
                waiting.drain(..n).collect()
            };
            if batch.is_empty() {
                break;
            }
            self.batch_sizes.observe(batch.len() as f64);
            let span = tracing::debug_span!("claim_batch", claims = batch.len());
            self.serve(batch).instrument(span).await;
        }
        drop(permit);
        // A claim queued after the last look, while every batch task was busy, found no free
        // task to start: look again now that this one is free.
        if !self.lock().is_empty() {
            self.start_batches();
        }
    }

    /// Claims for every claim of `batch` in one transaction and answers each.
    async fn serve(&self, batch: Vec<Waiting>) {
        let now = now_millis();
        let (claimers, replies): (Vec<Claimer>, Vec<_>) =
            batch.into_iter().map(|w| (w.claimer, w.reply)).unzip();
        let request = ClaimBatch {
            claimers,
            lease_expires_at: now + self.lease_ms,
            now,
            node_ttl_ms: self.node_ttl_ms,
            nodes_settled: self.watch.watched(now, self.node_ttl_ms),
            node_lost_ms: Some(self.node_lost_ms).filter(|lost| self.watch.watched(now, *lost)),
        };
        let outcome = self.store.claim_jobs(&request).await;
        self.watch.saw(&outcome, now_millis());
        match outcome {
            Ok(claimed) => {
                let mut jobs = claimed.into_iter();
                for reply in replies {
                    if let Err(Ok(Some(lost))) = reply.send(Ok(jobs.next())) {
                        tracing::warn!(
                            job_id = %lost.job.job_id,
                            app_id = %lost.job.app_id,
                            "the runner hung up before its claim was answered; the job goes back to the queue when its lease runs out"
                        );
                    }
                }
            }
            Err(e) => {
                let shared = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Batch(shared.clone())));
                }
            }
        }
    }
}
