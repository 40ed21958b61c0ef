//! A job's attempts (`job_attempt`, the job's timeline): each claim opens one, the report or the
//! lease expiry that ends it closes it with an [`AttemptOutcome`].

use berth_shared::wire::{AttemptOutcome, JobAttempt, JobState, JobTimeline};

use super::{to_datetime, JobRecord, Millis};

/// One claim of a job, as `job_attempt` keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// 1 on the first claim.
    pub attempt: i32,
    /// The runner that claimed it.
    pub runner_id: String,
    /// The node the job ran for (`None`: a stop of an app never placed).
    pub node_id: Option<String>,
    /// When it was claimed.
    pub claimed_at: Millis,
    /// When it ended; `None` while it runs.
    pub ended_at: Option<Millis>,
    /// How it ended; `None` while it runs.
    pub outcome: Option<AttemptOutcome>,
    /// Why it failed, was retried or expired.
    pub error: Option<String>,
}

impl AttemptRecord {
    /// The attempt a claim of `job` (now `RUNNING`) opens; `None` when the job does not hold a
    /// claim.
    pub fn opened(job: &JobRecord) -> Option<Self> {
        if job.state != JobState::Running {
            return None;
        }
        Some(Self {
            attempt: job.attempt,
            runner_id: job.runner_id.clone()?,
            node_id: job.node_id.clone(),
            claimed_at: job.started_at.unwrap_or(job.updated_at),
            ended_at: None,
            outcome: None,
            error: None,
        })
    }
}

/// How the attempt of a job that just left `RUNNING` ended, with its error: its lease ran out
/// (`expired`), or its runner reported — `SUCCEEDED`, `FAILED` for good, or `RETRY` when the job
/// went back to `PENDING`. `None` when the job still runs.
pub fn ended(job: &JobRecord, expired: bool) -> Option<(AttemptOutcome, Option<String>)> {
    let outcome = match job.state {
        JobState::Running => return None,
        _ if expired => AttemptOutcome::Expired,
        JobState::Succeeded => return Some((AttemptOutcome::Succeeded, None)),
        JobState::Pending => AttemptOutcome::Retry,
        JobState::Cancelled => AttemptOutcome::Cancelled,
        JobState::Failed => AttemptOutcome::Failed,
    };
    Some((outcome, job.error.clone()))
}

impl AttemptRecord {
    /// The attempt as the timeline shows it.
    pub fn to_view(&self) -> JobAttempt {
        JobAttempt {
            attempt: self.attempt,
            runner_id: self.runner_id.clone(),
            node_id: self.node_id.clone(),
            claimed_at: to_datetime(self.claimed_at),
            ended_at: self.ended_at.map(to_datetime),
            outcome: self.outcome,
            error: self.error.clone(),
        }
    }
}

/// `job`'s timeline: its creation, its `attempts` and its end.
pub fn timeline(job: &JobRecord, attempts: &[AttemptRecord]) -> JobTimeline {
    JobTimeline {
        job_id: job.job_id,
        app_id: job.app_id.clone(),
        state: job.state,
        created_at: to_datetime(job.created_at),
        finished_at: job.finished_at.map(to_datetime),
        attempts: attempts.iter().map(AttemptRecord::to_view).collect(),
    }
}
