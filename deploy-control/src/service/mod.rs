//! The control plane's operations, between the HTTP routes and storage: each one checks its
//! input, calls the [`crate::storage::Store`], rings the wake-ups the change calls for and
//! returns a [`ServiceError`]. Nothing here knows about HTTP; `routes/` only extracts the
//! request, calls one of these and maps the answer.
//!
//! - [`jobs`]: create, read, wait for, follow, list and cancel jobs; logs; an app's last run.
//! - [`runner`]: claims (long poll), lease heartbeats, log lines, reports.
//! - [`nodes`]: node heartbeats, the node list, cordon / uncordon / drain.
//! - [`beats`]: coalesced heartbeats: routine ones answered from memory, flushed in batches.
//! - [`watch`]: one reader per watched job, shared by its long polls and streams.
//! - [`dashboard`]: what the operators' dashboard reads, its redeploy and stop, its live feeds.

pub mod beats;
pub mod dashboard;
pub mod jobs;
pub mod nodes;
pub mod runner;
pub mod watch;

use berth_shared::wire::NodeState;

use crate::queue::now_millis;
use crate::state::AppState;
use crate::storage::StoreError;

/// Why an operation did not happen; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// An input is invalid; the message names it and says what is allowed.
    #[error("{0}")]
    Invalid(String),
    /// The job, node or app does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the current state (a stale lease, a cancel of a running job,
    /// a reused idempotency key).
    #[error("{0}")]
    Conflict(String),
    /// The caller's credential is unknown or revoked (a node credential, SPEC §7).
    #[error("{0}")]
    Unauthorized(String),
    /// The caller's credential is valid but does not cover this request (another node's id).
    #[error("{0}")]
    Forbidden(String),
    /// The database failed or could not be reached: worth retrying.
    #[error("the database failed or is unreachable")]
    Unavailable(#[source] StoreError),
    /// The database holds a row this version cannot read: a bug or a hand-edited row, which
    /// a retry does not fix.
    #[error("the database holds a row that cannot be read")]
    Corrupt(#[source] StoreError),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::JobNotFound(_) | StoreError::NodeNotFound(_) => {
                Self::NotFound(e.to_string())
            }
            StoreError::Conflict(refused) => Self::Conflict(refused.0),
            StoreError::Credential(refused) => Self::Unauthorized(refused.to_string()),
            StoreError::Corrupt(_) => Self::Corrupt(e),
            StoreError::Batch(ref inner) if is_corrupt(inner) => Self::Corrupt(e),
            StoreError::Database(_) | StoreError::Batch(_) => Self::Unavailable(e),
        }
    }
}

/// Whether a (possibly shared) claim batch failure comes from a corrupt row.
fn is_corrupt(e: &StoreError) -> bool {
    match e {
        StoreError::Corrupt(_) => true,
        StoreError::Batch(inner) => is_corrupt(inner),
        _ => false,
    }
}

/// Shorthand for operation results.
pub type ServiceResult<T> = Result<T, ServiceError>;

/// Sets the job and node gauges from storage before a scrape; when storage is down the
/// gauges keep their last values and the counters still answer.
pub async fn refresh_gauges(state: &AppState) {
    let m = state.metrics();
    if let Ok(stats) = state.store().stats().await {
        for (s, n) in stats.jobs_by_state {
            m.set_jobs(s.as_str(), n);
        }
    }
    if let Ok(nodes) = state.store().list_nodes().await {
        let (now, ttl) = (now_millis(), state.settings().node_ttl.as_millis() as i64);
        let online = nodes
            .iter()
            .filter(|n| n.state_at(now, ttl) == NodeState::Online)
            .count() as i64;
        m.set_nodes("ONLINE", online);
        m.set_nodes("OFFLINE", nodes.len() as i64 - online);
    }
}
