//! Following deployments: one loop per deployment in flight asks the control plane
//! `GET /deploy/jobs/{id}?wait=&version=` and publishes each change on a `watch` channel that
//! every local watcher (long poll, SSE) shares. However many portal users watch one
//! deployment, the control plane sees one connection for it; the loop ends when the job is
//! final, and the map entry goes with it. Each change is published as a [`Followed`]: the
//! record with its answer (JSON and `ETag`) made once, so 10,000 watchers of one change send
//! the same bytes instead of building 10,000 views.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderValue;
use tokio::sync::watch;
use tracing::Instrument;

use crate::control::{Control, UpstreamError};
use crate::domain::deployment::DeploymentKind;
use crate::metrics::Metrics;
use crate::storage::{DeploymentRecord, Store};

/// A deployment as its watchers receive it: the record, and what a portal is answered about
/// it, made once for all of them.
#[derive(Debug)]
pub struct Followed {
    /// The deployment.
    pub record: DeploymentRecord,
    /// Its view ([`DeploymentRecord::view`]) as JSON.
    pub json: Bytes,
    /// Its weak `ETag`, `W/"{version}"`.
    pub etag: HeaderValue,
}

impl Followed {
    /// `record` with its answer made.
    pub fn new(record: DeploymentRecord) -> Arc<Self> {
        // A struct of strings and numbers always serializes.
        let json = serde_json::to_vec(&record.view())
            .unwrap_or_default()
            .into();
        let etag = HeaderValue::from_str(&format!("W/\"{}\"", record.version))
            .unwrap_or_else(|_| HeaderValue::from_static("W/\"0\""));
        Arc::new(Self { record, json, etag })
    }
}

/// What a watcher of one deployment holds.
pub type Following = watch::Receiver<Arc<Followed>>;

/// The followers of the deployments in flight.
#[derive(Clone)]
pub struct Followers {
    live: Arc<Mutex<HashMap<String, Following>>>,
    store: Store,
    control: Control,
    metrics: Arc<Metrics>,
}

/// Pause after a failed upstream call, so an unreachable control plane is not hammered.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

impl Followers {
    /// Followers that read jobs through `control` and write what they see to `store`.
    pub fn new(store: Store, control: Control, metrics: Arc<Metrics>) -> Self {
        Self {
            live: Arc::default(),
            store,
            control,
            metrics,
        }
    }

    /// A receiver of `deployment`'s changes, starting with the newest known state. A final
    /// deployment never changes: its receiver holds it and nothing follows.
    pub fn watch(&self, deployment: DeploymentRecord) -> Following {
        if deployment.state.is_final() || deployment.job_id.is_none() {
            return watch::channel(Followed::new(deployment)).1;
        }
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = live.get(&deployment.deployment_id) {
            return rx.clone();
        }
        let id = deployment.deployment_id.clone();
        let (tx, rx) = watch::channel(Followed::new(deployment));
        live.insert(id.clone(), rx.clone());
        let span = tracing::info_span!("follow", deployment_id = %id);
        tokio::spawn(self.clone().follow(tx).instrument(span));
        rx
    }

    /// How many deployments are followed upstream right now.
    pub fn following(&self) -> usize {
        self.live.lock().map(|l| l.len()).unwrap_or(0)
    }

    async fn follow(self, tx: watch::Sender<Arc<Followed>>) {
        self.metrics.upstream_follows.inc();
        let id = tx.borrow().record.deployment_id.clone();
        loop {
            let current = tx.borrow().record.clone();
            let Some(job_id) = current.job_id.clone() else {
                break;
            };
            match self.control.job(&job_id, Some(current.version)).await {
                Ok(job) => {
                    let next = current.observed(&job);
                    let last = next.state.is_final();
                    if next != current {
                        // The end's effects go first: whoever reads the final row (from
                        // the table or this channel) finds them done.
                        let stored = match self.finished(&next).await {
                            Ok(()) => self.store.update_deployment(&next).await,
                            Err(e) => Err(e),
                        };
                        if let Err(e) = stored {
                            tracing::warn!(error = ?anyhow::Error::from(e), "could not store a deployment's change; retrying");
                            tokio::time::sleep(RETRY_PAUSE).await;
                            continue;
                        }
                        tx.send_replace(Followed::new(next));
                    }
                    if last {
                        break;
                    }
                }
                Err(UpstreamError::Refused { status: 404, .. }) => {
                    tracing::error!(
                        job_id,
                        "the control plane no longer knows this deployment's job"
                    );
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "following a job failed; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        self.metrics.upstream_follows.dec();
    }

    /// What a deployment's end does beyond its own row: a delete that succeeded frees the id.
    async fn finished(&self, d: &DeploymentRecord) -> crate::storage::StoreResult<()> {
        if d.kind == DeploymentKind::Delete && d.state == berth_shared::wire::JobState::Succeeded {
            self.store.remove_app(&d.tenant_id, &d.app_id).await?;
            tracing::info!(app_id = %d.app_id, "app deleted; its id is free");
        }
        if d.state.is_final() {
            self.metrics
                .deployments_finished
                .get_or_create(&vec![("state", d.state.as_str())])
                .inc();
        }
        Ok(())
    }
}
