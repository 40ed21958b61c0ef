//! The node table as claims see it, kept in memory between claims and patched as they place.
//!
//! Every claim needs every node (is the app's node still online? which node has room?), but
//! the table changes at heartbeat pace while claims come by the thousand per second, and a
//! fleet of 10,000 nodes is too big to read per claim. So this process keeps one [`Fleet`],
//! shared by all its claims:
//! - a claim leases it ([`NodeCache::lease`]) for its transaction, but holds its lock only
//!   while it decides where a job runs and counts the app it places there
//!   ([`FleetView::with`]), never across a round trip, so a process's claims overlap their
//!   transactions as they did without the fleet. A placement is counted when it is decided,
//!   before the database reserves it, so a claim deciding meanwhile already sees it;
//! - when a claim's transaction fails, or the database refused a reservation the fleet allowed
//!   (another replica took the room), the claim does not keep its lease ([`Leased::keep`]) and
//!   the fleet is marked stale: the next lease reads the table again. Claims already deciding
//!   go on with the rows they have until then;
//! - a heartbeat written through this process hands in its node's new row
//!   ([`NodeCache::refresh`]), applied by the next lease; a row of a node the fleet does not
//!   hold, and any other node change written here ([`NodeCache::forget`]), make the next lease
//!   read the table again;
//! - whatever this process did, the fleet is read again once it is [`MAX_AGE_MS`] old (or an
//!   eighth of the node TTL, if that is shorter), so another replica's changes and the
//!   heartbeats coalesced since are seen within about that time — far inside a node's TTL, so
//!   a node that heartbeats never looks `OFFLINE` to a claim.
//!   That read runs in a task of its own while claims go on with the fleet they have, which
//!   records what they change meanwhile ([`Fleet::start_journal`]); the new rows replace it
//!   with those changes applied again. A placement the read already saw is then counted
//!   twice until the next read, which only spreads apps more. Past [`MAX_STALE_MS`] (or a
//!   quarter of the TTL; the read is slow, or failed) claims wait for a read, one at a time.
//!
//! Capacity stays exact whatever the fleet says: reservations are guarded in SQL. A count the
//! fleet lost (a claim counted in rows that were then read again before it committed) at worst
//! lets a later claim try a node that is full, which the database refuses.
//!
//! PostgreSQL and MySQL use it; SQLite reads the table inside its single writer's transaction,
//! where the read costs no round trip.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use super::StoreResult;
use crate::queue::fleet::Fleet;
use crate::queue::{Millis, NodeRecord};

/// How old (in the claim's clock) a fleet read from the table may grow before a claim starts
/// reading it again, beside the claims.
pub const MAX_AGE_MS: Millis = 500;

/// How old a fleet may grow while a read beside the claims is under way: past it, a claim
/// reads the table itself before deciding.
pub const MAX_STALE_MS: Millis = 5 * MAX_AGE_MS;

/// Most heartbeat rows kept for the next lease; beyond them, reading the table is cheaper.
pub const MAX_CHANGED_ROWS: usize = 1_024;

/// The fleet a claim decides with and counts its placements in: one read for the claim
/// ([`Fleet`] itself), or the one its process shares between claims ([`Leased`]).
pub trait FleetView: Send {
    /// Runs `f` on the fleet, with no other claim of this process deciding meanwhile. `f`
    /// must not wait on anything.
    fn with<T>(&mut self, f: impl FnOnce(&mut Fleet) -> T) -> T;
}

impl FleetView for Fleet {
    fn with<T>(&mut self, f: impl FnOnce(&mut Fleet) -> T) -> T {
        f(self)
    }
}

/// This process's fleet, and the node changes written since a claim last leased it.
#[derive(Debug, Default)]
pub struct NodeCache {
    kept: Mutex<Kept>,
    changes: Mutex<Changes>,
    /// Held by the claim reading the table before it decides, so the claims that find the
    /// fleet stale meanwhile wait for its rows instead of reading the table too.
    reading: tokio::sync::Mutex<()>,
}

/// A fleet and when (claim clock) it was read from the table.
#[derive(Debug, Default)]
struct Kept {
    /// `None`: the fleet is stale, the next lease reads the table.
    read_at: Option<Millis>,
    fleet: Fleet,
    /// Counts the times the fleet was marked stale or read in full, so a read beside the
    /// claims that began before one is not kept.
    generation: u64,
    /// Whether a read beside the claims is under way.
    refreshing: bool,
}

