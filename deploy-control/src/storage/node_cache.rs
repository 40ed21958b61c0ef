//! The node table as claims see it, kept in memory between claims and patched as they place.
//!
//! Every claim needs every node (is the app's node still online? which node has room?), but
//! the table changes at heartbeat pace while claims come by the thousand per second, and a
//! fleet of 10,000 nodes is too big to read per claim. So this process keeps one [`Fleet`]:
//! - a claim leases it ([`NodeCache::lease`]) for the whole of its transaction, one claim at a
//!   time, and counts each app it places in it as the database does; when the transaction
//!   commits the claim keeps the patched fleet ([`Leased::keep`]), otherwise (an error, a
//!   reservation the database refused because the room was gone) the fleet is dropped;
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
//!   quarter of the TTL; the read is slow, or failed) claims wait for a read of their own.
//!
//! Capacity stays exact whatever the fleet says: reservations are guarded in SQL.
//!
//! PostgreSQL and MySQL use it; SQLite reads the table inside its single writer's transaction,
//! where the read costs no round trip.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::MutexGuard;

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

/// This process's fleet, and the node changes written since a claim last leased it.
#[derive(Debug, Default)]
pub struct NodeCache {
    kept: tokio::sync::Mutex<Kept>,
    changes: Mutex<Changes>,
}

/// A fleet and when (claim clock) it was read from the table.
#[derive(Debug, Default)]
struct Kept {
    /// `None`: nothing is kept, the next lease reads the table.
    read_at: Option<Millis>,
    fleet: Fleet,
    /// Counts the fleets dropped or read in full, so a read beside the claims that began
    /// before one is not kept.
    generation: u64,
    /// Whether a read beside the claims is under way.
    refreshing: bool,
}

impl Kept {
    /// Drops the fleet: the next lease reads the table.
    fn drop_fleet(&mut self) {
        self.read_at = None;
        self.fleet = Fleet::default();
        self.generation += 1;
        self.refreshing = false;
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

/// One claim's hold on the fleet: no other claim of this process decides until it is dropped.
#[derive(Debug)]
pub struct Leased<'a> {
    kept: MutexGuard<'a, Kept>,
    keep: bool,
}

impl NodeCache {
    /// The fleet for one claim at `now`: the one kept, with the rows heartbeats wrote since,
    /// or — when it was forgotten, lacks a node or is older than [`MAX_STALE_MS`] — the rows
    /// `read` returns. A fleet older than [`MAX_AGE_MS`] is served while `read` runs in a task
    /// of its own. Waits while another claim holds the fleet.
    ///
    /// Under a short node TTL (`ttl_ms`) the limits are an eighth and a quarter of it.
    pub async fn lease<F, R>(
        self: &Arc<Self>,
        now: Millis,
        ttl_ms: Millis,
        read: R,
    ) -> StoreResult<Leased<'_>>
    where
        R: FnOnce() -> F + Send + 'static,
        F: Future<Output = StoreResult<Vec<NodeRecord>>> + Send + 'static,
    {
        let mut kept = self.kept.lock().await;
        let changes = std::mem::take(&mut *self.changes());
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
            kept.drop_fleet();
            kept.fleet = Fleet::new(read().await?);
            kept.read_at = Some(now);
        } else if age.is_some_and(|age| age >= max_age) && !kept.refreshing {
            kept.refreshing = true;
            kept.fleet.start_journal();
            let (cache, generation) = (self.clone(), kept.generation);
            tokio::spawn(async move {
                let rows = read().await;
                cache.refreshed(generation, now, rows).await;
            });
        }
        Ok(Leased { kept, keep: false })
    }

