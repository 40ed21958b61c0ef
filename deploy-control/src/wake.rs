//! In-process wake-ups: a new or freed job wakes waiting claims at once, and a job change
//! wakes `?wait=` readers. Nothing here is durable: a missed wake-up only costs a re-check,
//! which waiters also do every second for jobs whose backoff ran out.

use tokio::sync::{watch, Notify};

/// The wake-up hub of one control-plane process.
#[derive(Debug)]
pub struct Wake {
    work: Notify,
    jobs: watch::Sender<u64>,
}

impl Default for Wake {
    fn default() -> Self {
        Self {
            work: Notify::new(),
            jobs: watch::channel(0).0,
        }
    }
}

impl Wake {
    /// Something may be claimable now: a job was created, a job of a busy app ended, a node
    /// came online.
    pub fn work_available(&self) {
        self.work.notify_waiters();
    }

    /// A future that completes at the next [`Wake::work_available`]. Create it (and
    /// `enable` it) before checking for work, so a wake-up in between is not lost.
    pub fn work(&self) -> tokio::sync::futures::Notified<'_> {
        self.work.notified()
    }

    /// Some job changed.
    pub fn job_changed(&self) {
        self.jobs.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every [`Wake::job_changed`] after it was made.
    pub fn job_changes(&self) -> watch::Receiver<u64> {
        self.jobs.subscribe()
    }
}
