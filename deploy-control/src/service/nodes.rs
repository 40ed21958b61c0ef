//! The node registry: agents' joins, credentials and heartbeats, the operators' node list,
//! revocation, and cordon / uncordon / drain. Draining a node gives every app placed on it a redeploy job, which placement sends
//! to another node because a draining node is not schedulable; the runner stops the old
//! container once the new one runs (the claim names the previous node).

use berth_shared::ids::{AppId, NodeId};
use berth_shared::secret::Secret;
use berth_shared::wire::{
    is_label_part, DisplacedApp, JobKind, JobState, JoinRequest, NodeHeartbeat, NodeJoined,
    NodeState, NodeView, Scheduling,
};
use uuid::Uuid;

use super::{ServiceError, ServiceResult};
use crate::queue::credential::{self, NodeCredential};
use crate::queue::{now_millis, JobRecord, NodeRecord};
use crate::state::AppState;
use crate::storage::{Created, JobFilter, JobSpec, NewJob};

/// Apps one heartbeat may list.
pub const MAX_REPORTED_APPS: usize = 10_000;

/// The node a request's credential speaks for (SPEC §7: for that node only).
#[derive(Debug, Clone)]
pub struct NodeCaller {
    /// The node.
    pub node_id: String,
    /// The hash of the credential it presented (a rotation keeps it until the new one is used).
    pub presented_hash: String,
    /// Whether the database checked the credential for this request; when not, it came from
    /// this process's credentials ([`super::beats`]), and whatever writes for the node checks it
    /// first ([`checked`]).
    pub checked: bool,
}

/// The node whose credential hashes to `presented_hash` (SPEC §7): one this process accepted
/// (checked again by its next flush, or by [`checked`] before a write), else the database's;
/// unknown or revoked ones are [`ServiceError::Unauthorized`].
pub async fn authenticate(state: &AppState, presented_hash: String) -> ServiceResult<NodeCaller> {
    if let Some(node_id) = state.beats().credential(&presented_hash) {
        return Ok(NodeCaller {
            node_id,
            presented_hash,
            checked: false,
        });
    }
    let credential = use_credential(state, &presented_hash).await?;
    Ok(NodeCaller {
        node_id: credential.node_id,
        presented_hash,
        checked: true,
    })
}

/// The database's check of a presented credential, kept for the next requests when it is the
/// node's only one.
async fn use_credential(state: &AppState, presented_hash: &str) -> ServiceResult<NodeCredential> {
    let credential = state.store().use_credential(presented_hash).await?;
    state.beats().accepted(presented_hash, &credential);
    Ok(credential)
}

/// Checks `caller`'s credential in the database unless it was for this request: before a
/// heartbeat is written in full, a cached credential the database revoked or retired since
/// is refused.
async fn checked(state: &AppState, caller: &NodeCaller) -> ServiceResult<()> {
    if caller.checked {
        return Ok(());
    }
    let credential = use_credential(state, &caller.presented_hash)
        .await
        .inspect_err(|_| state.beats().forget(&caller.node_id))?;
    speaks_for(&credential.node_id, &caller.node_id)
}

/// Joins node `req.node_id` (once): its credential, shown in this answer only and stored
/// hashed.
pub async fn join(state: &AppState, req: &JoinRequest) -> ServiceResult<NodeJoined> {
    NodeId::parse(&req.node_id).map_err(|e| ServiceError::Invalid(format!("nodeId: {}", e.0)))?;
    let credential = Secret::generate();
    let stored = credential::hash(credential.expose());
    state
        .store()
        .join_node(&req.node_id, &stored, now_millis())
        .await?;
    tracing::info!(node_id = %req.node_id, "node joined");
    Ok(NodeJoined {
        node_id: req.node_id.clone(),
        credential: credential.expose().to_owned(),
        grant_keys: state.grants().public_keys().to_vec(),
    })
}

