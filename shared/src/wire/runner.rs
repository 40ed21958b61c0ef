//! The runner API: claim, heartbeat, logs, report.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::job::{Job, JobResult};

/// `POST /runner/jobs/claim`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimRequest {
    /// The claiming runner.
    pub runner_id: String,
    /// Seconds to wait for a job before answering `204` (0 to 60).
    #[serde(default)]
    #[schemars(range(max = super::limits::MAX_WAIT_SECS))]
    pub wait: u64,
}

/// A job lease: proof that this runner, and only it, acts on the job.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// The fencing token to send with every heartbeat, log and report.
    pub token: String,
    /// When the lease runs out unless renewed.
    pub expires_at: DateTime<Utc>,
}

/// The node a claimed job runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeRef {
    /// Node id.
    pub node_id: String,
    /// Where to call its runtime agent.
    pub agent_base_url: String,
    /// Where its gateway serves apps.
    pub gateway_base_url: String,
    /// The grant the runner sends this node's agent as `X-Runtime-Grant` (SPEC §7): it opens
    /// the job's app on this node until the lease ends; job heartbeats renew it.
    #[serde(default)]
    pub agent_grant: String,
}

/// `200` answer to a claim.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimResponse {
    /// The job (payload without secret values; those are in `secretEnv`).
    pub job: Job,
    /// The secret environment values, for the container only.
    pub secret_env: BTreeMap<String, String>,
    /// The lease.
    pub lease: Lease,
    /// Where to run it; `None` for a `STOP` of an app that was never placed.
    pub node: Option<NodeRef>,
    /// The node that ran the app before, when the placement moved and that node is online
    /// (the runner stops the old container there once the new one runs).
    pub previous_node: Option<NodeRef>,
}

/// `POST /runner/jobs/{jobId}/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobHeartbeatRequest {
    /// The runner holding the lease.
    pub runner_id: String,
    /// The lease's fencing token.
    pub lease_token: String,
    /// The agent grants of the claim (or of the last heartbeat), to be renewed until the
    /// lease's new end.
    #[serde(default)]
    pub agent_grants: Vec<String>,
}

/// Answer to a job heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobHeartbeatResponse {
    /// The lease's new end.
    pub expires_at: DateTime<Utc>,
    /// The renewed grants, by node id (a grant that was not this job's, or is signed by no key
    /// the control plane holds any more, is left out).
    #[serde(default)]
    pub agent_grants: BTreeMap<String, String>,
}

/// `POST /runner/jobs/{jobId}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogsRequest {
    /// The lease's fencing token.
    pub lease_token: String,
    /// Lines, oldest first.
    pub lines: Vec<String>,
}

/// How a job attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    /// It worked.
    Succeeded,
    /// It did not.
    Failed,
}

/// `POST /runner/jobs/{jobId}/report`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReportRequest {
    /// The runner holding the lease.
    pub runner_id: String,
    /// The lease's fencing token.
    pub lease_token: String,
    /// Succeeded or failed.
    pub outcome: Outcome,
    /// What went wrong.
    pub error: Option<String>,
    /// Whether another attempt could succeed (a lost agent, a registry hiccup).
    #[serde(default)]
    pub retryable: bool,
    /// What a successful deploy produced.
    pub result: Option<JobResult>,
}

/// Identifies a job in a path.
pub type JobId = Uuid;
