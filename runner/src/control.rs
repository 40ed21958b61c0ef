//! The control plane's runner API (SPEC §3): claim, heartbeat, logs, report, each call retried
//! by [`crate::retry`].

use std::time::Duration;

use berth_shared::headers::RUNNER_TOKEN;
use berth_shared::secret::Secret;
use berth_shared::wire::{
    ClaimRequest, ClaimResponse, JobHeartbeatRequest, JobHeartbeatResponse, LogsRequest,
    ReportRequest,
};
use prometheus_client::metrics::counter::Counter;
use reqwest::StatusCode;
use serde::Serialize;
use uuid::Uuid;

use crate::retry::{retry, CallError, RetryPolicy};

/// How long a short call (heartbeat, logs, report) may take before it counts as lost.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// A client of one control plane, for one runner.
#[derive(Debug, Clone)]
pub struct ControlClient {
    http: reqwest::Client,
    base: String,
    token: Secret,
    runner_id: String,
    retry: RetryPolicy,
    /// Bumped by every failed attempt (`berth_runner_call_errors_total{target="control"}`).
    errors: Counter,
}

impl ControlClient {
    /// A client of the control plane at `base` (no trailing slash) that counts each failed
    /// attempt in `errors`.
    pub fn new(
        http: reqwest::Client,
        base: &str,
        token: Secret,
        runner_id: &str,
        retry: RetryPolicy,
        errors: Counter,
    ) -> Self {
        Self {
            http,
            base: base.to_owned(),
            token,
            runner_id: runner_id.to_owned(),
            retry,
            errors,
        }
    }

    /// This runner's id.
    pub fn runner_id(&self) -> &str {
        &self.runner_id
    }

    async fn post<B: Serialize>(
        &self,
        what: &str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<reqwest::Response, CallError> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header(RUNNER_TOKEN, self.token.expose())
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| CallError::unreachable(what, &e))
            .inspect_err(|_| {
                self.errors.inc();
            })?;
        if response.status().is_success() {
            Ok(response)
        } else {
            self.errors.inc();
            Err(CallError::from_response(what, response).await)
        }
    }

    /// Long-polls for a job for up to `wait`; `None` when none came.
    ///
    /// A claim is retried like any call. If an answer is lost on the way back, the job it carried
    /// comes back to the queue when its lease runs out, so nothing is lost, only delayed.
    pub async fn claim(&self, wait: Duration) -> Result<Option<ClaimResponse>, CallError> {
        let body = ClaimRequest {
            runner_id: self.runner_id.clone(),
            wait: wait.as_secs(),
        };
        let what = "the control plane (claim)";
        retry(&self.retry, || async {
            let response = self
                .post(what, "/runner/jobs/claim", &body, wait + CALL_TIMEOUT)
                .await?;
            if response.status() == StatusCode::NO_CONTENT {
                return Ok(None);
            }
            let claim = response
                .json::<ClaimResponse>()
                .await
                .map_err(|e| CallError::unreachable(what, &e))?;
            Ok(Some(claim))
        })
        .await
    }

    /// Renews a lease and the job's `agent_grants` with it. A `409` means another runner
    /// holds the job now.
    pub async fn heartbeat(
        &self,
        job_id: Uuid,
        lease_token: &str,
        agent_grants: Vec<String>,
        policy: &RetryPolicy,
    ) -> Result<JobHeartbeatResponse, CallError> {
        let body = JobHeartbeatRequest {
            runner_id: self.runner_id.clone(),
            lease_token: lease_token.to_owned(),
            agent_grants,
        };
        let path = format!("/runner/jobs/{job_id}/heartbeat");
        let what = "the control plane (heartbeat)";
        retry(policy, || async {
            let response = self.post(what, &path, &body, CALL_TIMEOUT).await?;
            response
                .json()
                .await
                .map_err(|e| CallError::unreachable(what, &e))
        })
        .await
    }

    /// Appends lines to the job's log.
    pub async fn logs(
        &self,
        job_id: Uuid,
        lease_token: &str,
        lines: Vec<String>,
    ) -> Result<(), CallError> {
        let body = LogsRequest {
            lease_token: lease_token.to_owned(),
            lines,
        };
        let path = format!("/runner/jobs/{job_id}/logs");
        retry(&self.retry, || async {
            self.post("the control plane (logs)", &path, &body, CALL_TIMEOUT)
                .await
                .map(drop)
        })
        .await
    }

    /// Reports how the job ended.
    pub async fn report(&self, job_id: Uuid, report: &ReportRequest) -> Result<(), CallError> {
        let path = format!("/runner/jobs/{job_id}/report");
        retry(&self.retry, || async {
            self.post("the control plane (report)", &path, report, CALL_TIMEOUT)
                .await
                .map(drop)
        })
        .await
    }
}
