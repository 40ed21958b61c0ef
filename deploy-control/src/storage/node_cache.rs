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
//! - whatever this process did, the fleet is read again once it is [`MAX_AGE_MS`] old, so
//!   another replica's changes are seen within that time — far inside a node's TTL.
//!
//! Capacity stays exact whatever the fleet says: reservations are guarded in SQL.
//!
//! PostgreSQL and MySQL use it; SQLite reads the table inside its single writer's transaction,
//! where the read costs no round trip.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::MutexGuard;

use super::StoreResult;
use crate::queue::fleet::Fleet;
use crate::queue::{Millis, NodeRecord};

/// How long (in the claim's clock) a fleet read from the table serves claims.
pub const MAX_AGE_MS: Millis = 500;

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
    /// or — when it is older than [`MAX_AGE_MS`], was forgotten or lacks a node — the rows
    /// `read` returns. Waits while another claim holds it.
    pub async fn lease<F, R>(&self, now: Millis, read: R) -> StoreResult<Leased<'_>>
    where
        R: FnOnce() -> F,
        F: Future<Output = StoreResult<Vec<NodeRecord>>>,
    {
        let mut kept = self.kept.lock().await;
        let changes = std::mem::take(&mut *self.changes());
        let usable = match kept.read_at {
            // A clock that went back (tests inject time) counts as stale.
            Some(at) if !changes.forget && (0..MAX_AGE_MS).contains(&(now - at)) => {
                changes.rows.into_iter().all(|row| kept.fleet.replace(row))
            }
            _ => false,
        };
        if !usable {
            kept.read_at = None;
            kept.fleet = Fleet::new(read().await?);
            kept.read_at = Some(now);
        }
        Ok(Leased { kept, keep: false })
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
            *self.kept = Kept::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::placement::tests::node;

    /// Leases at `now`, counting table reads in `reads`; returns the fleet's node ids.
    async fn lease_ids(cache: &NodeCache, now: Millis, reads: &mut usize) -> Vec<String> {
        let rows = vec![node("a", 0), node("b", 0)];
        let mut leased = cache
            .lease(now, || {
                *reads += 1;
                async { Ok(rows) }
            })
            .await
            .expect("lease");
        let ids = leased
            .fleet()
            .all()
            .iter()
            .map(|n| n.node_id.clone())
            .collect();
        leased.keep();
        ids
    }

    #[tokio::test]
    async fn a_kept_fleet_serves_until_it_is_too_old_or_forgotten() {
        let cache = NodeCache::default();
        let mut reads = 0;
        lease_ids(&cache, 1_000, &mut reads).await;
        lease_ids(&cache, 1_000 + MAX_AGE_MS - 1, &mut reads).await;
        assert_eq!(reads, 1);
        lease_ids(&cache, 1_000 + MAX_AGE_MS, &mut reads).await;
        assert_eq!(reads, 2, "too old");
        lease_ids(&cache, 999, &mut reads).await;
        assert_eq!(reads, 3, "a clock that went back");
        cache.forget();
        lease_ids(&cache, 999, &mut reads).await;
        assert_eq!(reads, 4, "forgotten");
    }

    #[tokio::test]
    async fn placements_are_kept_only_when_the_claim_kept_them() {
        let cache = NodeCache::default();
        let mut reads = 0;
        lease_ids(&cache, 1_000, &mut reads).await;
        let read = || async { Ok(vec![node("a", 0), node("b", 0)]) };
        let mut leased = cache.lease(1_001, read).await.expect("lease");
        leased.fleet().placed("a", 0, 0, None);
        leased.keep();
        let mut leased = cache.lease(1_002, read).await.expect("lease");
        assert_eq!(leased.fleet().get("a").map(|n| n.app_count), Some(1));
        leased.fleet().placed("a", 0, 0, None);
        drop(leased);
        let mut leased = cache.lease(1_003, read).await.expect("lease");
        assert_eq!(
            leased.fleet().get("a").map(|n| n.app_count),
            Some(0),
            "a claim that did not commit leaves the table's rows"
        );
    }

    #[tokio::test]
    async fn heartbeat_rows_are_applied_and_an_unknown_node_reads_again() {
        let cache = NodeCache::default();
        let mut reads = 0;
        lease_ids(&cache, 1_000, &mut reads).await;
        cache.refresh(node("b", 7));
        let read = || async { Ok(vec![node("a", 0), node("b", 0)]) };
        let mut leased = cache.lease(1_001, read).await.expect("lease");
        assert_eq!(leased.fleet().get("b").map(|n| n.app_count), Some(7));
        leased.keep();
        cache.refresh(node("c", 0));
        assert_eq!(lease_ids(&cache, 1_002, &mut reads).await, ["a", "b"]);
        assert_eq!(reads, 2, "a node the fleet did not hold");
        for _ in 0..=MAX_CHANGED_ROWS {
            cache.refresh(node("a", 1));
        }
        lease_ids(&cache, 1_003, &mut reads).await;
        assert_eq!(reads, 3, "too many rows waiting");
    }
}
