//! The jobs this agent has deployed, per app, so that a late request for a job a newer one has
//! since replaced is refused instead of bringing the old version back.
//!
//! Jobs of one app run one after another (the control plane starts an app's next job only once
//! the previous one has ended), so once another job's container is routed, any request for a job
//! deployed before it is stale: a retry of a runner whose lease expired, or a request that was
//! still on its way. Job ids are not compared by age (two control-plane replicas may create
//! UUIDv7 ids out of order within a millisecond); only membership in this record counts.
//!
//! The record is in memory and holds the last [`PER_APP`] jobs of each app. After a restart it
//! starts from the adopted routes' jobs (the route file names each app's current job, which its
//! container also carries as `berth.job`). A restart closes every connection, so only a runner's
//! retry can still bring a stale request; for one to slip through, the newer job's deploy, the
//! restart and that retry must all fall within one call's retries (the runner's default backoff
//! adds up to well under a minute). A file rewritten on every deploy is not worth that window.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// How many deployed jobs are remembered per app.
pub const PER_APP: usize = 16;

/// The last [`PER_APP`] jobs deployed for each app, oldest first.
#[derive(Debug, Default)]
pub struct DeployedJobs {
    by_app: Mutex<HashMap<String, VecDeque<String>>>,
}

impl DeployedJobs {
    /// Notes that `job_id` was routed for `app_id`; the oldest job beyond [`PER_APP`] is forgotten.
    pub fn record(&self, app_id: &str, job_id: &str) {
        let mut by_app = self.by_app.lock().unwrap_or_else(|p| p.into_inner());
        let jobs = by_app.entry(app_id.to_owned()).or_default();
        jobs.retain(|j| j != job_id);
        jobs.push_back(job_id.to_owned());
        while jobs.len() > PER_APP {
            jobs.pop_front();
        }
    }

    /// Whether `job_id` was deployed for `app_id` (among the last [`PER_APP`]).
    pub fn contains(&self, app_id: &str, job_id: &str) -> bool {
        let by_app = self.by_app.lock().unwrap_or_else(|p| p.into_inner());
        by_app
            .get(app_id)
            .is_some_and(|jobs| jobs.iter().any(|j| j == job_id))
    }
}

/// What a deploy request for `job_id` is, given the job of the app's current route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The route already carries this job: answer its result again (or redeploy it if down).
    Current,
    /// This job was deployed before and another job's container has replaced it since.
    Superseded {
        /// The job whose container is routed now.
        current: String,
    },
    /// A job not deployed here yet (or a retry of one that failed): deploy it.
    New,
}

/// Judges a deploy request for `job_id` of `app_id` against the route's job, `routed`.
///
/// An app with no route (never deployed, or stopped) takes any job: a stop carries no job id, so
/// the agent cannot tell an old job from one that legitimately deploys again after it.
pub fn judge(deployed: &DeployedJobs, app_id: &str, job_id: &str, routed: Option<&str>) -> Verdict {
    match routed {
        Some(current) if current == job_id => Verdict::Current,
        Some(current) if deployed.contains(app_id, job_id) => Verdict::Superseded {
            current: current.to_owned(),
        },
        _ => Verdict::New,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_job_is_superseded_and_the_current_one_is_current() {
        let deployed = DeployedJobs::default();
        deployed.record("shop", "a");
        deployed.record("shop", "b");
        assert_eq!(judge(&deployed, "shop", "b", Some("b")), Verdict::Current);
        assert_eq!(
            judge(&deployed, "shop", "a", Some("b")),
            Verdict::Superseded {
                current: "b".into()
            }
        );
        assert_eq!(judge(&deployed, "shop", "c", Some("b")), Verdict::New);
    }

    #[test]
    fn jobs_of_other_apps_and_unrouted_apps_are_not_refused() {
        let deployed = DeployedJobs::default();
        deployed.record("shop", "a");
        deployed.record("shop", "b");
        assert_eq!(judge(&deployed, "blog", "a", Some("x")), Verdict::New);
        assert_eq!(judge(&deployed, "shop", "a", None), Verdict::New);
    }

    #[test]
    fn only_the_last_jobs_of_each_app_are_kept() {
        let deployed = DeployedJobs::default();
        for i in 0..=PER_APP {
            deployed.record("shop", &format!("j{i}"));
        }
        deployed.record("blog", "j0");
        assert!(!deployed.contains("shop", "j0"), "the oldest is forgotten");
        assert!(deployed.contains("shop", "j1"));
        assert!(deployed.contains("shop", &format!("j{PER_APP}")));
        assert!(deployed.contains("blog", "j0"));
    }

    #[test]
    fn recording_a_job_again_makes_it_the_newest() {
        let deployed = DeployedJobs::default();
        deployed.record("shop", "a");
        for i in 1..PER_APP {
            deployed.record("shop", &format!("j{i}"));
        }
        deployed.record("shop", "a");
        deployed.record("shop", "last");
        assert!(deployed.contains("shop", "a"));
        assert!(!deployed.contains("shop", "j1"));
    }
}
