//! Coalesced heartbeats: a node's routine heartbeat costs the database nothing at once.
//!
//! A heartbeat that reports exactly what this process last wrote for its node (same name,
//! addresses, labels, capacity, apps and their states, version; nothing `removed`) is answered
//! from memory, and its arrival time waits for the next flush, which writes the last-seens of
//! every such node in one transaction of three statements ([`Store::flush_heartbeats`]) every
//! [`Beats::every`] (250 ms, or an eighth of the TTL when that is shorter). Everything else takes
//! the full path and is durable before it is answered: a node's first heartbeat here, a node
//! coming (back) `ONLINE`, any change of what it reports, removed containers, and every
//! heartbeat while this process has no fresh flush of the node.
//!
//! What stays exact, across replicas:
//! - `OFFLINE`: the node watcher still judges the database's `last_heartbeat_at`, which lags a
//!   node's real last heartbeat by at most one flush period plus the flush's own duration. A
//!   node is answered from memory only while its last flushed heartbeat is younger than the TTL
//!   less one flush period ([`Known::fresh`]): no watcher can have marked it `OFFLINE` since, so
//!   a coalesced answer never hides a node's return. A silent node goes `OFFLINE` as before,
//!   within the TTL (plus the sweep period) of its last heartbeat that reached the database.
//! - Credentials: a credential the database accepted as the node's only one is kept here
//!   ([`Beats::credential`]). Each flush first asks which nodes' credentials were revoked or
//!   rotated since the last one ([`Store::credentials_changed`]) and forgets them, and its
//!   writes check each node's credential again: a node revoked (or rotated) on another replica
//!   is refused here from this process's next flush on, at most one flush period plus the
//!   flush's own time after the revocation committed; on the replica that revoked or rotated
//!   it, at once ([`Beats::forget`]). A rotation under way (the previous credential still
//!   good) is decided in the database on every request. A request whose credential came from
//!   memory and that is not coalesced checks it in the database before anything is written.
//! - Answers: the scheduling and the placed apps a coalesced answer is decided from are those
//!   the last flush read (at most one flush period old); a reported app not placed on the node
//!   takes the full path, which judges what to remove ([`crate::queue::displaced`]).
//!
//! A process that just started knows no node, so every node's first heartbeat on it would take
//! the full path: a restart under 10,000 nodes would write 10,000 heartbeats in full within one
//! interval. So, within one TTL of the start, each flush first reads the nodes recorded `ONLINE`
//! with their current credential, last full report and placed apps ([`Store::heartbeat_seeds`];
//! once more before the process serves)
//! and keeps those this process has not heard yet as if it had written them itself, confirmed
//! at their `last_heartbeat_at`: a node whose first heartbeat here repeats its row is coalesced
//! under the rules above (the read is at most one flush period old, as a flush's). Reading
//! stops once every node read was heard here, or one TTL after the start; the nodes never heard
//! are then forgotten.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use berth_shared::wire::{NodeHeartbeat, Scheduling};

use crate::queue::credential::NodeCredential;
use crate::queue::{now_millis, Millis};
use crate::state::AppState;
use crate::storage::{HeartbeatSeed, LastSeen, StillSeen, Store, StoreResult};

/// The longest time between two flushes.
pub const MAX_FLUSH_EVERY: Duration = Duration::from_millis(250);

/// One process's coalesced heartbeats and the node credentials it accepted.
#[derive(Debug)]
pub struct Beats {
    every: Duration,
    ttl_ms: Millis,
    /// When this process started (its seeding ends one TTL later).
    started: Millis,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Credential hash → the node it speaks for: credentials the database accepted as a node's
    /// current one (no rotation under way), checked again by each flush that carries them.
    nodes_of: HashMap<String, String>,
    /// Node → the one credential hash of it kept in `nodes_of`.
    hash_of: HashMap<String, String>,
    /// What this process knows of each node it wrote in full.
    known: HashMap<String, Known>,
    /// The last-seens the next flush writes.
    pending: HashMap<String, LastSeen>,
    /// When the last check of the kept credentials started ([`Beats::check_credentials`]).
    checked_at: Option<Millis>,
    /// Whether flushes still read the seeds ([`Beats::seed`]).
    seeding: bool,
    /// Nodes forgotten since the seed read under way began: its rows of them may be older.
    forgotten: HashSet<String>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            nodes_of: HashMap::new(),
            hash_of: HashMap::new(),
            known: HashMap::new(),
            pending: HashMap::new(),
            checked_at: None,
            seeding: true,
            forgotten: HashSet::new(),
        }
    }
}

