//! The job state machine (SPEC §2), as one function per transition on a [`JobRecord`].
//!
//! ```text
//! PENDING ──claim──▶ RUNNING ──report SUCCEEDED──▶ SUCCEEDED
//!    │                  │ ──report FAILED (final, or out of attempts)──▶ FAILED
//!    │                  └──lease expired / retryable failure──▶ PENDING (runAfter = now + backoff)
//!    ├──cancel──▶ CANCELLED
//!    └──give up (a STOP whose node is lost)──▶ FAILED
//! ```
//! Every transition bumps `version`. Storage calls these on a locked row and saves the result.

use berth_shared::wire::agent::AppState;
use berth_shared::wire::{AppRunState, JobKind, JobResult, JobState, NodeApp, Outcome};

use super::retry::RetryPolicy;
use super::{AppRunRecord, JobRecord, Millis};

/// A transition that the job's current state does not allow; shown to the caller as a 409.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// A runner's report, as the state machine needs it.
#[derive(Debug, Clone)]
pub struct Report {
    /// Succeeded or failed.
    pub outcome: Outcome,
    /// What went wrong.
    pub error: Option<String>,
    /// Whether another attempt could help.
    pub retryable: bool,
    /// What a successful attempt produced.
    pub result: Option<JobResult>,
}

impl JobRecord {
    fn touch(&mut self, now: Millis) {
        self.version += 1;
        self.updated_at = now;
    }

    fn clear_lease(&mut self) {
        self.lease_token = None;
        self.lease_expires_at = None;
    }

    /// Refuses a transition out of `PENDING` when the job is not (or no longer) `PENDING`.
    fn expect_pending(&self) -> Result<(), Refused> {
        if self.state == JobState::Pending {
            return Ok(());
        }
        Err(Refused(format!(
            "job {} is {}",
            self.job_id,
            self.state.as_str()
        )))
    }

    /// Checks that `token` is the job's current lease; anything else is a stale or foreign lease.
    pub fn check_lease(&self, token: &str) -> Result<(), Refused> {
        if self.state != JobState::Running {
            return Err(Refused(format!(
                "job {} is {}, not RUNNING: its lease is no longer valid",
                self.job_id,
                self.state.as_str()
            )));
        }
        if self.lease_token.as_deref() != Some(token) {
            return Err(Refused(format!(
                "the lease token is not job {}'s current lease (it was claimed again or the lease expired)",
                self.job_id
            )));
        }
        Ok(())
    }

    /// `PENDING → RUNNING`: a runner claims the job on `node_id`.
    pub fn claim(
        &mut self,
        runner_id: &str,
        lease_token: &str,
        lease_expires_at: Millis,
        node_id: Option<String>,
        now: Millis,
    ) -> Result<(), Refused> {
        self.expect_pending()?;
        self.state = JobState::Running;
        self.attempt += 1;
        self.runner_id = Some(runner_id.to_owned());
        self.lease_token = Some(lease_token.to_owned());
        self.lease_expires_at = Some(lease_expires_at);
        self.node_id = node_id;
        self.waiting_reason = None;
        self.started_at = Some(now);
        self.touch(now);
        Ok(())
    }

    /// Records why a pending job could not be claimed. Returns false (and changes nothing)
    /// when that was already the reason, so an idle queue does not churn versions.
    pub fn wait_for(&mut self, reason: String, now: Millis) -> bool {
        if self.state != JobState::Pending || self.waiting_reason.as_deref() == Some(&reason) {
            return false;
        }
        self.waiting_reason = Some(reason);
        self.touch(now);
        true
    }

    /// Extends the lease of a running job.
    pub fn renew(&mut self, token: &str, expires_at: Millis, now: Millis) -> Result<(), Refused> {
        self.check_lease(token)?;
        self.lease_expires_at = Some(expires_at);
        // A renewal is not a change a watcher cares about: no version bump.
        self.updated_at = now;
        Ok(())
    }

    /// `RUNNING → SUCCEEDED | FAILED | PENDING` on a runner's report.
    pub fn report(
        &mut self,
        token: &str,
        report: Report,
        policy: &RetryPolicy,
        now: Millis,
    ) -> Result<(), Refused> {
        self.check_lease(token)?;
        match report.outcome {
            Outcome::Succeeded => {
                self.state = JobState::Succeeded;
                self.result = report.result;
                self.error = None;
                self.finished_at = Some(now);
            }
            Outcome::Failed => {
                let error = report
                    .error
                    .unwrap_or_else(|| "the runner reported a failure without a reason".to_owned());
                if report.retryable && policy.may_retry(self.attempt) {
                    self.requeue(error, policy, now);
                } else {
                    self.state = JobState::Failed;
                    self.error = Some(if report.retryable {
                        format!("{error} (gave up after {} attempts)", self.attempt)
                    } else {
                        error
                    });
                    self.finished_at = Some(now);
                }
            }
        }
        self.clear_lease();
        self.touch(now);
        Ok(())
    }

