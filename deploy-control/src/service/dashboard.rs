//! What the operators' dashboard reads and does beyond the plain admin API: nodes with what
//! is reserved on them, every app with its last run, an app's redeploy and stop, and the two
//! live feeds its page follows (the fleet's changes, one job's state and log lines).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_shared::ids::AppId;
use berth_shared::wire::{AppRun, CreateJobRequest, Job, JobKind, JobState, NodeView};
use chrono::{DateTime, Utc};
use futures::Stream;
use schemars::JsonSchema;
use serde::Serialize;
use tokio::sync::watch;
use uuid::Uuid;

use super::nodes::redeploy_of;
use super::{ServiceError, ServiceResult};
use crate::queue::{now_millis, to_datetime, JobRecord};
use crate::state::AppState;
use crate::storage::{Created, JobFilter, JobSpec, NewJob, StoreError};

/// Jobs read to find the apps that have no placement (stopped, failed, never placed), and to
/// find an app's last deploy for a redeploy.
const APP_SCAN: u32 = 500;

/// How often a feed looks again without a wake-up: nodes go `OFFLINE` by the clock, other
/// replicas change rows without telling this one, and log lines ring no wake-up.
const RECHECK: Duration = Duration::from_millis(500);

/// The nodes as the dashboard shows them, with the clock and TTL their heartbeat ages are
/// judged by (the page ticks the ages on from `now` between snapshots).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodesSnapshot {
    /// The control plane's clock when the snapshot was taken, ms since the epoch.
    pub now: i64,
    /// A node whose last heartbeat is older than this is `OFFLINE`, ms.
    pub ttl_ms: i64,
    /// Every node, by id.
    pub items: Vec<DashboardNode>,
}

/// One node with what its placements reserve.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardNode {
    /// The node as `GET /admin/runtime-nodes/list` shows it.
    #[serde(flatten)]
    pub node: NodeView,
    /// Memory reserved by the apps placed on it, MiB.
    pub reserved_memory_mb: i64,
    /// CPU reserved by the apps placed on it, cores.
    pub reserved_cpus: f64,
}

/// One app: its last-known run and the job that made it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardApp {
    /// The app's last-known run.
    #[serde(flatten)]
    pub run: AppRun,
    /// The job that made that run.
    pub last_job: Option<Job>,
}

/// Reads every node and what is placed on it.
pub async fn nodes_snapshot(state: &AppState) -> ServiceResult<NodesSnapshot> {
    let store = state.store();
    let (nodes, placements) = (store.list_nodes().await?, store.list_placements().await?);
    let (now, ttl_ms) = (now_millis(), state.settings().node_ttl.as_millis() as i64);
    let mut apps_by_node: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for p in &placements {
        apps_by_node
            .entry(p.node_id.as_str())
            .or_default()
            .push(p.app_id.clone());
    }
    let items = nodes
        .iter()
        .map(|n| DashboardNode {
            node: n.to_view(
                now,
                ttl_ms,
                apps_by_node.remove(n.node_id.as_str()).unwrap_or_default(),
            ),
            reserved_memory_mb: n.reserved_memory_mb,
            reserved_cpus: n.reserved_cpu_millis as f64 / 1000.0,
        })
        .collect();
    Ok(NodesSnapshot { now, ttl_ms, items })
}