/// Gives `caller` (the node a credential hashing to `presented_hash` speaks for) a new
/// credential; the presented one stays good until the new one is used once.
pub async fn rotate(
    state: &AppState,
    caller: &str,
    presented_hash: &str,
    req: &JoinRequest,
) -> ServiceResult<NodeJoined> {
    speaks_for(caller, &req.node_id)?;
    let credential = Secret::generate();
    let stored = credential::hash(credential.expose());
    state
        .store()
        .rotate_credential(presented_hash, &stored, now_millis())
        .await?;
    state.beats().forget(caller);
    tracing::info!(node_id = %caller, "node credential rotated");
    Ok(NodeJoined {
        node_id: caller.to_owned(),
        credential: credential.expose().to_owned(),
        grant_keys: state.grants().public_keys().to_vec(),
    })
}

/// Revokes node `node_id`'s credential: refused from now on, and the node `OFFLINE` at once.
pub async fn revoke(state: &AppState, node_id: &str) -> ServiceResult<()> {
    let ttl = state.settings().node_ttl.as_millis() as i64;
    state
        .store()
        .revoke_node(node_id, now_millis(), ttl)
        .await?;
    state.beats().forget(node_id);
    tracing::warn!(node_id, "node credential revoked");
    Ok(())
}

/// A credential of node `caller` speaks for that node only.
fn speaks_for(caller: &str, node_id: &str) -> ServiceResult<()> {
    if caller == node_id {
        return Ok(());
    }
    Err(ServiceError::Forbidden(format!(
        "this X-RT-Node-Token is node {caller}'s credential: it speaks for that node only, not for {node_id}"
    )))
}

/// What a heartbeat answers: the node's scheduling, and the containers it reported that it
/// must remove (SPEC §8: one version per app, [`crate::queue::displaced`]).
#[derive(Debug)]
pub struct Beat {
    /// The node's scheduling.
    pub scheduling: Scheduling,
    /// Its containers of apps settled elsewhere.
    pub remove: Vec<DisplacedApp>,
}

/// Records the heartbeat of node `caller` (the node its credential speaks for); the node is
/// (again) `ONLINE`. The answer names the reported containers of apps the control plane has
/// settled on another node (or stopped): a node back from an absence, or restarted, removes
/// them. A heartbeat that repeats what was last written is answered from memory and written
/// with the next flush ([`super::beats`]); any other is durable before it is answered.
pub async fn heartbeat(
    state: &AppState,
    caller: &NodeCaller,
    hb: &NodeHeartbeat,
) -> ServiceResult<Beat> {
    check(hb).map_err(ServiceError::Invalid)?;
    speaks_for(&caller.node_id, &hb.node_id)?;
    let now = now_millis();
    let ttl_ms = state.settings().node_ttl.as_millis() as i64;
    if let Some(coalesced) = state.beats().coalesce(&caller.presented_hash, hb, now) {
        state.metrics().node_heartbeats.inc();
        state.metrics().node_heartbeats_coalesced.inc();
        if !state.watch().watched(now, ttl_ms) {
            state.wake().work_available();
        }
        return Ok(Beat {
            scheduling: coalesced.scheduling,
            remove: vec![],
        });
    }
    checked(state, caller).await?;
    let saved = state.store().node_heartbeat(hb, now).await?;
    state.metrics().node_heartbeats.inc();
    // A node that came (back) online may unblock waiting jobs; a routine heartbeat changes
    // nothing a claim looks at, and ringing for each would wake every waiting claim thousands
    // of times a second in a large fleet. Within one TTL of the control plane's start or a
    // database outage, the node watcher marks nothing OFFLINE, so a node that looked OFFLINE
    // to claims comes back still recorded ONLINE: until then every heartbeat rings, for the
    // apps that wait for their node rather than move (`crate::watch`).
    if saved.came_online || !state.watch().watched(now, ttl_ms) {
        state.wake().work_available();
    }
    for removed in &hb.removed {
        tracing::warn!(app_id = %removed.app_id, container_id = %removed.container_id, settled_by_job_id = %removed.job_id, reason = %removed.reason, "node removed a container of an app settled elsewhere");
    }
    let remove = state.store().displaced_apps(&hb.node_id, &hb.apps).await?;
    for d in &remove {
        tracing::warn!(app_id = %d.app_id, container_id = %d.container_id, job_id = %d.job_id, reason = %d.reason, "node told to remove a container of an app settled elsewhere");
    }
    state.beats().written(&caller.presented_hash, hb, now);
    Ok(Beat {
        scheduling: saved.node.scheduling,
        remove,
    })
}

