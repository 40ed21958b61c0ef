//! One reader per watched job: the `?wait=` polls and event streams of a job share its reads.
//!
//! [`subscribe`] joins the job's watch ([`crate::wake::Wake::watch_job`]); the first watcher
//! starts a reader task that reads the job each time its bell rings (a change of that job in
//! this process, or an event of another replica) and at least every [`RECHECK`] (a replica
//! that could not tell us: MySQL without a broker), and publishes it to every watcher. The
//! reader ends when its last watcher goes. So a change costs one read per watched job, however
//! many clients watch it.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::queue::JobRecord;
use crate::state::AppState;
use crate::wake::{JobReader, Watched};

/// How often a watched job is read without a bell.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Joins the watch of `job_id`, starting its reader when it is the first watcher. Subscribe
/// before reading the job yourself, so that no change after your read is missed.
pub fn subscribe(state: &AppState, job_id: Uuid) -> Watched {
    let (watched, reader) = state.wake().watch_job(job_id);
    if let Some(reader) = reader {
        tokio::spawn(read_on_change(state.clone(), reader));
    }
    watched
}

/// The newer of `a` (a watcher's own read) and what the watch last published.
pub fn newest(own: JobRecord, watched: &Watched) -> JobRecord {
    match watched.borrow().as_ref() {
        Some(published) if published.version > own.version => JobRecord::clone(published),
        _ => own,
    }
}

async fn read_on_change(state: AppState, reader: JobReader) {
    let job_id = reader.job_id;
    loop {
        tokio::select! {
            _ = reader.bell.notified() => {}
            _ = tokio::time::sleep(RECHECK) => {}
            _ = reader.tx.closed() => break,
        }
        match state.store().get_job(job_id).await {
            Ok(job) => {
                reader.tx.send_if_modified(|last| {
                    let newer = last.as_ref().is_none_or(|l| l.version != job.version);
                    if newer {
                        *last = Some(Arc::new(job));
                    }
                    newer
                });
            }
            Err(e) => {
                tracing::warn!(%job_id, error = ?anyhow::Error::from(e), "reading a watched job failed; its watchers wait for the next read");
            }
        }
    }
    state.wake().unwatch_job(&reader);
}
