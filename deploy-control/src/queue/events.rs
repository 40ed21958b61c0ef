//! The events of SPEC §4, built from the rows they describe. Storage writes them to
//! `outbox_event` in the transaction that made the change.

use berth_shared::wire::{JobState, NodeState};
use serde_json::json;
use uuid::Uuid;

use super::{to_datetime, JobRecord, Millis, NodeRecord, OutboxEvent};

/// The routing key of a job's current state: `job.created` for a new job,
/// `job.retrying` for one sent back to `PENDING`, else `job.<state>`.
pub fn job_routing_key(job: &JobRecord) -> &'static str {
    match job.state {
        JobState::Pending if job.attempt == 0 => "job.created",
        JobState::Pending => "job.retrying",
        JobState::Running => "job.running",
        JobState::Succeeded => "job.succeeded",
        JobState::Failed => "job.failed",
        JobState::Cancelled => "job.cancelled",
    }
}

/// The event for `job`'s current state.
pub fn job_event(job: &JobRecord) -> OutboxEvent {
    let event_id = Uuid::now_v7();
    let routing_key = job_routing_key(job);
    let body = json!({
        "eventId": event_id,
        "type": routing_key,
        "occurredAt": to_datetime(job.updated_at),
        "jobId": job.job_id,
        "appId": job.app_id,
        "kind": job.kind,
        "state": job.state,
        "attempt": job.attempt,
        "version": job.version,
        "nodeId": job.node_id,
        "runnerId": job.runner_id,
        "error": job.error,
        "result": job.result,
        "labels": job.payload.labels,
    });
    OutboxEvent {
        event_id,
        routing_key: routing_key.to_owned(),
        body: body.to_string(),
        created_at: job.updated_at,
    }
}

/// `node.online` or `node.offline` for `node` at `now`.
pub fn node_event(node: &NodeRecord, state: NodeState, now: Millis) -> OutboxEvent {
    let event_id = Uuid::now_v7();
    let routing_key = match state {
        NodeState::Online => "node.online",
        NodeState::Offline => "node.offline",
    };
    let body = json!({
        "eventId": event_id,
        "type": routing_key,
        "occurredAt": to_datetime(now),
        "nodeId": node.node_id,
        "name": node.name,
        "state": state,
        "lastHeartbeatAt": to_datetime(node.last_heartbeat_at),
        "labels": node.labels,
    });
    OutboxEvent {
        event_id,
        routing_key: routing_key.to_owned(),
        body: body.to_string(),
        created_at: now,
    }
}

/// `node.agent_moved` when a heartbeat of a known node announces another `agentBaseUrl` than
/// the node had: runners send that address jobs' secrets, so the move is news for operators
/// (an extension of SPEC §4's keys, documented in `docs/events.md`).
pub fn node_agent_moved_event(node: &NodeRecord, previous: &str, now: Millis) -> OutboxEvent {
    let event_id = Uuid::now_v7();
    let body = json!({
        "eventId": event_id,
        "type": "node.agent_moved",
        "occurredAt": to_datetime(now),
        "nodeId": node.node_id,
        "name": node.name,
        "previousAgentBaseUrl": previous,
        "agentBaseUrl": node.agent_base_url,
    });
    OutboxEvent {
        event_id,
        routing_key: "node.agent_moved".to_owned(),
        body: body.to_string(),
        created_at: now,
    }
}

/// `node.app_removed` when node `node_id` reports that it removed its container of an app the
/// control plane had settled elsewhere (SPEC §8: one version per app; an extension of SPEC §4's
/// keys, documented in `docs/events.md`).
pub fn node_app_removed_event(
    node_id: &str,
    removed: &berth_shared::wire::DisplacedApp,
    now: Millis,
) -> OutboxEvent {
    let event_id = Uuid::now_v7();
    let body = json!({
        "eventId": event_id,
        "type": "node.app_removed",
        "occurredAt": to_datetime(now),
        "nodeId": node_id,
        "appId": removed.app_id,
        "containerId": removed.container_id,
        "settledByJobId": removed.job_id,
        "settledOnNodeId": removed.node_id,
        "reason": removed.reason,
    });
    OutboxEvent {
        event_id,
        routing_key: "node.app_removed".to_owned(),
        body: body.to_string(),
        created_at: now,
    }
}

/// `node.scheduling` when an operator cordons, uncordons or drains `node`
/// (an extension of SPEC §4's keys, documented in `docs/events.md`).
pub fn node_scheduling_event(node: &NodeRecord, now: Millis) -> OutboxEvent {
    let event_id = Uuid::now_v7();
    let body = json!({
        "eventId": event_id,
        "type": "node.scheduling",
        "occurredAt": to_datetime(now),
        "nodeId": node.node_id,
        "name": node.name,
        "scheduling": node.scheduling,
        "schedulable": node.scheduling == berth_shared::wire::Scheduling::Active,
    });
    OutboxEvent {
        event_id,
        routing_key: "node.scheduling".to_owned(),
        body: body.to_string(),
        created_at: now,
    }
}