impl Kept {
    /// Marks the fleet stale: the next lease reads the table. Claims that hold a lease go on
    /// with its rows meanwhile.
    fn mark_stale(&mut self) {
        self.read_at = None;
        self.generation += 1;
        self.refreshing = false;
        self.fleet.take_journal();
    }
}

/// Node changes written outside claims, for the next lease to apply.
#[derive(Debug, Default)]
struct Changes {
    /// Read the table again.
    forget: bool,
    /// Rows heartbeats wrote, oldest first.
    rows: Vec<NodeRecord>,
}

/// What a lease must do before its claim decides.
enum Before {
    /// Nothing: the fleet is fresh enough.
    Nothing,
    /// Start a read beside the claims, for the fleet of this generation.
    ReadBeside(u64),
    /// Read the table and wait for its rows.
    Read,
}

/// One claim's use of the fleet, from its first decision to its commit. Dropped without
/// [`Leased::keep`], it marks the fleet stale.
#[derive(Debug)]
pub struct Leased {
    cache: Arc<NodeCache>,
    keep: bool,
}

impl NodeCache {
    /// The fleet for one claim at `now`: the one kept, with the rows heartbeats wrote since,
    /// or — when it is stale, lacks a node or is older than [`MAX_STALE_MS`] — the rows
    /// `read` returns (one claim reads, the others wait for its rows). A fleet older than
    /// [`MAX_AGE_MS`] is served while `read` runs in a task of its own.
    ///
    /// Under a short node TTL (`ttl_ms`) the limits are an eighth and a quarter of it.
    pub async fn lease<F, R>(
        self: &Arc<Self>,
        now: Millis,
        ttl_ms: Millis,
        read: R,
    ) -> StoreResult<Leased>
    where
        R: FnOnce() -> F + Send + 'static,
        F: Future<Output = StoreResult<Vec<NodeRecord>>> + Send + 'static,
    {
        let leased = Leased {
            cache: self.clone(),
            keep: false,
        };
        match self.before(now, ttl_ms) {
            Before::Nothing => {}
            Before::ReadBeside(generation) => {
                let cache = self.clone();
                tokio::spawn(async move {
                    let rows = read().await;
                    cache.refreshed(generation, now, rows);
                });
            }
            Before::Read => {
                let _reading = self.reading.lock().await;
                // Another claim may have read it while this one waited.
                if let Before::Read = self.before(now, ttl_ms) {
                    let rows = read().await?;
                    let mut kept = self.kept();
                    kept.mark_stale();
                    kept.fleet = Fleet::new(rows);
                    kept.read_at = Some(now);
                }
            }
        }
        Ok(leased)
    }

    /// Applies the changes written since the last lease and says what a lease at `now` must
    /// do first; marks a read beside the claims as under way when it says so.
    fn before(&self, now: Millis, ttl_ms: Millis) -> Before {
        let changes = std::mem::take(&mut *self.changes());
        let mut kept = self.kept();
        // A clock that went back (tests inject time) counts as too old.
        let age = kept.read_at.map(|at| now - at).filter(|age| *age >= 0);
        let (max_age, max_stale) = (MAX_AGE_MS.min(ttl_ms / 8), MAX_STALE_MS.min(ttl_ms / 4));
        let usable = match age {
            Some(age) if !changes.forget && age < max_stale => {
                changes.rows.into_iter().all(|row| kept.fleet.replace(row))
            }
            _ => false,
        };
        if !usable {
            kept.mark_stale();
            Before::Read
        } else if age.is_some_and(|age| age >= max_age) && !kept.refreshing {
            kept.refreshing = true;
            kept.fleet.start_journal();
            Before::ReadBeside(kept.generation)
        } else {
            Before::Nothing
        }
    }

    /// A read beside the claims, begun at `read_at` on the fleet of `generation`, returned
    /// `rows`: they replace the fleet, with what claims and heartbeats changed meanwhile
    /// applied again. Dropped if the fleet was marked stale or read in full since it began.
    fn refreshed(&self, generation: u64, read_at: Millis, rows: StoreResult<Vec<NodeRecord>>) {
        let mut kept = self.kept();
        if kept.generation != generation {
            return;
        }
        kept.refreshing = false;
        let changed = kept.fleet.take_journal();
        match rows {
            Ok(rows) => {
                let mut fleet = Fleet::new(rows);
                fleet.apply(changed);
                kept.fleet = fleet;
                kept.read_at = Some(read_at);
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the node table for the claims failed: the next claim tries again");
            }
        }
    }

