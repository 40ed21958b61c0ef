//! One reader per watched job: the `?wait=` polls and event streams of a job share its reads.
//!
//! [`subscribe`] joins the job's watch ([`crate::wake::Wake::watch_job`]); the first watcher
//! starts a reader task that reads the job each time its bell rings (a change of that
//! job in this process, or an event of another replica naming it), and publishes it to every
//! watcher. The reader ends when its last watcher goes. So a change costs one read per watched
//! job, however many clients watch it.
//!
//! Changes nobody rang for (a claim on another replica without RabbitMQ, MySQL without a
//! broker) are found by one re-check per process every [`RECHECK`]: the versions of every
//! watched job, [`crate::storage::VERSIONS_PER_READ`] jobs per statement, and the bells of
//! those that moved rung. At rest that is one statement a second for up to a thousand watched
//! jobs, not one per job.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::queue::JobRecord;
use crate::state::AppState;
use crate::wake::{JobReader, Published, Watched};

/// How often the watched jobs are re-checked without a bell.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Joins the watch of `job_id`, starting its reader when it is the first watcher. Subscribe
/// before reading the job yourself, so that no change after your read is missed.
pub fn subscribe(state: &AppState, job_id: Uuid) -> Watched {
    let (watched, reader) = state.wake().watch_job(job_id);
    if let Some(reader) = reader {
        tokio::spawn(read_on_change(state.clone(), reader));
    }
    if state.wake().start_recheck() {
        tokio::spawn(recheck(state.clone()));
    }
    watched
}

/// The newer of `own` (a watcher's own read) and what the watch last published.
pub fn newest(own: JobRecord, watched: &Watched) -> Arc<Published> {
    match watched.borrow().as_ref() {
        Some(published) if published.job.version > own.version => published.clone(),
        _ => Published::new(own),
    }
}

async fn read_on_change(state: AppState, reader: JobReader) {
    // The first watcher's own read seeds the watch ([`crate::wake::Wake::seed`]); the re-check
    // rings for a watch left empty.
    loop {
        tokio::select! {
            _ = reader.bell.notified() => publish(&state, &reader).await,
            _ = reader.tx.closed() => break,
        }
    }
    state.wake().unwatch_job(&reader);
}

/// Reads `reader`'s job and publishes it when its version moved.
async fn publish(state: &AppState, reader: &JobReader) {
    let job_id = reader.job_id;
    match state.store().get_job(job_id).await {
        Ok(job) => {
            reader.tx.send_if_modified(|last| {
                let newer = last.as_ref().is_none_or(|l| l.job.version != job.version);
                if newer {
                    *last = Some(Published::new(job));
                }
                newer
            });
        }
        Err(e) => {
            tracing::warn!(%job_id, error = ?anyhow::Error::from(e), "reading a watched job failed; its watchers wait for the next read");
        }
    }
}

/// Every [`RECHECK`], rings the watches of the jobs whose version differs from the one
/// published to their watchers (or that have none yet).
async fn recheck(state: AppState) {
    let mut tick = tokio::time::interval(RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let watched = state.wake().watched_versions();
        if watched.is_empty() {
            continue;
        }
        let ids: Vec<Uuid> = watched.iter().map(|(id, _)| *id).collect();
        let now = match state.store().job_versions(&ids).await {
            Ok(now) => now.into_iter().collect::<std::collections::HashMap<_, _>>(),
            Err(e) => {
                tracing::warn!(error = ?anyhow::Error::from(e), "re-checking the watched jobs failed; trying again");
                continue;
            }
        };
        for (id, seen) in watched {
            if now.get(&id).is_some_and(|v| seen != Some(*v)) {
                state.wake().ring_job(id);
            }
        }
    }
}