    /// A read beside the claims, begun at `read_at` on the fleet of `generation`, returned
    /// `rows`: they replace the fleet, with what claims and heartbeats changed meanwhile
    /// applied again. Dropped if the fleet was dropped or read in full since it began.
    async fn refreshed(
        &self,
        generation: u64,
        read_at: Millis,
        rows: StoreResult<Vec<NodeRecord>>,
    ) {
        let mut kept = self.kept.lock().await;
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

    fn changes(&self) -> std::sync::MutexGuard<'_, Changes> {
        // The data stays consistent whatever panicked while holding the lock.
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Leased<'_> {
    /// The fleet, to decide with and to count placements in.
    pub fn fleet(&mut self) -> &mut Fleet {
        &mut self.kept.fleet
    }

    /// The claim's transaction committed: keep the fleet as it patched it.
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Leased<'_> {
    fn drop(&mut self) {
        if !self.keep {
            self.kept.drop_fleet();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::placement::tests::node;
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
        fn read(
            &self,
        ) -> impl FnOnce() -> std::future::Ready<StoreResult<Vec<NodeRecord>>> + Send + 'static
        {
            let table = self.clone();
            move || {
                table.reads.fetch_add(1, Ordering::SeqCst);
                let b = table.apps_on_b.load(Ordering::SeqCst) as i64;
                std::future::ready(Ok(vec![node("a", 0), node("b", b)]))
            }
        }

        fn reads(&self) -> usize {
            self.reads.load(Ordering::SeqCst)
        }
    }

    /// Leases at `now` and keeps the fleet; returns its node ids.
    async fn lease_ids(cache: &Arc<NodeCache>, now: Millis, table: &Table) -> Vec<String> {
        let mut leased = cache.lease(now, TTL_MS, table.read()).await.expect("lease");
        let ids = leased
            .fleet()
            .all()
            .iter()
            .map(|n| n.node_id.clone())
            .collect();
        leased.keep();
        ids
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
        let mut leased = cache
            .lease(1_000 + MAX_AGE_MS, TTL_MS, table.read())
            .await
            .expect("lease");
        assert_eq!(leased.fleet().get("b").map(|n| n.app_count), Some(0));
        leased.fleet().placed("a", 0, 0, None);
        leased.keep();
        let_refresh_finish().await;
        assert_eq!(table.reads(), 2);
        let mut leased = cache
            .lease(1_000 + MAX_AGE_MS + 1, TTL_MS, table.read())
            .await
            .expect("lease");
        let fleet = leased.fleet();
        assert_eq!(
            fleet.get("b").map(|n| n.app_count),
            Some(5),
            "the newer read"
        );
        assert_eq!(
            fleet.get("a").map(|n| n.app_count),
            Some(1),
            "the placement made meanwhile"
        );
        leased.keep();
        assert_eq!(table.reads(), 2, "fresh again");
    }

    #[tokio::test]
    async fn placements_are_kept_only_when_the_claim_kept_them() {
        let (cache, table) = (Arc::new(NodeCache::default()), Table::default());
        let mut leased = cache
            .lease(1_001, TTL_MS, table.read())
            .await
            .expect("lease");
        leased.fleet().placed("a", 0, 0, None);
        leased.keep();
        let mut leased = cache
            .lease(1_002, TTL_MS, table.read())
            .await
            .expect("lease");
        assert_eq!(leased.fleet().get("a").map(|n| n.app_count), Some(1));
        leased.fleet().placed("a", 0, 0, None);
        drop(leased);
        let mut leased = cache
            .lease(1_003, TTL_MS, table.read())
            .await
            .expect("lease");
        assert_eq!(
            leased.fleet().get("a").map(|n| n.app_count),
            Some(0),
            "a claim that did not commit leaves the table's rows"
        );
    }

    #[tokio::test]
    async fn heartbeat_rows_are_applied_and_an_unknown_node_reads_again() {
        let (cache, table) = (Arc::new(NodeCache::default()), Table::default());
        lease_ids(&cache, 1_000, &table).await;
        cache.refresh(node("b", 7));
        let mut leased = cache
            .lease(1_001, TTL_MS, table.read())
            .await
            .expect("lease");
        assert_eq!(leased.fleet().get("b").map(|n| n.app_count), Some(7));
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
}
