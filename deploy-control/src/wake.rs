//! Wake-ups: a new or freed job wakes waiting claims at once, a job change wakes `?wait=`
//! readers and SSE streams, and an event written to the outbox wakes the relay.
//!
//! Changes made by this process call [`Wake::work_available`] and [`Wake::job_changed`];
//! changes made by another replica arrive through [`Wake::remote_event`] (from RabbitMQ or
//! PostgreSQL `LISTEN`, see [`crate::events`]). Nothing here is durable: a missed wake-up only
//! costs a re-check.
//!
//! Watchers of a job share one reader: every `?wait=` poll and event stream of one job holds a
//! receiver of that job's [`Wake::watch_job`] channel, and one reader task (see
//! [`crate::service::watch`]) reads the job when its bell rings — a change of that job — and
//! publishes it to all of them. Reads per change do not grow with the watchers.
//!
//! Idle claims cost the database almost nothing: every wake-up of work bumps a sequence
//! number, and a claim that has been told of no work since the last claim found the queue
//! empty does not look again ([`Wake::should_look`]). Jobs that become claimable with time
//! alone (a retry's backoff ends, another replica's insert on MySQL without a broker) are found
//! by one look per [`RECHECK`] for the whole process, made by whichever waiting claim comes
//! first — not by every waiting claim once a second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use uuid::Uuid;

use crate::queue::JobRecord;

/// What the watchers of one job receive: the job as its reader last read it (`None` before
/// its first read).
pub type Watched = watch::Receiver<Option<Arc<Published>>>;

/// A job as its reader published it. The JSON of the answer about it is made once, by the
/// first watcher that answers, and shared by all of them.
#[derive(Debug)]
pub struct Published {
    /// The job.
    pub job: JobRecord,
    json: OnceLock<Bytes>,
}

impl Published {
    /// `job`, its answer not made yet.
    pub fn new(job: JobRecord) -> Arc<Self> {
        Arc::new(Self {
            job,
            json: OnceLock::new(),
        })
    }

    /// The answer's JSON, made by `make` for the first caller.
    pub fn json(&self, make: impl FnOnce(&JobRecord) -> Vec<u8>) -> Bytes {
        self.json.get_or_init(|| make(&self.job).into()).clone()
    }
}

/// A job's watch as its reader holds it: rung on each change of the job; publishes on `tx`.
#[derive(Debug)]
pub struct JobReader {
    /// The job.
    pub job_id: Uuid,
    /// Rung (with a stored permit) on each change of the job.
    pub bell: Arc<Notify>,
    /// Where the job is published; closed once every watcher has gone.
    pub tx: watch::Sender<Option<Arc<Published>>>,
}

/// The watch of one job, kept while it has watchers.
#[derive(Debug)]
struct JobWatch {
    bell: Arc<Notify>,
    tx: watch::Sender<Option<Arc<Published>>>,
}

/// How often, at most, a process's waiting claims look at a queue nothing told them about.
pub const RECHECK: Duration = Duration::from_secs(1);

/// What a claim found the last time the queue was empty for it.
#[derive(Debug, Clone, Copy)]
struct EmptyLook {
    /// The work sequence number when that look began.
    seq: u64,
    /// When it began (or when the last time-based look was taken).
    at: Instant,
}

/// Why a claim should look at the queue now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Work was announced since the queue was last found empty.
    Announced,
    /// Nothing was announced, but [`RECHECK`] passed: this claim looks for every waiting one.
    Recheck,
}

/// The wake-up hub of one control-plane process.
#[derive(Debug)]
pub struct Wake {
    work: Notify,
    /// Bumped by every announcement of work, local or remote.
    work_seq: AtomicU64,
    /// The last time a claim found the queue empty (`None`: never, so look).
    empty: Mutex<Option<EmptyLook>>,
    /// When a claim last got a job.
    last_claim: Mutex<Option<Instant>>,
    jobs: watch::Sender<u64>,
    /// The jobs being watched, each with its watchers' channel.
    watches: Mutex<HashMap<Uuid, JobWatch>>,
    /// The relay's doorbell: `notify_one` keeps a permit, so an event written while the relay
    /// publishes is picked up by its next pass.
    outbox: Notify,
    /// Whether wake-ups from other replicas are being received (tests wait for it).
    remote: AtomicBool,
    /// Whether the process's re-check of its watched jobs runs ([`Wake::start_recheck`]).
    rechecking: AtomicBool,
}

