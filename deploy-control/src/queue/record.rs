//! The rows of the control plane's tables, as the domain sees them.

use std::collections::BTreeMap;

use berth_shared::sealed::SealedEnv;

use berth_shared::wire::{
    AppRun, AppRunState, Capacity, Job, JobKind, JobPayload, JobResult, JobState, NodeApp,
    NodeHeartbeat, NodeRef, NodeState, NodeView, Scheduling,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Milliseconds since the Unix epoch: how every table stores time, so the three databases
/// agree and tests can pass their own clock.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_millis() -> Millis {
    Utc::now().timestamp_millis()
}

/// [`Millis`] as a `DateTime` for the API.
pub fn to_datetime(ms: Millis) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// One `deploy_job` row.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// Insertion order; the queue's FIFO order and the list cursor.
    pub seq: i64,
    /// UUID v7.
    pub job_id: Uuid,
    /// The app.
    pub app_id: String,
    /// Deploy or stop.
    pub kind: JobKind,
    /// Current state.
    pub state: JobState,
    /// What was asked (without secret values).
    pub payload: JobPayload,
    /// Secret environment values, sealed for the app (`BERTH_SECRET_KEY`): opened only to hand
    /// them to the runner that claims the job.
    pub secret_env: SealedEnv,
    /// Claims so far.
    pub attempt: i32,
    /// Claims allowed.
    pub max_attempts: i32,
    /// Not claimable before.
    pub run_after: Millis,
    /// Node of the current or last attempt.
    pub node_id: Option<String>,
    /// Runner of the current or last attempt.
    pub runner_id: Option<String>,
    /// The current lease's fencing token (only while `RUNNING`).
    pub lease_token: Option<String>,
    /// When the current lease runs out.
    pub lease_expires_at: Option<Millis>,
    /// Why a pending job waits.
    pub waiting_reason: Option<String>,
    /// Why it failed (or why the last attempt did).
    pub error: Option<String>,
    /// What a successful job produced.
    pub result: Option<JobResult>,
    /// Bumped by every change.
    pub version: i64,
    /// Set by the caller to make a retried create return this job.
    pub idempotency_key: Option<String>,
    /// Hash of the create request, to tell a true retry from a reused key.
    pub request_hash: Option<String>,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
    /// Start of the current attempt.
    pub started_at: Option<Millis>,
    /// When it reached a final state.
    pub finished_at: Option<Millis>,
}

impl JobRecord {
    /// The job as the deploy API shows it.
    pub fn to_view(&self) -> Job {
        Job {
            job_id: self.job_id,
            app_id: self.app_id.clone(),
            kind: self.kind,
            state: self.state,
            payload: self.payload.clone(),
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            node_id: self.node_id.clone(),
            runner_id: self.runner_id.clone(),
            waiting_reason: self.waiting_reason.clone(),
            error: self.error.clone(),
            result: self.result.clone(),
            version: self.version,
            run_after: to_datetime(self.run_after),
            created_at: to_datetime(self.created_at),
            updated_at: to_datetime(self.updated_at),
            started_at: self.started_at.map(to_datetime),
            finished_at: self.finished_at.map(to_datetime),
        }
    }
}

/// One `runtime_node` row, with the reservations of the apps placed on it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    /// Stable id.
    pub node_id: String,
    /// Human name.
    pub name: String,
    /// Where runners reach its agent.
    pub agent_base_url: String,
    /// Where its gateway serves apps.
    pub gateway_base_url: String,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Announced capacity.
    pub capacity: Capacity,
    /// Apps its agent reported in the last heartbeat.
    pub reported_apps: Vec<NodeApp>,
    /// Agent version.
    pub version: String,
    /// Cordoned, draining or active.
    pub scheduling: Scheduling,
    /// The state last written (the node watcher flips it to `OFFLINE` and emits the event).
    pub recorded_state: NodeState,
    /// Last heartbeat.
    pub last_heartbeat_at: Millis,
    /// Apps placed on it (`runtime_placement` rows).
    pub app_count: i64,
    /// Apps its agent reported asleep in the last heartbeat (SPEC §8).
    pub sleeping_apps: i64,
    /// Memory reserved by those apps, MiB.
    pub reserved_memory_mb: i64,
    /// CPU reserved by those apps, thousandths of a core.
    pub reserved_cpu_millis: i64,
    /// The last change of its `agentBaseUrl` by a heartbeat, for operators to see (SPEC §7).
    pub agent_url_change: Option<AgentUrlChange>,
}

/// A heartbeat that moved a known node's agent to another address: runners send jobs' secrets
/// there, so operators see each move (the admin node list, the dashboard, a `node.agent_moved`
/// event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentUrlChange {
    /// The address before.
    pub previous: String,
    /// When the heartbeat that changed it came.
    pub at: Millis,
}