fn check(hb: &NodeHeartbeat) -> Result<(), String> {
    NodeId::parse(&hb.node_id).map_err(|e| format!("nodeId: {}", e.0))?;
    if hb.name.is_empty() || hb.name.len() > 255 {
        return Err("name must be 1 to 255 characters".into());
    }
    for (field, url) in [
        ("agentBaseUrl", &hb.agent_base_url),
        ("gatewayBaseUrl", &hb.gateway_base_url),
    ] {
        let ok = (url.starts_with("http://") || url.starts_with("https://"))
            && url.len() <= 1024
            && !url.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            return Err(format!("{field} must be an http:// or https:// URL"));
        }
    }
    if hb.labels.len() > 32
        || hb
            .labels
            .iter()
            .any(|(k, v)| !is_label_part(k) || !(v.is_empty() || is_label_part(v)))
    {
        return Err("labels: at most 32, keys and values of A-Z, a-z, 0-9, '.', '_', '-', '/' (63 characters)".into());
    }
    let c = hb.capacity;
    if !c.cpus.is_finite() || c.cpus < 0.0 || c.cpus > 1_000_000.0 {
        return Err("capacity.cpus must be a number of cores between 0 and 1000000".into());
    }
    if hb.apps.len() > MAX_REPORTED_APPS || hb.removed.len() > MAX_REPORTED_APPS {
        return Err(format!(
            "at most {MAX_REPORTED_APPS} apps and {MAX_REPORTED_APPS} removed apps per heartbeat"
        ));
    }
    for removed in &hb.removed {
        AppId::parse(&removed.app_id).map_err(|e| format!("removed[].appId: {}", e.0))?;
        let too_long = removed.container_id.len() > 128
            || removed.job_id.len() > 64
            || removed.node_id.as_ref().is_some_and(|n| n.len() > 64)
            || removed.reason.len() > 1024;
        if too_long {
            return Err(
                "removed[]: containerId at most 128 characters, jobId and nodeId 64, reason 1024"
                    .into(),
            );
        }
    }
    if hb.version.len() > 64 {
        return Err("version must be at most 64 characters".into());
    }
    Ok(())
}

/// Every node with its state and the apps placed on it.
pub async fn list(state: &AppState) -> ServiceResult<Vec<NodeView>> {
    let store = state.store();
    let (nodes, placements) = (store.list_nodes().await?, store.list_placements().await?);
    let (now, ttl) = (now_millis(), state.settings().node_ttl.as_millis() as i64);
    Ok(nodes
        .iter()
        .map(|n| {
            let apps = placements
                .iter()
                .filter(|p| p.node_id == n.node_id)
                .map(|p| p.app_id.clone())
                .collect();
            n.to_view(now, ttl, apps)
        })
        .collect())
}

/// A node after a change of its scheduling, and the redeploy jobs a drain queued.
#[derive(Debug)]
pub struct Rescheduled {
    /// The node.
    pub node: NodeRecord,
    /// The jobs that move its apps elsewhere (drain only; none when already queued).
    pub redeploy_job_ids: Vec<Uuid>,
}

/// Cordons, uncordons or drains a node.
pub async fn set_scheduling(
    state: &AppState,
    node_id: &str,
    scheduling: Scheduling,
) -> ServiceResult<Rescheduled> {
    let node = state
        .store()
        .set_scheduling(node_id, scheduling, now_millis())
        .await?;
    state.beats().forget(node_id);
    let redeploy_job_ids = if scheduling == Scheduling::Draining {
        redeploy_apps_of(state, &node.node_id).await?
    } else {
        vec![]
    };
    tracing::info!(requeued = redeploy_job_ids.len(), "node scheduling changed");
    if scheduling == Scheduling::Active {
        state.wake().work_available();
    }
    Ok(Rescheduled {
        node,
        redeploy_job_ids,
    })
}

