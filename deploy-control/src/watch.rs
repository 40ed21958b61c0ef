//! How long the control plane has been watching: since its own start, or since the end of the
//! last database outage it saw (SPEC §8, issue 14: outages heal without an operator).
//!
//! While it could not watch, nothing it believes about leases and nodes is evidence: runners
//! could not renew their leases, agents could not record their heartbeats. So after its start,
//! and after an outage (a background sweep or a claim batch that failed to reach the database,
//! then one that reached it):
//! - the lease reaper expires nothing for one lease length (runners renew first; a lease is not
//!   lost to the control plane's own outage);
//! - the node watcher marks nothing `OFFLINE` for one node TTL (nodes heartbeat first);
//! - claims move no app off a node that looks `OFFLINE` until the nodes have been watched for
//!   one TTL (nothing is placed on a stale view of the nodes).
//!
//! Time is passed in ([`Millis`]), so the rules are tested without sleeping.

use std::sync::{Arc, Mutex};

use crate::queue::Millis;
use crate::storage::StoreError;

/// The watch of one process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Watch {
    inner: Arc<Mutex<Seen>>,
}

/// What the watch remembers.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// When watching (re)started: the process's start or the end of the last outage.
    since: Millis,
    /// The last database call the watch heard of failed: the control plane is blind now.
    away: bool,
}

impl Watch {
    /// A watch that starts watching at `now` (the process's start).
    pub fn new(now: Millis) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Seen {
                since: now,
                away: false,
            })),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // Two plain fields: consistent whatever panicked while holding the lock.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the outcome of a call that needed the database at `now`: an outage
    /// ([`StoreError::is_outage`]) makes the control plane blind until a call reaches the
    /// database again, which restarts the watch at that moment. Other outcomes, errors that
    /// prove the database answered included, change nothing while it is watching.
    pub fn saw<T>(&self, outcome: &Result<T, StoreError>, now: Millis) {
        let mut seen = self.seen();
        match outcome {
            Err(e) if e.is_outage() => {
                if !seen.away {
                    tracing::warn!(
                        "the database is away: leases and nodes are not judged until it is back"
                    );
                }
                seen.away = true;
            }
            _ if seen.away => {
                tracing::info!("the database is back: leases and nodes are judged again once runners and nodes had time to report");
                *seen = Seen {
                    since: now,
                    away: false,
                };
            }
            _ => {}
        }
    }

    /// Whether the last database call the watch heard of failed for an outage: until a call
    /// reaches the database, the sweeps only look whether it is back.
    pub fn away(&self) -> bool {
        self.seen().away
    }

    /// Whether at `now` the control plane has watched for at least `span_ms` without a break:
    /// false during an outage and for `span_ms` after its end or after the start.
    pub fn watched(&self, now: Millis, span_ms: i64) -> bool {
        let seen = *self.seen();
        !seen.away && now - seen.since >= span_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outage() -> Result<(), StoreError> {
        Err(StoreError::Database(sqlx::Error::PoolTimedOut))
    }

    #[test]
    fn nothing_is_judged_until_one_span_after_the_start() {
        let watch = Watch::new(1_000);
        assert!(!watch.watched(1_000, 15_000));
        assert!(!watch.watched(15_999, 15_000));
        assert!(watch.watched(16_000, 15_000));
        assert!(watch.watched(1_000, 0), "a span of 0 judges at once");
    }

    #[test]
    fn an_outage_blinds_the_watch_until_one_span_after_its_end() {
        let watch = Watch::new(0);
        assert!(watch.watched(20_000, 15_000));
        watch.saw(&outage(), 20_000);
        assert!(
            !watch.watched(60_000, 15_000),
            "blind while the database is away"
        );
        watch.saw(&outage(), 61_000);
        watch.saw(&Ok(()), 62_000);
        assert!(!watch.away());
        assert!(!watch.watched(76_999, 15_000));
        assert!(watch.watched(77_000, 15_000));
        // Later successes do not restart it.
        watch.saw(&Ok(()), 70_000);
        assert!(watch.watched(77_000, 15_000));
    }

    #[test]
    fn an_error_the_database_answered_is_no_outage() {
        let watch = Watch::new(0);
        let refused: Result<(), StoreError> = Err(StoreError::JobNotFound(uuid::Uuid::nil()));
        watch.saw(&refused, 20_000);
        assert!(watch.watched(20_000, 15_000));
    }
}
