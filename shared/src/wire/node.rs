//! The node registry: what a runtime agent announces and what operators see.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::agent::AppState;

/// What a host can carry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capacity {
    /// CPU cores.
    pub cpus: f64,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Apps the node may hold at most (awake ones; see `max_sleeping_apps`).
    pub max_apps: u32,
    /// Sleeping apps (SPEC §8) the node may hold beyond `max_apps`: a sleeping app frees its
    /// slot of `max_apps` while at most this many sleep, so a host fills with idle apps. Absent
    /// (an agent without sleeping apps) means 0: every app counts against `max_apps`.
    #[serde(default)]
    pub max_sleeping_apps: u32,
}

/// One app as its agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeApp {
    /// The app.
    pub app_id: String,
    /// Its container.
    pub container_id: String,
    /// The image it runs.
    pub image: String,
    /// Its container's state.
    pub state: AppState,
    /// Why the last wake of a sleeping app failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The job whose deploy made the container (its `berth.job` label); absent from agents that
    /// do not say, whose containers the control plane then judges as older than any job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// A container of an app the control plane has settled on another node (or stopped), which its
/// node removes (SPEC §8: one version per app): named in a heartbeat's answer, and once removed,
/// reported in the node's next heartbeat. See `docs/control-plane.md`, "One version per app".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisplacedApp {
    /// The app.
    pub app_id: String,
    /// The container to remove (only while it is still the app's container on the node).
    pub container_id: String,
    /// The job that settled the app: its last successful job, a deploy on another node or a stop.
    pub job_id: String,
    /// Where that job ran (absent for a stop of an app placed nowhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Why the container goes, for logs and the `node.app_removed` event.
    pub reason: String,
}

/// What a node heartbeat answers: the node's scheduling, and the containers it must remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatAnswer {
    /// The node.
    pub node_id: String,
    /// `ACTIVE`, `CORDONED` or `DRAINING`.
    pub scheduling: Scheduling,
    /// Whether it takes new apps (`ACTIVE`).
    pub schedulable: bool,
    /// Reported containers of apps settled elsewhere: the node stops and removes each (its
    /// volumes kept), drops its route and reports it under `removed` in its next heartbeat.
    #[serde(default)]
    pub remove: Vec<DisplacedApp>,
}

/// `POST /internal/runtime-nodes/join` (header `X-RT-Join-Token`) and
/// `POST /internal/runtime-nodes/rotate` (header `X-RT-Node-Token`): the node asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinRequest {
    /// The node's stable id (a DNS label).
    pub node_id: String,
}

/// A node's new credential (SPEC §7), in this answer only: the control plane keeps its hash.
/// The node sends it as `X-RT-Node-Token`; it speaks for `nodeId` only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeJoined {
    /// The node.
    pub node_id: String,
    /// The credential.
    pub credential: String,
}

impl std::fmt::Debug for NodeJoined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeJoined")
            .field("node_id", &self.node_id)
            .field("credential", &"[redacted]")
            .finish()
    }
}

/// `POST /internal/runtime-nodes/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeHeartbeat {
    /// Stable id of the host.
    pub node_id: String,
    /// A human name.
    pub name: String,
    /// Where runners reach its agent.
    pub agent_base_url: String,
    /// Where end users reach its gateway.
    pub gateway_base_url: String,
    /// Operator labels (`zone=a`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What it can carry.
    pub capacity: Capacity,
    /// The apps it runs.
    #[serde(default)]
    pub apps: Vec<NodeApp>,
    /// Containers it removed since its last answered heartbeat because an answer named them
    /// (each reported once: the control plane records a `node.app_removed` event).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<DisplacedApp>,
    /// The agent's version.
    pub version: String,
}

/// `ONLINE` while heartbeats arrive within the TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeState {
    /// Heartbeating.
    Online,
    /// Silent for longer than the TTL.
    Offline,
}

impl NodeState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "ONLINE",
            Self::Offline => "OFFLINE",
        }
    }
}

/// Whether a node takes new apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Scheduling {
    /// Takes new apps.
    Active,
    /// Keeps its apps, takes no new ones.
    Cordoned,
    /// Takes no new apps; its apps are being redeployed elsewhere.
    Draining,
}

impl Scheduling {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Cordoned => "CORDONED",
            Self::Draining => "DRAINING",
        }
    }

    /// Parses a stored name.
    pub fn parse(value: &str) -> Option<Self> {
        [Self::Active, Self::Cordoned, Self::Draining]
            .into_iter()
            .find(|s| s.as_str() == value)
    }
}

/// A node as operators see it (`GET /admin/runtime-nodes/list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    /// Stable id.
    pub node_id: String,
    /// Human name.
    pub name: String,
    /// `ONLINE` or `OFFLINE`.
    pub state: NodeState,
    /// Whether it takes new apps.
    pub schedulable: bool,
    /// `ACTIVE`, `CORDONED` or `DRAINING`.
    pub scheduling: Scheduling,
    /// Its last heartbeat.
    pub last_heartbeat_at: DateTime<Utc>,
    /// Where runners reach its agent.
    pub agent_base_url: String,
    /// Where end users reach its gateway.
    pub gateway_base_url: String,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// What it can carry.
    pub capacity: Capacity,
    /// Apps placed on it.
    pub apps: Vec<String>,
    /// How many of its apps its agent reported asleep in its last heartbeat (SPEC §8); up to
    /// `capacity.maxSleepingApps` of them do not count against `capacity.maxApps`.
    pub sleeping_apps: u64,
    /// Apps its agent reported in its last heartbeat, with their state (`running`, `sleeping`, …).
    pub reported_apps: Vec<NodeApp>,
    /// The agent's version.
    pub version: String,
    /// The agent's address before the last heartbeat that changed it (SPEC §7: a changed
    /// `agentBaseUrl` is shown to operators); absent when it never changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_agent_base_url: Option<String>,
    /// When a heartbeat last changed `agentBaseUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_base_url_changed_at: Option<DateTime<Utc>>,
}

/// What a node heartbeat and a cordon, uncordon or drain answer: the node's scheduling now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingView {
    /// The node.
    pub node_id: String,
    /// `ACTIVE`, `CORDONED` or `DRAINING`.
    pub scheduling: Scheduling,
    /// Whether it takes new apps (`ACTIVE`).
    pub schedulable: bool,
    /// The jobs a drain queued to move the node's apps elsewhere (admin actions only; empty
    /// when they were queued before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redeploy_job_ids: Option<Vec<uuid::Uuid>>,
}

impl SchedulingView {
    /// The view of `node_id` with `scheduling`, without redeploy jobs.
    pub fn of(node_id: &str, scheduling: Scheduling) -> Self {
        Self {
            node_id: node_id.to_owned(),
            scheduling,
            schedulable: scheduling == Scheduling::Active,
            redeploy_job_ids: None,
        }
    }
}

/// `{items: [...]}` list wrapper used by the admin API.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Items<T> {
    /// The listed things.
    pub items: Vec<T>,
}