    /// A heartbeat wrote this row: the next lease puts it in the fleet. Past
    /// [`MAX_CHANGED_ROWS`] waiting rows (no claim came for a while) the next lease reads the
    /// table instead.
    pub fn refresh(&self, row: NodeRecord) {
        let mut changes = self.changes();
        if changes.forget {
            return;
        }
        if changes.rows.len() >= MAX_CHANGED_ROWS {
            changes.forget = true;
            changes.rows.clear();
        } else {
            changes.rows.push(row);
        }
    }

    /// A node or a placement changed in a way the fleet cannot follow: the next lease reads
    /// the table again.
    pub fn forget(&self) {
        let mut changes = self.changes();
        changes.forget = true;
        changes.rows.clear();
    }

    // Neither lock is held across an await, and the data stays consistent whatever panicked
    // while holding one.
    fn changes(&self) -> MutexGuard<'_, Changes> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kept(&self) -> MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FleetView for Leased {
    fn with<T>(&mut self, f: impl FnOnce(&mut Fleet) -> T) -> T {
        f(&mut self.cache.kept().fleet)
    }
}

impl Leased {
    /// The claim's transaction committed, and the database took every placement the fleet
    /// allowed: the fleet stays as the claim counted it.
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Leased {
    fn drop(&mut self) {
        if !self.keep {
            self.cache.kept().mark_stale();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::placement::tests::node;
    use futures::future::BoxFuture;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The default node TTL: the limits are not shortened.
    const TTL_MS: Millis = 15_000;

    /// A table of nodes `a` and `b` for the cache to read, counting its reads.
    #[derive(Clone, Default)]
    struct Table {
        reads: Arc<AtomicUsize>,
        apps_on_b: Arc<AtomicUsize>,
    }

    impl Table {
        /// A read that, like a database's, waits before its rows come back.
        fn read(&self) -> impl FnOnce() -> BoxFuture<'static, StoreResult<Vec<NodeRecord>>> + Send {
            let table = self.clone();
            move || {
                Box::pin(async move {
                    tokio::task::yield_now().await;
                    table.reads.fetch_add(1, Ordering::SeqCst);
                    let b = table.apps_on_b.load(Ordering::SeqCst) as i64;
                    Ok(vec![node("a", 0), node("b", b)])
                })
            }
        }

        fn reads(&self) -> usize {
            self.reads.load(Ordering::SeqCst)
        }
    }

    /// Leases the fleet at `now`, reading `table` if it must.
    async fn lease(cache: &Arc<NodeCache>, now: Millis, table: &Table) -> Leased {
        cache.lease(now, TTL_MS, table.read()).await.expect("lease")
    }

    /// Leases at `now` and keeps the fleet; returns its node ids.
    async fn lease_ids(cache: &Arc<NodeCache>, now: Millis, table: &Table) -> Vec<String> {
        let mut leased = lease(cache, now, table).await;
        let ids = leased.with(|fleet| fleet.all().iter().map(|n| n.node_id.clone()).collect());
        leased.keep();
        ids
    }

    /// The apps the fleet counts on node `id`.
    fn apps_on(leased: &mut Leased, id: &str) -> Option<i64> {
        leased.with(|fleet| fleet.get(id).map(|n| n.app_count))
    }

    /// Lets the read spawned beside the claims run and hand its rows in.
    async fn let_refresh_finish() {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_kept_fleet_serves_until_it_is_forgotten_or_far_too_old() {
        let (cache, table) = (Arc::new(NodeCache::default()), Table::default());
        lease_ids(&cache, 1_000, &table).await;
        lease_ids(&cache, 1_000 + MAX_AGE_MS - 1, &table).await;
        assert_eq!(table.reads(), 1);
        lease_ids(&cache, 1_000 + MAX_STALE_MS, &table).await;
        assert_eq!(table.reads(), 2, "far too old: read before deciding");
        lease_ids(&cache, 999, &table).await;
        assert_eq!(table.reads(), 3, "a clock that went back");
        cache.forget();
        lease_ids(&cache, 999, &table).await;
        assert_eq!(table.reads(), 4, "forgotten");
        // A 1 s TTL: a quarter of it is already too old to decide with.
        let leased = cache
            .lease(999 + 250, 1_000, table.read())
            .await
            .expect("lease");
        leased.keep();
        assert_eq!(table.reads(), 5, "too old for a short TTL");
    }

    #[tokio::test]
    async fn an_old_fleet_is_read_again_beside_the_claims_keeping_what_they_placed() {
        let (cache, table) = (Arc::new(NodeCache::default()), Table::default());
        lease_ids(&cache, 1_000, &table).await;
        table.apps_on_b.store(5, Ordering::SeqCst);
        // Old: this claim decides with the fleet it has, and a read starts beside it.
        let mut leased = lease(&cache, 1_000 + MAX_AGE_MS, &table).await;
        assert_eq!(apps_on(&mut leased, "b"), Some(0));
        leased.with(|fleet| fleet.placed("a", 0, 0, None));
        leased.keep();
        let_refresh_finish().await;
        assert_eq!(table.reads(), 2);
        let mut leased = lease(&cache, 1_000 + MAX_AGE_MS + 1, &table).await;
        assert_eq!(apps_on(&mut leased, "b"), Some(5), "the newer read");
        assert_eq!(
            apps_on(&mut leased, "a"),
            Some(1),
            "the placement made meanwhile"
        );
        leased.keep();
        assert_eq!(table.reads(), 2, "fresh again");
    }

    #[tokio::test]
    async fn placements_are_kept_only_when_the_claim_kept_them() {
        let (cache, table) = (Arc::new(NodeCache::default()), Table::default());
        let mut leased = lease(&cache, 1_001, &table).await;
        leased.with(|fleet| fleet.placed("a", 0, 0, None));
        leased.keep();
        let mut leased = lease(&cache, 1_002, &table).await;
        assert_eq!(apps_on(&mut leased, "a"), Some(1));
        leased.with(|fleet| fleet.placed("a", 0, 0, None));
        drop(leased);
        let mut leased = lease(&cache, 1_003, &table).await;
        assert_eq!(
            apps_on(&mut leased, "a"),
            Some(0),
            "a claim that did not commit leaves the table's rows"
        );
    }

    #[tokio::test]
    async fn heartbeat_rows_are_applied_and_an_unknown_node_reads_again() {
        let (cache, table) = (Arc::new(NodeCache::default()), Table::default());
        lease_ids(&cache, 1_000, &table).await;
        cache.refresh(node("b", 7));
        let mut leased = lease(&cache, 1_001, &table).await;
        assert_eq!(apps_on(&mut leased, "b"), Some(7));
        leased.keep();
        cache.refresh(node("c", 0));
        assert_eq!(lease_ids(&cache, 1_002, &table).await, ["a", "b"]);
        assert_eq!(table.reads(), 2, "a node the fleet did not hold");
        for _ in 0..=MAX_CHANGED_ROWS {
            cache.refresh(node("a", 1));
        }
        lease_ids(&cache, 1_003, &table).await;
        assert_eq!(table.reads(), 3, "too many rows waiting");
    }

    #[tokio::test]
    async fn claims_overlap_and_each_sees_what_the_others_placed() {
        let (cache, table) = (Arc::new(NodeCache::default()), Table::default());
        let mut first = lease(&cache, 1_000, &table).await;
        first.with(|fleet| fleet.placed("a", 0, 0, None));
        // The first claim's transaction is still open: the second decides meanwhile.
        let mut second = lease(&cache, 1_001, &table).await;
        assert_eq!(apps_on(&mut second, "a"), Some(1), "counted when decided");
        second.with(|fleet| fleet.placed("b", 0, 0, None));
        first.keep();
        // The second's database refused its reservation: the fleet is read again.
        drop(second);
        let mut third = lease(&cache, 1_002, &table).await;
        assert_eq!(table.reads(), 2);
        assert_eq!(apps_on(&mut third, "b"), Some(0), "the table's rows");
        third.keep();
    }

    #[tokio::test]
    async fn claims_that_find_the_fleet_stale_together_read_it_once() {
        let (cache, table) = (Arc::new(NodeCache::default()), Table::default());
        let leases = (0..8).map(|i| cache.lease(1_000 + i, TTL_MS, table.read()));
        for leased in futures::future::join_all(leases).await {
            leased.expect("lease").keep();
        }
        assert_eq!(table.reads(), 1);
    }
}