impl NodeRecord {
    /// The heartbeat that wrote this row as it is: what the node reported, nothing `removed`.
    pub fn reported(&self) -> NodeHeartbeat {
        NodeHeartbeat {
            node_id: self.node_id.clone(),
            name: self.name.clone(),
            agent_base_url: self.agent_base_url.clone(),
            gateway_base_url: self.gateway_base_url.clone(),
            labels: self.labels.clone(),
            capacity: self.capacity,
            apps: self.reported_apps.clone(),
            removed: vec![],
            version: self.version.clone(),
        }
    }

    /// `ONLINE` when the last heartbeat is younger than `ttl_ms` at `now`.
    pub fn state_at(&self, now: Millis, ttl_ms: i64) -> NodeState {
        if now - self.last_heartbeat_at <= ttl_ms {
            NodeState::Online
        } else {
            NodeState::Offline
        }
    }

    /// The apps that count against `maxApps`: those placed on it but the sleeping ones, up to
    /// `maxSleepingApps` of them (a sleeping app frees its slot, so a host fills with idle apps).
    /// The claim's `RESERVE` statement guards the same count.
    pub fn counted_apps(&self) -> i64 {
        let freed = self
            .sleeping_apps
            .min(i64::from(self.capacity.max_sleeping_apps))
            .min(self.app_count)
            .max(0);
        self.app_count - freed
    }

    /// Where runners reach it, without a grant yet (the claim signs one,
    /// `service::runner::grant`).
    pub fn to_ref(&self) -> NodeRef {
        NodeRef {
            node_id: self.node_id.clone(),
            agent_base_url: self.agent_base_url.clone(),
            gateway_base_url: self.gateway_base_url.clone(),
            agent_grant: String::new(),
        }
    }

    /// The node as operators see it, with the apps placed on it.
    pub fn to_view(&self, now: Millis, ttl_ms: i64, apps: Vec<String>) -> NodeView {
        NodeView {
            node_id: self.node_id.clone(),
            name: self.name.clone(),
            state: self.state_at(now, ttl_ms),
            schedulable: self.scheduling == Scheduling::Active,
            scheduling: self.scheduling,
            last_heartbeat_at: to_datetime(self.last_heartbeat_at),
            agent_base_url: self.agent_base_url.clone(),
            gateway_base_url: self.gateway_base_url.clone(),
            labels: self.labels.clone(),
            capacity: self.capacity,
            apps,
            sleeping_apps: u64::try_from(self.sleeping_apps).unwrap_or(0),
            reported_apps: self.reported_apps.clone(),
            version: self.version.clone(),
            previous_agent_base_url: self.agent_url_change.as_ref().map(|c| c.previous.clone()),
            agent_base_url_changed_at: self.agent_url_change.as_ref().map(|c| to_datetime(c.at)),
        }
    }
}

/// One `runtime_placement` row: the node an app is pinned to and what it reserves there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The app.
    pub app_id: String,
    /// Its node.
    pub node_id: String,
    /// Reserved memory, MiB.
    pub memory_mb: i64,
    /// Reserved CPU, thousandths of a core.
    pub cpu_millis: i64,
}

/// One `app_run` row: the last known state of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRunRecord {
    /// The app.
    pub app_id: String,
    /// The last job that acted on it.
    pub last_job_id: Uuid,
    /// `DEPLOYING`, `RUNNING`, `SLEEPING`, `STOPPING`, `STOPPED` or `FAILED`.
    pub state: String,
    /// The image that runs (or last ran).
    pub image: Option<String>,
    /// Its node.
    pub node_id: Option<String>,
    /// Where end users reach it.
    pub url: Option<String>,
    /// The last job's error.
    pub error: Option<String>,
    /// Last change.
    pub updated_at: Millis,
}

impl AppRunRecord {
    /// As the deploy API shows it; `None` when the stored state is not one this version knows.
    pub fn to_view(&self) -> Option<AppRun> {
        Some(AppRun {
            app_id: self.app_id.clone(),
            last_job_id: self.last_job_id,
            state: AppRunState::parse(&self.state)?,
            image: self.image.clone(),
            node_id: self.node_id.clone(),
            url: self.url.clone(),
            error: self.error.clone(),
            updated_at: to_datetime(self.updated_at),
        })
    }
}

/// One `job_log` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the control plane received it.
    pub at: Millis,
    /// The text.
    pub line: String,
}

/// An `outbox_event` row to insert (SPEC §4).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Unique id, also the AMQP `message_id`.
    pub event_id: Uuid,
    /// `job.created`, `node.offline`, …
    pub routing_key: String,
    /// The JSON body.
    pub body: String,
    /// When it happened.
    pub created_at: Millis,
}