    /// `RUNNING → PENDING | FAILED` when the lease ran out at `now`.
    pub fn expire_lease(&mut self, policy: &RetryPolicy, now: Millis) -> Result<(), Refused> {
        let expired =
            self.state == JobState::Running && self.lease_expires_at.is_some_and(|at| at <= now);
        if !expired {
            return Err(Refused(format!("job {} holds a live lease", self.job_id)));
        }
        let runner = self.runner_id.clone().unwrap_or_default();
        let reason = format!(
            "runner {runner} stopped renewing its lease during attempt {}",
            self.attempt
        );
        if policy.may_retry(self.attempt) {
            self.requeue(reason, policy, now);
        } else {
            self.state = JobState::Failed;
            self.error = Some(format!(
                "{reason}; out of attempts ({} of {})",
                self.attempt, self.max_attempts
            ));
            self.finished_at = Some(now);
        }
        self.clear_lease();
        self.touch(now);
        Ok(())
    }

    fn requeue(&mut self, error: String, policy: &RetryPolicy, now: Millis) {
        self.state = JobState::Pending;
        self.run_after = now + policy.delay_ms(self.attempt);
        self.waiting_reason = Some(format!("retrying after attempt {} failed", self.attempt));
        self.error = Some(error);
        self.started_at = None;
    }

    /// `PENDING → FAILED` with `reason`: a job no claim can ever hand out (a `STOP` whose node
    /// is lost, [`super::placement::lost_stop`]).
    pub fn give_up(&mut self, reason: String, now: Millis) -> Result<(), Refused> {
        self.expect_pending()?;
        self.state = JobState::Failed;
        self.error = Some(reason);
        self.waiting_reason = None;
        self.finished_at = Some(now);
        self.touch(now);
        Ok(())
    }

    /// `PENDING → CANCELLED`.
    pub fn cancel(&mut self, now: Millis) -> Result<(), Refused> {
        if self.state != JobState::Pending {
            return Err(Refused(format!(
                "job {} is {}: only PENDING jobs can be cancelled",
                self.job_id,
                self.state.as_str()
            )));
        }
        self.state = JobState::Cancelled;
        self.finished_at = Some(now);
        self.waiting_reason = None;
        self.touch(now);
        Ok(())
    }
}

/// The app's last-known run after `job` changed, given the previous record.
/// `None` when the change says nothing new about the app (a job requeued for retry).
pub fn next_app_run(prev: Option<&AppRunRecord>, job: &JobRecord) -> Option<AppRunRecord> {
    let keep = |f: fn(&AppRunRecord) -> Option<String>| prev.and_then(f);
    let base = AppRunRecord {
        app_id: job.app_id.clone(),
        last_job_id: job.job_id,
        state: String::new(),
        image: keep(|p| p.image.clone()),
        node_id: job.node_id.clone().or_else(|| keep(|p| p.node_id.clone())),
        url: keep(|p| p.url.clone()),
        error: None,
        updated_at: job.updated_at,
    };
    let run = match (job.state, job.kind) {
        (JobState::Running, JobKind::Deploy) => AppRunRecord {
            state: AppRunState::Deploying.as_str().into(),
            error: keep(|p| p.error.clone()),
            ..base
        },
        (JobState::Running, JobKind::Stop) => AppRunRecord {
            state: AppRunState::Stopping.as_str().into(),
            ..base
        },
        (JobState::Succeeded, JobKind::Deploy) => {
            let result = job.result.clone().unwrap_or_default();
            AppRunRecord {
                state: AppRunState::Running.as_str().into(),
                image: result
                    .image
                    .or_else(|| job.payload.image.clone())
                    .or(base.image.clone()),
                url: result.url.or(base.url.clone()),
                ..base
            }
        }
        (JobState::Succeeded, JobKind::Stop) => AppRunRecord {
            state: AppRunState::Stopped.as_str().into(),
            url: None,
            ..base
        },
        (JobState::Failed, _) => AppRunRecord {
            state: AppRunState::Failed.as_str().into(),
            error: job.error.clone(),
            ..base
        },
        _ => return None,
    };
    Some(run)
}

/// What a change of a job does with its app's placement (and the room it reserves on the node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementAfter {
    /// The placement stays.
    Kept,
    /// It goes: a `STOP` succeeded.
    Released,
    /// It goes unless a container of an earlier successful deploy serves the app (see
    /// [`PlacementAfter::releases`]): a `DEPLOY` failed for good.
    ReleasedUnlessServing,
}

impl PlacementAfter {
    /// What `job`'s change (already applied) does with the placement.
    pub fn of(job: &JobRecord) -> Self {
        match (job.kind, job.state) {
            (JobKind::Stop, JobState::Succeeded) => Self::Released,
            (JobKind::Deploy, JobState::Failed) => Self::ReleasedUnlessServing,
            _ => Self::Kept,
        }
    }

