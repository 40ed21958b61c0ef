//! The node table as claims see it, kept for a moment between claims.
//!
//! Every claim needs every node (is the app's node still online? which node has room?), but
//! the table changes at heartbeat pace while claims come by the thousand per second. A claim
//! reuses the rows read by another claim for at most [`MAX_AGE_MS`]; any node change written
//! through this process, and any placement a claim makes, drops them at once. So a single
//! replica sees its own changes immediately, and another replica's within [`MAX_AGE_MS`] —
//! far inside a node's TTL. Capacity stays exact: reservations are guarded in SQL, and a
//! refused one drops the rows too. Rows read while a change was being written are not kept.
//!
//! PostgreSQL and MySQL use it (it saves a round trip per claim); SQLite reads the table inside
//! its single writer's transaction, where the read costs no round trip.

use std::future::Future;
use std::sync::{Arc, Mutex};

use super::StoreResult;
use crate::queue::{Millis, NodeRecord};

/// How long (in the claim's clock) rows read by one claim serve the next ones.
pub const MAX_AGE_MS: Millis = 500;

/// Node rows read at some instant, shared by the claims that follow.
#[derive(Debug, Default)]
pub struct NodeCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Counts [`NodeCache::forget`] calls, so rows read across one are not kept.
    generation: u64,
    /// The rows and when (claim clock) they were read.
    read: Option<(Millis, Arc<Vec<NodeRecord>>)>,
}

/// Where a claim stands with the cache: rows to use, or a ticket to read and keep them.
#[derive(Debug)]
enum Lookup {
    /// Rows fresh enough to use.
    Fresh(Arc<Vec<NodeRecord>>),
    /// Read the table, then hand the rows to [`NodeCache::keep`] with this generation.
    Read(u64),
}

impl NodeCache {
    /// Every node as of at most [`MAX_AGE_MS`] before `now`: the kept rows, or those `read`
    /// returns (then kept for the next claims).
    pub async fn get<F, R>(&self, now: Millis, read: R) -> StoreResult<Arc<Vec<NodeRecord>>>
    where
        R: FnOnce() -> F,
        F: Future<Output = StoreResult<Vec<NodeRecord>>>,
    {
        match self.lookup(now) {
            Lookup::Fresh(nodes) => Ok(nodes),
            Lookup::Read(ticket) => Ok(self.keep(now, ticket, read().await?)),
        }
    }

    /// The rows read at most [`MAX_AGE_MS`] before `now`, or a ticket to read them. A clock
    /// that went back (tests inject time) counts as stale.
    fn lookup(&self, now: Millis) -> Lookup {
        let inner = self.lock();
        match &inner.read {
            Some((at, nodes)) if (0..MAX_AGE_MS).contains(&(now - at)) => {
                Lookup::Fresh(nodes.clone())
            }
            _ => Lookup::Read(inner.generation),
        }
    }

    /// Keeps `nodes`, read at `now` with the ticket `generation`, unless something changed
    /// since the ticket was given; returns them either way.
    fn keep(&self, now: Millis, generation: u64, nodes: Vec<NodeRecord>) -> Arc<Vec<NodeRecord>> {
        let nodes = Arc::new(nodes);
        let mut inner = self.lock();
        if inner.generation == generation {
            inner.read = Some((now, nodes.clone()));
        }
        nodes
    }

    /// Drops the rows: a node or a placement changed.
    pub fn forget(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.read = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The data stays consistent whatever panicked while holding the lock.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(cache: &NodeCache, now: Millis) -> bool {
        matches!(cache.lookup(now), Lookup::Fresh(_))
    }

    fn ticket(cache: &NodeCache, now: Millis) -> u64 {
        match cache.lookup(now) {
            Lookup::Read(generation) => generation,
            Lookup::Fresh(_) => panic!("expected a ticket"),
        }
    }

    #[test]
    fn rows_serve_until_they_are_too_old_or_forgotten() {
        let cache = NodeCache::default();
        let t = ticket(&cache, 1_000);
        cache.keep(1_000, t, Vec::new());
        assert!(fresh(&cache, 1_000));
        assert!(fresh(&cache, 1_000 + MAX_AGE_MS - 1));
        assert!(!fresh(&cache, 1_000 + MAX_AGE_MS));
        assert!(!fresh(&cache, 999), "a clock that went back");
        cache.forget();
        assert!(!fresh(&cache, 1_000));
    }

    #[test]
    fn rows_read_across_a_change_are_not_kept() {
        let cache = NodeCache::default();
        let t = ticket(&cache, 1_000);
        cache.forget();
        cache.keep(1_000, t, Vec::new());
        assert!(!fresh(&cache, 1_000));
    }
}
