//! A job's log: lines go to the control plane as they happen, in batches.
//!
//! Writers push lines into a bounded channel (a chatty build waits rather than growing memory);
//! one task per job sends whatever has gathered, at most [`MAX_BATCH`] lines per request, after a
//! short [`BATCH_WINDOW`] so a burst travels in one request. Closing the log flushes the rest.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::control::ControlClient;

/// Lines in one request (the control plane takes up to 1000).
pub const MAX_BATCH: usize = 500;
/// How long the sender waits for more lines before sending a batch.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// Lines buffered before writers wait.
const BUFFER: usize = 4096;

/// The writing end of a job's log; cheap to clone.
#[derive(Debug, Clone)]
pub struct JobLog {
    tx: mpsc::Sender<String>,
}

impl JobLog {
    /// Appends a line (never a secret value: callers pass names, not values).
    pub async fn line(&self, line: impl Into<String>) {
        // The sender only stops early when the lease is lost; then nobody reads the log.
        let _ = self.tx.send(line.into()).await;
    }

    /// A log whose lines go nowhere, for work done outside a job.
    pub fn discard() -> Self {
        let (tx, mut rx) = mpsc::channel::<String>(16);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        Self { tx }
    }
}

/// Starts the sender of `job_id`'s log. Drop every [`JobLog`] clone, then await the handle to
/// flush. A `409` (the lease is gone) cancels `lease_lost`.
pub fn spawn(
    control: ControlClient,
    job_id: Uuid,
    lease_token: String,
    lease_lost: CancellationToken,
) -> (JobLog, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<String>(BUFFER);
    let handle = tokio::spawn(async move {
        let mut closed = false;
        while !closed {
            let Some(first) = rx.recv().await else { break };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(line)) => batch.push(line),
                    Ok(None) => {
                        closed = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            match control.logs(job_id, &lease_token, batch).await {
                Ok(()) => {}
                Err(e) if e.lease_lost() => {
                    tracing::warn!(%job_id, error = %e, "the lease is gone; no more log lines for this job");
                    lease_lost.cancel();
                    break;
                }
                Err(e) => tracing::warn!(%job_id, error = %e, "log lines lost"),
            }
        }
    });
    (JobLog { tx }, handle)
}