/// Every placed app and every app of the newest [`APP_SCAN`] jobs, with its last run. The
/// store keeps no list of apps, so an app whose jobs are all older and that holds no
/// placement (stopped long ago) is not shown.
pub async fn apps(state: &AppState) -> ServiceResult<Vec<DashboardApp>> {
    let store = state.store();
    let filter = JobFilter {
        limit: APP_SCAN,
        ..JobFilter::default()
    };
    let jobs = store.list_jobs(&filter).await?;
    let mut newest: BTreeMap<&str, &JobRecord> = BTreeMap::new();
    for job in &jobs {
        newest.entry(job.app_id.as_str()).or_insert(job);
    }
    let placements = store.list_placements().await?;
    let ids: BTreeSet<&str> = newest
        .keys()
        .copied()
        .chain(placements.iter().map(|p| p.app_id.as_str()))
        .collect();
    let mut items = Vec::with_capacity(ids.len());
    for app_id in ids {
        let Some(run) = store.app_run(app_id).await? else {
            continue; // Only jobs that never ran: no run to show yet.
        };
        let last_job = match newest.get(app_id) {
            Some(job) if job.job_id == run.last_job_id => job.to_view(),
            _ => store.get_job(run.last_job_id).await?.to_view(),
        };
        let view = run.to_view().ok_or_else(|| {
            StoreError::Corrupt(format!("app_run {app_id}: unknown state {:?}", run.state))
        })?;
        items.push(DashboardApp {
            run: view,
            last_job: Some(last_job),
        });
    }
    Ok(items)
}

/// Queues the app's last `DEPLOY` again (the image it built, for a build), as a new job.
pub async fn redeploy(state: &AppState, app_id: &AppId) -> ServiceResult<JobRecord> {
    let filter = JobFilter {
        app_id: Some(app_id.to_string()),
        limit: APP_SCAN,
        ..JobFilter::default()
    };
    let jobs = state.store().list_jobs(&filter).await?;
    let source = jobs
        .iter()
        .filter(|j| j.kind == JobKind::Deploy)
        .find_map(redeploy_of)
        .ok_or_else(|| {
            ServiceError::Conflict(format!(
                "app {app_id} has no deploy with an image to run again"
            ))
        })?;
    queue(state, source).await
}

/// Queues a `STOP` of an app that was deployed at least once.
pub async fn stop(state: &AppState, app_id: &AppId) -> ServiceResult<JobRecord> {
    let request = CreateJobRequest {
        app_id: app_id.to_string(),
        kind: JobKind::Stop,
        ..CreateJobRequest::default()
    };
    let job = request.validate().map_err(ServiceError::Invalid)?;
    if state.store().app_run(app_id.as_str()).await?.is_none() {
        return Err(ServiceError::NotFound(format!(
            "app {app_id} has never been deployed"
        )));
    }
    queue(
        state,
        JobSpec::seal(job, &state.settings().secrets.secret_key),
    )
    .await
}

/// Creates `job` as a new job (no idempotency key: each click is a new request).
async fn queue(state: &AppState, job: JobSpec) -> ServiceResult<JobRecord> {
    let hash = format!("admin:{}:{:?}", job.app_id, job.kind);
    let new = NewJob {
        job_id: Uuid::now_v7(),
        job,
        idempotency_key: None,
        request_hash: hash,
        max_attempts: state.settings().retry.max_attempts,
        now: now_millis(),
    };
    let job = match state.store().create_job(new).await? {
        Created::New(job) | Created::Existing(job) => job,
    };
    tracing::info!(app_id = %job.app_id, job_id = %job.job_id, kind = ?job.kind, "job queued by an operator");
    state.wake().work_available();
    state.wake().job_changed(job.job_id);
    Ok(job)
}

/// What the fleet feed sends.
#[derive(Debug, Clone)]
pub enum FleetChange {
    /// The nodes changed (sent first, then at each change).
    Nodes(NodesSnapshot),
    /// Some job changed: the count of job changes this replica has seen.
    Jobs(u64),
}