/// Queues a redeploy of each app placed on `node_id`, from its last successful deploy.
/// Idempotent: draining twice queues nothing new (the idempotency key names the source job).
async fn redeploy_apps_of(state: &AppState, node_id: &str) -> ServiceResult<Vec<Uuid>> {
    let placements = state.store().list_placements().await?;
    let mut queued = Vec::new();
    for placement in placements.iter().filter(|p| p.node_id == node_id) {
        let Some(source) = last_deploy(state, &placement.app_id).await? else {
            continue;
        };
        let key = format!("drain:{node_id}:{}", source.job_id);
        if let Some(Created::New(job)) = queue_redeploy(state, &source, key, None).await? {
            tracing::info!(app_id = %job.app_id, job_id = %job.job_id, "drain: redeploy queued");
            queued.push(job.job_id);
        }
    }
    Ok(queued)
}

/// The app's last successful `DEPLOY`, the spec a redeploy repeats.
async fn last_deploy(state: &AppState, app_id: &str) -> ServiceResult<Option<JobRecord>> {
    let filter = JobFilter {
        app_id: Some(app_id.to_string()),
        state: Some(JobState::Succeeded),
        limit: 20,
        ..JobFilter::default()
    };
    Ok(state
        .store()
        .list_jobs(&filter)
        .await?
        .into_iter()
        .find(|j| j.kind == JobKind::Deploy))
}

/// Creates the redeploy of `source` under the idempotency key `key` (labelled `reason`
/// when given) and wakes the claimers; `None` when `source` names no image to redeploy.
async fn queue_redeploy(
    state: &AppState,
    source: &JobRecord,
    key: String,
    reason: Option<&str>,
) -> ServiceResult<Option<Created>> {
    let Some(mut job) = redeploy_of(source) else {
        return Ok(None);
    };
    if let Some(reason) = reason {
        job.payload
            .labels
            .insert(REASON_LABEL.to_string(), reason.to_string());
    }
    // The key's first part (`drain`, `lost`) and the source job: a retry is the same request.
    let request_hash = format!(
        "{}:{}",
        key.split(':').next().unwrap_or_default(),
        source.job_id
    );
    let new = NewJob {
        job_id: Uuid::now_v7(),
        job,
        idempotency_key: Some(key),
        request_hash,
        max_attempts: state.settings().retry.max_attempts,
        now: now_millis(),
    };
    let created = state.store().create_job(new).await?;
    if let Created::New(job) = &created {
        state.wake().work_available();
        state.wake().job_changed(job.job_id);
    }
    Ok(Some(created))
}

/// The label a lost node's redeploy carries its reason in (SPEC §8: `reason: "node lost"`).
pub const REASON_LABEL: &str = "reason";
/// The reason of a lost node's redeploy.
pub const NODE_LOST: &str = "node lost";

/// The nodes lost now: recorded `OFFLINE` and silent for longer than `BERTH_NODE_LOST_SECS`.
/// None until the control plane has watched that long since its start or a database outage
/// (`crate::watch`): a silence it did not watch is no evidence.
async fn lost_nodes(state: &AppState, now: i64) -> ServiceResult<Vec<NodeRecord>> {
    let lost_ms = state.settings().node_lost.as_millis() as i64;
    if !state.watch().watched(now, lost_ms) {
        return Ok(vec![]);
    }
    let nodes = state.store().list_nodes().await?;
    Ok(nodes
        .into_iter()
        .filter(|n| n.recorded_state == NodeState::Offline && now - n.last_heartbeat_at > lost_ms)
        .collect())
}

/// The idempotency key of the one redeploy of `app_id` per absence of its node.
fn lost_key(node: &NodeRecord, app_id: &str) -> String {
    format!("lost:{}:{}:{app_id}", node.node_id, node.last_heartbeat_at)
}

/// What the lost-node sweep did.
#[derive(Debug, Default)]
pub struct LostSweep {
    /// The redeploys it queued (apps without volumes).
    pub queued: Vec<Uuid>,
    /// The apps with volumes it left where they are, waiting for an operator's evacuate.
    pub held: Vec<String>,
}