impl Default for Wake {
    fn default() -> Self {
        Self {
            work: Notify::new(),
            work_seq: AtomicU64::new(0),
            empty: Mutex::new(None),
            last_claim: Mutex::new(None),
            jobs: watch::channel(0).0,
            watches: Mutex::new(HashMap::new()),
            outbox: Notify::new(),
            remote: AtomicBool::new(false),
            rechecking: AtomicBool::new(false),
        }
    }
}

impl Wake {
    /// Something may be claimable now: a job was created, a job of a busy app ended, a node
    /// came online. Called by the process that made the change, so it also rings the relay.
    pub fn work_available(&self) {
        self.announce_work();
        self.outbox.notify_one();
    }

    fn announce_work(&self) {
        self.work_seq.fetch_add(1, Ordering::AcqRel);
        self.work.notify_waiters();
    }

    /// The work sequence number: read it before a look, hand it to [`Wake::should_look`] and
    /// [`Wake::found_nothing`].
    pub fn work_seq(&self) -> u64 {
        self.work_seq.load(Ordering::Acquire)
    }

    /// Whether a claim that read `seq` should look at the queue at `now`, and why; `None`
    /// when another claim found it empty since the last announcement and less than
    /// [`RECHECK`] ago. A [`Look::Recheck`] is given to one caller per [`RECHECK`].
    pub fn should_look(&self, seq: u64, now: Instant) -> Option<Look> {
        let mut empty = self.empty.lock().unwrap_or_else(|e| e.into_inner());
        match *empty {
            Some(last) if last.seq == seq => {
                if now.saturating_duration_since(last.at) < RECHECK {
                    return None;
                }
                *empty = Some(EmptyLook { seq, at: now });
                Some(Look::Recheck)
            }
            _ => Some(Look::Announced),
        }
    }

    /// A claim got a job at `at`: for the next [`RECHECK`] the queue is busy, and an empty
    /// look proves little (concurrent claims hide the rows they hold from each other).
    pub fn claimed(&self, at: Instant) {
        let mut last = self.last_claim.lock().unwrap_or_else(|e| e.into_inner());
        *last = Some(last.map_or(at, |l| l.max(at)));
    }

    /// A claim that read `seq` before its look found nothing claimable. The empty queue is
    /// remembered (and other claims skip their looks) only when no claim got a job in the last
    /// [`RECHECK`]; returns whether it was.
    pub fn found_nothing(&self, seq: u64, looked_at: Instant) -> bool {
        let last_claim = *self.last_claim.lock().unwrap_or_else(|e| e.into_inner());
        if last_claim.is_some_and(|at| looked_at.saturating_duration_since(at) < RECHECK) {
            return false;
        }
        let mut empty = self.empty.lock().unwrap_or_else(|e| e.into_inner());
        let newer =
            empty.is_none_or(|last| seq > last.seq || (seq == last.seq && looked_at > last.at));
        if newer {
            *empty = Some(EmptyLook { seq, at: looked_at });
        }
        true
    }

    /// When the next time-based look is due (now, when the queue was never found empty).
    pub fn next_recheck(&self) -> Instant {
        let empty = self.empty.lock().unwrap_or_else(|e| e.into_inner());
        empty.map_or_else(Instant::now, |last| last.at + RECHECK)
    }