/// A node whose heartbeats can be coalesced.
#[derive(Debug)]
struct Known {
    /// The credential hash it presents.
    hash: String,
    /// The heartbeat last written in full (with nothing `removed`).
    written: NodeHeartbeat,
    /// What the last flush that carried it read; `None` until one did.
    kept: Option<Kept>,
    /// Known from a seed only: not heard by this process yet.
    seeded: bool,
}

/// A flush's view of a node.
#[derive(Debug)]
struct Kept {
    /// The heartbeat time the flush found written (the database holds at least this).
    confirmed: Millis,
    scheduling: Scheduling,
    placed: HashSet<String>,
}

/// A heartbeat answered from memory: what the full path would have answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalesced {
    /// The node's scheduling as of the last flush.
    pub scheduling: Scheduling,
}

impl Known {
    /// Whether the database still records the node `ONLINE` at `now`, as far as any replica's
    /// watcher can have judged: its last flushed heartbeat is younger than the TTL less one
    /// flush period (slack for the replicas' clocks).
    fn fresh(&self, now: Millis, ttl_ms: Millis, every_ms: Millis) -> Option<&Kept> {
        self.kept
            .as_ref()
            .filter(|k| now - k.confirmed < ttl_ms - every_ms)
    }
}

impl Beats {
    /// The coalescer of a control plane whose node TTL is `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            every: MAX_FLUSH_EVERY.min(ttl / 8),
            ttl_ms: ttl.as_millis() as Millis,
            started: now_millis(),
            inner: Mutex::default(),
        }
    }

    /// How often the flush runs.
    pub fn every(&self) -> Duration {
        self.every
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Maps only: consistent whatever panicked while holding the lock.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node a credential hashing to `hash` speaks for, when this process accepted it
    /// (not yet checked again: see the module's rules).
    pub fn credential(&self, hash: &str) -> Option<String> {
        self.lock().nodes_of.get(hash).cloned()
    }

    /// Keeps `credential`, which the database just accepted for a presented `hash`, when it is
    /// the node's only one (a rotation under way is decided in the database each time).
    pub fn accepted(&self, hash: &str, credential: &NodeCredential) {
        if credential.previous_hash.is_some() || credential.credential_hash != hash {
            return;
        }
        let mut inner = self.lock();
        let node_id = credential.node_id.clone();
        if inner.hash_of.get(&node_id).is_some_and(|kept| kept != hash) {
            inner.drop_node(&node_id);
        }
        inner.nodes_of.insert(hash.to_owned(), node_id.clone());
        inner.hash_of.insert(node_id, hash.to_owned());
    }

    /// Answers `hb`, presented with a credential hashing to `hash`, at `now` from memory when it
    /// repeats what was last written and the node's last flush is fresh; its last-seen then
    /// waits for the next flush. `None`: take the full path.
    pub fn coalesce(&self, hash: &str, hb: &NodeHeartbeat, now: Millis) -> Option<Coalesced> {
        if !hb.removed.is_empty() {
            return None;
        }
        let every_ms = self.every.as_millis() as Millis;
        let mut inner = self.lock();
        let known = inner.known.get_mut(&hb.node_id)?;
        let kept = known.fresh(now, self.ttl_ms, every_ms)?;
        let same = known.hash == hash
            && known.written == *hb
            && hb.apps.iter().all(|a| kept.placed.contains(&a.app_id));
        if !same {
            return None;
        }
        let answer = Coalesced {
            scheduling: kept.scheduling,
        };
        known.seeded = false;
        inner.see(&hb.node_id, hash, now);
        Some(answer)
    }

    /// Records that `hb`, presented with a credential hashing to `hash`, was just written in
    /// full at `now`: the node's next heartbeats may be coalesced once a flush has kept it.
    pub fn written(&self, hash: &str, hb: &NodeHeartbeat, now: Millis) {
        let mut inner = self.lock();
        if inner.nodes_of.get(hash) != Some(&hb.node_id) {
            return;
        }
        let written = NodeHeartbeat {
            removed: vec![],
            ..hb.clone()
        };
        let known = Known {
            hash: hash.to_owned(),
            written,
            kept: None,
            seeded: false,
        };
        inner.known.insert(hb.node_id.clone(), known);
        inner.see(&hb.node_id, hash, now);
    }

    /// Forgets node `node_id` (revoked, rotated, rescheduled or marked `OFFLINE` here): its
    /// next heartbeat takes the full path and checks its credential in the database.
    pub fn forget(&self, node_id: &str) {
        self.lock().drop_node(node_id);
    }

    /// Forgets the credentials of the nodes whose credential the database revoked or rotated
    /// since the last check began, less one TTL: a revocation written by a replica whose clock
    /// is behind this one's by less than the TTL is still seen (the node watcher makes the same
    /// assumption of the replicas' clocks). On a failure every kept credential is forgotten.
    async fn check_credentials(&self, store: &dyn Store) -> StoreResult<()> {
        let started = now_millis();
        let since = {
            let mut inner = self.lock();
            if inner.nodes_of.is_empty() {
                inner.checked_at = Some(started);
                return Ok(());
            }
            inner.checked_at.unwrap_or(started) - self.ttl_ms
        };
        let outcome = store.credentials_changed(since).await;
        let mut inner = self.lock();
        match outcome {
            Ok(changed) => {
                for node_id in &changed {
                    inner.drop_node(node_id);
                }
                inner.checked_at = Some(started);
                Ok(())
            }
            Err(e) => {
                inner.nodes_of.clear();
                inner.hash_of.clear();
                Err(e)
            }
        }
    }

    /// While seeding (see the module's rules): reads the seeds and keeps them. Each flush calls
    /// it; a control plane also calls it once before it serves, so that the first heartbeats
    /// after a restart already find their nodes. A failed read ends seeding (first heartbeats
    /// then take the full path, as without it) and is logged; the flush goes on.
    pub async fn seed(&self, store: &dyn Store) {
        {
            let mut inner = self.lock();
            if !inner.seeding {
                return;
            }
            if now_millis() - self.started >= self.ttl_ms {
                inner.end_seeding();
                return;
            }
            inner.forgotten.clear();
        }
        match store.heartbeat_seeds().await {
            Ok(seeds) => self.lock().seed(seeds),
            Err(e) => {
                tracing::warn!(error = ?anyhow::Error::from(e), "reading the nodes to seed coalescing failed: their first heartbeats here take the full path");
                self.lock().end_seeding();
            }
        }
    }

    /// One flush: checks the kept credentials ([`Beats::check_credentials`]), then writes the
    /// pending last-seens ([`Store::flush_heartbeats`]) and refreshes what the coalesced
    /// answers are decided from; a node the flush did not keep is forgotten. On a failure every
    /// node takes the full path until a flush succeeds, and the last-seens wait for the next
    /// one. Returns how many last-seens it wrote.
    pub async fn flush(&self, store: &dyn Store) -> StoreResult<usize> {
        self.check_credentials(store).await?;
        self.seed(store).await;
        let seen: Vec<LastSeen> = std::mem::take(&mut self.lock().pending)
            .into_values()
            .collect();
        if seen.is_empty() {
            return Ok(0);
        }
        let outcome = store.flush_heartbeats(&seen).await;
        let mut inner = self.lock();
        match outcome {
            Ok(kept) => {
                inner.keep(&seen, kept);
                Ok(seen.len())
            }
            Err(e) => {
                for known in inner.known.values_mut() {
                    known.kept = None;
                }
                for s in seen {
                    let later = inner.pending.get(&s.node_id).is_some_and(|p| p.at >= s.at);
                    if !later {
                        inner.pending.insert(s.node_id.clone(), s);
                    }
                }
                Err(e)
            }
        }
    }
}