    /// Whether the placement goes, given the app's run `prev` before the change. A failed
    /// deploy of an app nothing serves (a first deploy, or one after a stop: the run has no
    /// URL) gives its placement back, so it holds no slot of the node's `maxApps` for good;
    /// one whose app still runs an earlier version keeps it.
    pub fn releases(self, prev: Option<&AppRunRecord>) -> bool {
        match self {
            Self::Kept => false,
            Self::Released => true,
            Self::ReleasedUnlessServing => prev.is_none_or(|run| run.url.is_none()),
        }
    }
}

/// An app's run after its node's heartbeat reported the app as `reported`, given its run `prev`
/// on that node; `None` when nothing changes. Only a run its last deploy left `RUNNING` (or that
/// sleeps) follows the agent: `RUNNING` → `SLEEPING` when the agent put the app to sleep (with
/// the reason its last wake failed, if it did), `SLEEPING` → `RUNNING` once it is awake again.
/// A run a job is changing (`DEPLOYING`, `STOPPING`), or that ended `STOPPED` or `FAILED`, is
/// the job's to change.
pub fn reported_app_run(
    prev: &AppRunRecord,
    reported: &NodeApp,
    now: Millis,
) -> Option<AppRunRecord> {
    let (running, sleeping) = (
        AppRunState::Running.as_str(),
        AppRunState::Sleeping.as_str(),
    );
    let (state, error) = match (prev.state.as_str(), reported.state) {
        (s, AppState::Sleeping) if s == running || s == sleeping => {
            (sleeping, reported.error.clone())
        }
        (s, _) if s == sleeping => (running, None),
        _ => return None,
    };
    if prev.state == state && prev.error == error {
        return None;
    }
    Some(AppRunRecord {
        state: state.to_owned(),
        error,
        updated_at: now,
        ..prev.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn run(state: AppRunState, error: Option<&str>) -> AppRunRecord {
        AppRunRecord {
            app_id: "app".into(),
            last_job_id: Uuid::now_v7(),
            state: state.as_str().into(),
            image: Some("img".into()),
            node_id: Some("node-a".into()),
            url: Some("http://app".into()),
            error: error.map(str::to_owned),
            updated_at: 1,
        }
    }

    fn reported(state: AppState, error: Option<&str>) -> NodeApp {
        NodeApp {
            app_id: "app".into(),
            container_id: "c".into(),
            image: "img".into(),
            state,
            error: error.map(str::to_owned),
            job_id: None,
        }
    }

    fn next(
        prev: AppRunState,
        error: Option<&str>,
        now: AppState,
    ) -> Option<(String, Option<String>)> {
        reported_app_run(&run(prev, error), &reported(now, None), 2).map(|r| (r.state, r.error))
    }

    #[test]
    fn a_running_app_sleeps_and_wakes_with_its_agent() {
        let asleep = Some(("SLEEPING".to_owned(), None));
        assert_eq!(next(AppRunState::Running, None, AppState::Sleeping), asleep);
        assert_eq!(next(AppRunState::Sleeping, None, AppState::Sleeping), None);
        assert_eq!(
            next(AppRunState::Sleeping, Some("exit 1"), AppState::Running),
            Some(("RUNNING".to_owned(), None))
        );
        assert_eq!(next(AppRunState::Running, None, AppState::Running), None);
        let woke_up_failing = reported_app_run(
            &run(AppRunState::Sleeping, None),
            &reported(AppState::Sleeping, Some("exit 1")),
            2,
        )
        .unwrap();
        assert_eq!(woke_up_failing.error.as_deref(), Some("exit 1"));
        assert_eq!(woke_up_failing.updated_at, 2);
        assert_eq!(woke_up_failing.url.as_deref(), Some("http://app"));
    }

    #[test]
    fn a_run_a_job_owns_does_not_follow_the_agent() {
        for state in [
            AppRunState::Deploying,
            AppRunState::Stopping,
            AppRunState::Stopped,
            AppRunState::Failed,
        ] {
            assert_eq!(next(state, None, AppState::Sleeping), None, "{state:?}");
            assert_eq!(next(state, None, AppState::Running), None, "{state:?}");
        }
    }
    #[test]
    fn a_failed_deploy_gives_the_placement_back_only_when_nothing_serves_the_app() {
        let after = PlacementAfter::ReleasedUnlessServing;
        assert!(after.releases(None), "a first deploy");
        let mut stopped = run(AppRunState::Deploying, None);
        stopped.url = None;
        assert!(after.releases(Some(&stopped)), "a deploy after a stop");
        let serving = run(AppRunState::Deploying, None);
        assert!(!after.releases(Some(&serving)), "an earlier version serves");
        assert!(PlacementAfter::Released.releases(Some(&serving)));
        assert!(!PlacementAfter::Kept.releases(None));
    }
}