    /// A future that completes at the next [`Wake::work_available`]. Create it (and
    /// `enable` it) before checking for work, so a wake-up in between is not lost.
    pub fn work(&self) -> tokio::sync::futures::Notified<'_> {
        self.work.notified()
    }

    /// Job `job_id` changed in this process (it also rings the relay).
    pub fn job_changed(&self, job_id: Uuid) {
        self.jobs.send_modify(|n| *n = n.wrapping_add(1));
        self.ring_watch(Some(job_id));
        self.outbox.notify_one();
    }

    /// Starts watching `job_id`, or joins its watch; the reader to start is returned when the
    /// watch is new (the caller spawns it), `None` when a reader runs already.
    pub fn watch_job(&self, job_id: Uuid) -> (Watched, Option<JobReader>) {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = watches.get(&job_id).filter(|w| !w.tx.is_closed()) {
            return (w.tx.subscribe(), None);
        }
        let (tx, rx) = watch::channel(None);
        let bell = Arc::new(Notify::new());
        let reader = JobReader {
            job_id,
            bell: bell.clone(),
            tx: tx.clone(),
        };
        watches.insert(job_id, JobWatch { bell, tx });
        (rx, Some(reader))
    }

    /// The reader of `reader`'s watch stops (its watchers are gone): the watch goes, unless a
    /// newer one replaced it.
    pub fn unwatch_job(&self, reader: &JobReader) {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if watches
            .get(&reader.job_id)
            .is_some_and(|w| w.tx.same_channel(&reader.tx))
        {
            watches.remove(&reader.job_id);
        }
    }

    /// Watchers of `job_id` now (long polls and streams holding its watch).
    pub fn watchers(&self, job_id: Uuid) -> usize {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches.get(&job_id).map_or(0, |w| w.tx.receiver_count())
    }

    /// Jobs watched now.
    pub fn watched_jobs(&self) -> usize {
        self.watches.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Each watched job with the version its reader last published (`None`: none yet).
    pub fn watched_versions(&self) -> Vec<(Uuid, Option<i64>)> {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches
            .iter()
            .map(|(id, w)| (*id, w.tx.borrow().as_ref().map(|p| p.job.version)))
            .collect()
    }

    /// Publishes `job` to its watchers when nothing was published yet: a watcher's own read
    /// seeds the watch, so its reader need not read the job again.
    pub fn seed(&self, job: &JobRecord) {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = watches.get(&job.job_id) {
            w.tx.send_if_modified(|last| {
                let empty = last.is_none();
                if empty {
                    *last = Some(Published::new(job.clone()));
                }
                empty
            });
        }
    }

    /// Rings the watch of `job_id`: a re-check found it changed.
    pub fn ring_job(&self, job_id: Uuid) {
        self.ring_watch(Some(job_id));
    }

    /// True for the first caller only: it starts the process's re-check of watched jobs.
    pub fn start_recheck(&self) -> bool {
        !self.rechecking.swap(true, Ordering::AcqRel)
    }

    /// Rings the watch of `job_id`, or, for a change of an unknown job, every watch.
    fn ring_watch(&self, job_id: Option<Uuid>) {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        match job_id {
            Some(id) => {
                if let Some(w) = watches.get(&id) {
                    w.bell.notify_one();
                }
            }
            None => watches.values().for_each(|w| w.bell.notify_one()),
        }
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

    /// An event from any replica (routing key of SPEC §4, and the job it is about when the
    /// transport carries it): wakes the waiters it concerns, but not the relay — the replica
    /// that wrote the event relays it.
    pub fn remote_event(&self, routing_key: &str, job_id: Option<Uuid>) {
        match routing_key {
            // A job ended: its app's next job may be claimable.
            "job.created" | "job.retrying" | "job.succeeded" | "job.failed" | "job.cancelled" => {
                self.announce_work();
                self.jobs.send_modify(|n| *n = n.wrapping_add(1));
                self.ring_watch(job_id);
            }
            "job.running" => {
                self.jobs.send_modify(|n| *n = n.wrapping_add(1));
                self.ring_watch(job_id);
            }
            "node.online" | "node.scheduling" => self.announce_work(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_queue_is_looked_at_again_only_when_told_or_once_per_recheck() {
        let wake = Wake::default();
        let t0 = Instant::now();
        let seq = wake.work_seq();
        assert_eq!(
            wake.should_look(seq, t0),
            Some(Look::Announced),
            "never looked: look"
        );
        wake.found_nothing(seq, t0);
        // A thousand waiting claims wake: none looks, nothing was announced.
        let later = t0 + RECHECK / 2;
        assert!((0..1000).all(|_| wake.should_look(wake.work_seq(), later).is_none()));
        // Time passes: exactly one of them looks for all.
        let due = t0 + RECHECK;
        let looks: Vec<_> = (0..1000)
            .filter_map(|_| wake.should_look(wake.work_seq(), due))
            .collect();
        assert_eq!(looks, vec![Look::Recheck]);
        assert_eq!(wake.next_recheck(), due + RECHECK);
        // Work announced: every claim looks (each may get a job).
        wake.work_available();
        let seq = wake.work_seq();
        assert!((0..1000).all(|_| wake.should_look(seq, due) == Some(Look::Announced)));
        // An older look's empty result does not hide the newer announcement.
        wake.found_nothing(seq - 1, due);
        assert_eq!(wake.should_look(seq, due), Some(Look::Announced));
        wake.found_nothing(seq, due);
        assert!(wake.should_look(seq, due).is_none());
    }

    #[test]
    fn an_empty_look_right_after_a_claim_is_not_remembered() {
        let wake = Wake::default();
        let now = Instant::now();
        wake.claimed(now);
        let seq = wake.work_seq();
        // Concurrent claims hide held rows from each other: a busy queue's empty look is no proof.
        assert!(!wake.found_nothing(seq, now + RECHECK / 2));
        assert_eq!(
            wake.should_look(seq, now + RECHECK / 2),
            Some(Look::Announced)
        );
        assert!(wake.found_nothing(seq, now + RECHECK));
        assert!(wake.should_look(seq, now + RECHECK).is_none());
    }

    #[test]
    fn a_remote_job_event_counts_as_announced_work() {
        let wake = Wake::default();
        let now = Instant::now();
        wake.found_nothing(wake.work_seq(), now);
        wake.remote_event("job.created", None);
        assert_eq!(
            wake.should_look(wake.work_seq(), now),
            Some(Look::Announced)
        );
        wake.found_nothing(wake.work_seq(), now);
        wake.remote_event("job.running", None);
        assert!(
            wake.should_look(wake.work_seq(), now).is_none(),
            "a running job frees nothing"
        );
    }

    #[test]
    fn watchers_of_a_job_share_one_watch_rung_by_its_changes_only() {
        let wake = Wake::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let (rx1, reader) = wake.watch_job(a);
        let reader = reader.expect("the first watcher starts the reader");
        let (rx2, again) = wake.watch_job(a);
        assert!(again.is_none(), "a second watcher joins the running reader");
        let (_rx_b, reader_b) = wake.watch_job(b);
        let reader_b = reader_b.unwrap();
        assert_eq!(wake.watched_jobs(), 2);
        wake.job_changed(b);
        // The permit is stored: a bell rung before the reader waits is not lost.
        assert!(futures::FutureExt::now_or_never(reader_b.bell.notified()).is_some());
        assert!(futures::FutureExt::now_or_never(reader.bell.notified()).is_none());
        wake.remote_event("job.running", None);
        assert!(futures::FutureExt::now_or_never(reader.bell.notified()).is_some());
        // Every watcher gone: the channel closes, and the next watcher starts a new reader.
        drop((rx1, rx2));
        assert!(reader.tx.is_closed());
        let (_rx3, fresh) = wake.watch_job(a);
        let fresh = fresh.expect("a new reader");
        wake.unwatch_job(&reader);
        assert_eq!(
            wake.watched_jobs(),
            2,
            "the old reader leaves the new watch alone"
        );
        wake.unwatch_job(&fresh);
        assert_eq!(wake.watched_jobs(), 1);
    }
}