impl Inner {
    fn see(&mut self, node_id: &str, hash: &str, at: Millis) {
        self.pending.insert(
            node_id.to_owned(),
            LastSeen {
                node_id: node_id.to_owned(),
                at,
                credential_hash: hash.to_owned(),
            },
        );
    }

    fn drop_node(&mut self, node_id: &str) {
        if self.seeding {
            self.forgotten.insert(node_id.to_owned());
        }
        self.known.remove(node_id);
        self.pending.remove(node_id);
        if let Some(hash) = self.hash_of.remove(node_id) {
            self.nodes_of.remove(&hash);
        }
    }

    /// Keeps `seeds` of the nodes not heard here yet, in place of an earlier read's; a node an
    /// earlier read seeded that this one lacks (revoked, rotating, `OFFLINE`) is forgotten.
    /// Seeding ends when no seeded node is left to hear.
    fn seed(&mut self, seeds: Vec<HeartbeatSeed>) {
        let listed: HashSet<&str> = seeds.iter().map(|s| s.heartbeat.node_id.as_str()).collect();
        let gone: Vec<String> = self
            .known
            .iter()
            .filter(|(id, k)| k.seeded && !listed.contains(id.as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        for node_id in gone {
            self.drop_node(&node_id);
        }
        for seed in seeds {
            let node_id = seed.heartbeat.node_id.clone();
            let seeded_before = self.known.get(&node_id).is_some_and(|k| k.seeded);
            let heard = self.known.contains_key(&node_id) && !seeded_before;
            // A credential a request had the database accept is newer than any read.
            let accepted_other = !seeded_before
                && self
                    .hash_of
                    .get(&node_id)
                    .is_some_and(|h| *h != seed.credential_hash);
            if heard || accepted_other || self.forgotten.contains(&node_id) {
                continue;
            }
            let hash = seed.credential_hash.clone();
            if let Some(old) = self.hash_of.insert(node_id.clone(), hash.clone()) {
                if old != hash {
                    self.nodes_of.remove(&old);
                }
            }
            self.nodes_of.insert(hash, node_id.clone());
            let known = Known {
                hash: seed.credential_hash,
                written: seed.heartbeat,
                kept: Some(Kept {
                    confirmed: seed.last_heartbeat_at,
                    scheduling: seed.scheduling,
                    placed: seed.placed_apps.into_iter().collect(),
                }),
                seeded: true,
            };
            self.known.insert(node_id, known);
        }
        if !self.known.values().any(|k| k.seeded) {
            self.seeding = false;
        }
    }

    /// Stops seeding and forgets the seeded nodes never heard here.
    fn end_seeding(&mut self) {
        self.seeding = false;
        let unheard: Vec<String> = self
            .known
            .iter()
            .filter(|(_, k)| k.seeded)
            .map(|(id, _)| id.clone())
            .collect();
        for node_id in unheard {
            self.drop_node(&node_id);
        }
    }

    /// Applies a flush of `seen` that kept `kept`.
    fn keep(&mut self, seen: &[LastSeen], kept: Vec<StillSeen>) {
        let mut kept: HashMap<String, StillSeen> =
            kept.into_iter().map(|k| (k.node_id.clone(), k)).collect();
        for s in seen {
            let Some(still) = kept.remove(&s.node_id) else {
                self.drop_node(&s.node_id);
                continue;
            };
            if let Some(known) = self.known.get_mut(&s.node_id) {
                if known.hash == s.credential_hash {
                    known.kept = Some(Kept {
                        confirmed: s.at,
                        scheduling: still.scheduling,
                        placed: still.placed_apps.into_iter().collect(),
                    });
                }
            }
        }
    }
}

/// Flushes `state`'s coalesced heartbeats every [`Beats::every`] until `shutdown` completes,
/// then once more, so the last-seens this process answered reach the database.
pub async fn run(state: AppState, shutdown: impl std::future::Future<Output = ()>) {
    let period = state.beats().every();
    crate::background::every(period, shutdown, || flush(&state)).await;
    flush(&state).await;
}

/// One flush; an outage is told to the watch, any error logged (the next flush tries again).
/// A flush with nothing to write may not have reached the database, so it tells the watch
/// nothing: only what the database answered may end an outage.
async fn flush(state: &AppState) {
    let outcome = state.beats().flush(state.store()).await;
    if !matches!(outcome, Ok(0)) {
        state.watch().saw(&outcome, now_millis());
    }
    if let Err(e) = outcome {
        tracing::warn!(error = ?anyhow::Error::from(e), "flushing coalesced heartbeats failed: nodes heartbeat in full until a flush succeeds");
    }
}