/// The fleet's changes: the nodes at the start and whenever a node changes, and a counter
/// whenever a job changed, so a page re-reads its lists. Ends when storage fails.
pub async fn fleet_changes(state: AppState) -> ServiceResult<impl Stream<Item = FleetChange>> {
    struct Watch {
        state: AppState,
        jobs: watch::Receiver<u64>,
        last_nodes: Option<NodesSnapshot>,
        jobs_seen: u64,
    }
    // Subscribed before the first snapshot, so no change after it is missed.
    let jobs = state.wake().job_changes();
    let first = nodes_snapshot(&state).await?;
    let jobs_seen = *jobs.borrow();
    let start = Watch {
        jobs_seen,
        jobs,
        state,
        last_nodes: None,
    };
    Ok(futures::stream::unfold(
        (start, Some(first)),
        |(mut w, mut next)| async move {
            loop {
                if let Some(snapshot) = next.take() {
                    // `now` moves on every read; only a change of the nodes themselves is news.
                    let changed = w
                        .last_nodes
                        .as_ref()
                        .is_none_or(|l| l.items != snapshot.items);
                    if changed {
                        w.last_nodes = Some(snapshot.clone());
                        return Some((FleetChange::Nodes(snapshot), (w, None)));
                    }
                }
                let jobs_now = *w.jobs.borrow();
                if jobs_now != w.jobs_seen {
                    w.jobs_seen = jobs_now;
                    return Some((FleetChange::Jobs(jobs_now), (w, None)));
                }
                {
                    let work = w.state.wake().work();
                    tokio::select! {
                        _ = w.jobs.changed() => {}
                        _ = work => {}
                        _ = tokio::time::sleep(RECHECK) => {}
                    }
                }
                match nodes_snapshot(&w.state).await {
                    Ok(snapshot) => next = Some(snapshot),
                    Err(e) => {
                        tracing::warn!(error = %e, "dashboard fleet feed ends");
                        return None;
                    }
                }
            }
        },
    ))
}

/// A log line as the job feed sends it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FeedLine {
    /// When the runner sent it.
    pub at: DateTime<Utc>,
    /// The line.
    pub line: String,
}

/// What the job feed sends.
#[derive(Debug, Clone)]
pub enum JobChange {
    /// The job, at the start and at each new version.
    Job(Box<Job>),
    /// Log lines that arrived since the last ones sent.
    Logs(Vec<FeedLine>),
    /// The job is final and every line was sent: the feed ends after this.
    End(JobState),
}

/// One job's changes and log lines until it is final and its last lines are sent. A job that
/// does not exist is an error before the feed starts.
pub async fn job_changes(
    state: AppState,
    job_id: Uuid,
) -> ServiceResult<impl Stream<Item = JobChange>> {
    struct Follow {
        state: AppState,
        job_id: Uuid,
        changes: watch::Receiver<u64>,
        version: Option<i64>,
        lines_sent: usize,
        /// Look again at once, without waiting for a change (after sending something).
        fresh: bool,
        done: bool,
    }
    let changes = state.wake().job_changes();
    state.store().get_job(job_id).await?;
    let start = Follow {
        state,
        job_id,
        changes,
        version: None,
        lines_sent: 0,
        fresh: true,
        done: false,
    };
    Ok(futures::stream::unfold(start, |mut f| async move {
        loop {
            if f.done {
                return None;
            }
            if !f.fresh {
                tokio::select! {
                    _ = f.changes.changed() => {}
                    _ = tokio::time::sleep(RECHECK) => {}
                }
            }
            // Read the job before its logs: lines written before it turned final are all in
            // the read that follows, so the feed may end once it sent them.
            let read = async {
                let job = f.state.store().get_job(f.job_id).await?;
                let logs = f.state.store().job_logs(f.job_id).await?;
                Ok::<_, StoreError>((job, logs))
            };
            let (job, logs) = match read.await {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!(job_id = %f.job_id, error = ?anyhow::Error::from(e), "job feed ends");
                    return None;
                }
            };
            f.fresh = true;
            if f.version != Some(job.version) {
                f.version = Some(job.version);
                return Some((JobChange::Job(Box::new(job.to_view())), f));
            }
            if logs.len() > f.lines_sent {
                let new = logs[f.lines_sent..]
                    .iter()
                    .map(|l| FeedLine {
                        at: to_datetime(l.at),
                        line: l.line.clone(),
                    })
                    .collect();
                f.lines_sent = logs.len();
                return Some((JobChange::Logs(new), f));
            }
            if job.state.is_final() {
                f.done = true;
                return Some((JobChange::End(job.state), f));
            }
            f.fresh = false;
        }
    }))
}