/// For each app on a lost node: an app without volumes gets one redeploy elsewhere (once per
/// absence of the node: the idempotency key names the node's last heartbeat); an app with
/// volumes stays, its app run says why, until [`evacuate`].
pub async fn redeploy_lost(state: &AppState) -> ServiceResult<LostSweep> {
    let now = now_millis();
    let lost = lost_nodes(state, now).await?;
    let mut done = LostSweep::default();
    if lost.is_empty() {
        return Ok(done);
    }
    let placements = state.store().list_placements().await?;
    for node in &lost {
        for placement in placements.iter().filter(|p| p.node_id == node.node_id) {
            let Some(source) = last_deploy(state, &placement.app_id).await? else {
                continue;
            };
            if !source.payload.volumes.is_empty() {
                done.held.push(placement.app_id.clone());
                continue;
            }
            let key = lost_key(node, &placement.app_id);
            if let Some(Created::New(job)) =
                queue_redeploy(state, &source, key, Some(NODE_LOST)).await?
            {
                tracing::warn!(node_id = %node.node_id, app_id = %job.app_id, job_id = %job.job_id, "node lost: redeploy queued");
                done.queued.push(job.job_id);
            }
        }
    }
    Ok(done)
}

/// Why an app stays on its lost node, for its app run; `None` when it is not held.
pub async fn held_reason(state: &AppState, app_id: &str) -> ServiceResult<Option<String>> {
    let placements = state.store().list_placements().await?;
    let Some(placement) = placements.iter().find(|p| p.app_id == app_id) else {
        return Ok(None);
    };
    let lost = lost_nodes(state, now_millis()).await?;
    if !lost.iter().any(|n| n.node_id == placement.node_id) {
        return Ok(None);
    }
    let Some(source) = last_deploy(state, app_id).await? else {
        return Ok(None);
    };
    Ok((!source.payload.volumes.is_empty()).then(|| {
        format!(
            "node {} lost; the app has volumes, so it is not moved until an operator calls POST /admin/apps/{app_id}/evacuate (its data stays on the lost host)",
            placement.node_id
        )
    }))
}

/// An operator's evacuate: redeploys the app from its lost node to another one, volumes or
/// not (the data stays behind on the lost host). Not found when the app is placed nowhere;
/// a conflict when its node is not lost or it has no successful deploy to repeat.
pub async fn evacuate(state: &AppState, app_id: &AppId) -> ServiceResult<Created> {
    let placements = state.store().list_placements().await?;
    let placement = placements
        .iter()
        .find(|p| p.app_id == app_id.as_str())
        .ok_or_else(|| ServiceError::NotFound(format!("app {app_id} is placed on no node")))?;
    let lost = lost_nodes(state, now_millis()).await?;
    let node = lost
        .iter()
        .find(|n| n.node_id == placement.node_id)
        .ok_or_else(|| {
            ServiceError::Conflict(format!(
                "node {} of app {app_id} is not lost (OFFLINE for longer than BERTH_NODE_LOST_SECS)",
                placement.node_id
            ))
        })?;
    let source = last_deploy(state, app_id.as_str()).await?;
    let no_spec =
        || ServiceError::Conflict(format!("app {app_id} has no successful deploy to move"));
    let source = source.ok_or_else(no_spec)?;
    let created = queue_redeploy(
        state,
        &source,
        lost_key(node, app_id.as_str()),
        Some(NODE_LOST),
    )
    .await?
    .ok_or_else(no_spec)?;
    tracing::warn!(node_id = %node.node_id, app_id = %app_id, "evacuate: redeploy queued; volumes stay on the lost host");
    Ok(created)
}

/// The same app, image (the built one, for a build job), env and secrets as `source`.
pub fn redeploy_of(source: &JobRecord) -> Option<JobSpec> {
    let app_id = AppId::parse(&source.app_id).ok()?;
    let mut payload = source.payload.clone();
    if let Some(built) = source.result.as_ref().and_then(|r| r.image.clone()) {
        payload.image = Some(built);
        payload.build = None;
    }
    payload.image.as_ref()?;
    Some(JobSpec {
        app_id,
        kind: JobKind::Deploy,
        payload,
        secret_env: source.secret_env.clone(),
    })
}
