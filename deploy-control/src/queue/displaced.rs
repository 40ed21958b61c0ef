//! One version per app (SPEC §8): which containers a node reports that it must remove, because
//! the control plane has settled their app elsewhere.
//!
//! A node's heartbeat lists its apps, each with its container and the job that made it. For an
//! app placed on another node (or nowhere), the node's container goes when all of these hold:
//! - no job of the app is `RUNNING` (a move under way keeps the old copy serving until it ends);
//! - the app's last successful job is a stop, or a deploy that ran on another node: the node
//!   does not hold the last version that succeeded (a move whose deploy failed leaves it there);
//! - that job is the container's own job (its retry succeeded elsewhere after a report was lost)
//!   or newer than it: a container newer than every success (a deploy whose report was lost,
//!   then failed elsewhere) may be the only copy that serves, and stays. So does the container
//!   of a job waiting for its retry: jobs of an app run in order, so no success is newer.
//!
//! An app placed on the node itself is the node's own to replace; an app the control plane
//! never ran a successful job of is left alone. The rule is written for operators in
//! `docs/control-plane.md` ("One version per app").

use berth_shared::wire::{DisplacedApp, JobKind, NodeApp};

use super::JobRecord;

/// What the control plane knows of an app that node reports but that is not placed there.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settlement<'a> {
    /// The app's newest `SUCCEEDED` job, deploy or stop.
    pub last_success: Option<&'a JobRecord>,
    /// Whether a job of the app is `RUNNING`.
    pub running: bool,
    /// The job the container carries, when the node named it and it is known here.
    pub container_job: Option<&'a JobRecord>,
}

/// Whether node `node_id` removes its container `app` of an app placed elsewhere or nowhere
/// (the caller checks that), given what is known of the app: the container to remove, and why.
pub fn displaced(node_id: &str, app: &NodeApp, known: Settlement<'_>) -> Option<DisplacedApp> {
    if known.running {
        return None;
    }
    let settled = known.last_success?;
    if settled.kind == JobKind::Deploy && settled.node_id.as_deref() == Some(node_id) {
        return None;
    }
    if known.container_job.is_some_and(|own| own.seq > settled.seq) {
        return None;
    }
    let version = match &app.job_id {
        Some(job) if *job == settled.job_id.to_string() => format!("job {job}'s earlier attempt"),
        Some(job) => format!("job {job}, an older version"),
        None => "an older version".to_owned(),
    };
    let reason = match (settled.kind, settled.node_id.as_deref()) {
        (JobKind::Stop, _) => format!(
            "app {} was stopped by job {}; this node's container runs {version}",
            app.app_id, settled.job_id
        ),
        (JobKind::Deploy, Some(there)) => format!(
            "app {} runs on node {there}, where job {} succeeded; this node's container runs {version}",
            app.app_id, settled.job_id
        ),
        (JobKind::Deploy, None) => format!(
            "app {} was deployed elsewhere by job {}; this node's container runs {version}",
            app.app_id, settled.job_id
        ),
    };
    Some(DisplacedApp {
        app_id: app.app_id.clone(),
        container_id: app.container_id.clone(),
        job_id: settled.job_id.to_string(),
        node_id: settled.node_id.clone(),
        reason,
    })
}
