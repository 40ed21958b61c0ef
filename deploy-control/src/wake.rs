//! Wake-ups: a new or freed job wakes waiting claims at once, a job change wakes `?wait=`
//! readers and SSE streams, and an event written to the outbox wakes the relay.
//!
//! Changes made by this process call [`Wake::work_available`] and [`Wake::job_changed`];
//! changes made by another replica arrive through [`Wake::remote_event`] (from RabbitMQ or
//! PostgreSQL `LISTEN`, see [`crate::events`]). Nothing here is durable: a missed wake-up only
//! costs a re-check, which waiters also do every second (the only cross-replica path on MySQL
//! without a broker).

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{watch, Notify};

/// The wake-up hub of one control-plane process.
#[derive(Debug)]
pub struct Wake {
    work: Notify,
    jobs: watch::Sender<u64>,
    /// The relay's doorbell: `notify_one` keeps a permit, so an event written while the relay
    /// publishes is picked up by its next pass.
    outbox: Notify,
    /// Whether wake-ups from other replicas are being received (tests wait for it).
    remote: AtomicBool,
}

impl Default for Wake {
    fn default() -> Self {
        Self {
            work: Notify::new(),
            jobs: watch::channel(0).0,
            outbox: Notify::new(),
            remote: AtomicBool::new(false),
        }
    }
}

impl Wake {
    /// Something may be claimable now: a job was created, a job of a busy app ended, a node
    /// came online. Called by the process that made the change, so it also rings the relay.
    pub fn work_available(&self) {
        self.work.notify_waiters();
        self.outbox.notify_one();
    }

    /// A future that completes at the next [`Wake::work_available`]. Create it (and
    /// `enable` it) before checking for work, so a wake-up in between is not lost.
    pub fn work(&self) -> tokio::sync::futures::Notified<'_> {
        self.work.notified()
    }

    /// Some job changed in this process (it also rings the relay).
    pub fn job_changed(&self) {
        self.jobs.send_modify(|n| *n = n.wrapping_add(1));
        self.outbox.notify_one();
    }

    /// A receiver that sees every job change after it was made.
    pub fn job_changes(&self) -> watch::Receiver<u64> {
        self.jobs.subscribe()
    }

    /// This process wrote outbox events without changing a job (a node went offline).
    pub fn events_written(&self) {
        self.outbox.notify_one();
    }

    /// Completes when events were written since the relay last looked.
    pub fn outbox(&self) -> tokio::sync::futures::Notified<'_> {
        self.outbox.notified()
    }

    /// An event from any replica (routing key of SPEC §4): wakes the waiters it concerns, but
    /// not the relay — the replica that wrote the event relays it.
    pub fn remote_event(&self, routing_key: &str) {
        match routing_key {
            // A job ended: its app's next job may be claimable.
            "job.created" | "job.retrying" | "job.succeeded" | "job.failed" | "job.cancelled" => {
                self.work.notify_waiters();
                self.jobs.send_modify(|n| *n = n.wrapping_add(1));
            }
            "job.running" => self.jobs.send_modify(|n| *n = n.wrapping_add(1)),
            "node.online" | "node.scheduling" => self.work.notify_waiters(),
            _ => {}
        }
    }

    /// Records whether remote wake-ups are flowing.
    pub fn set_remote_connected(&self, connected: bool) {
        self.remote.store(connected, Ordering::Release);
    }

    /// Whether remote wake-ups are flowing (RabbitMQ queue bound or PostgreSQL `LISTEN` active).
    pub fn remote_connected(&self) -> bool {
        self.remote.load(Ordering::Acquire)
    }
}
