//! Deployments: the quotas in front of one, the job behind it, and reading or waiting for it.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Caller;
use crate::domain::deployment::{new_deployment, Deployment, DeploymentKind};
use crate::domain::quota::{seconds_until, windows, IN_FLIGHT_RETRY_SECS};
use crate::domain::spec::{deploy_job, stop_job, AppSpec};
use crate::error::{ApiError, ApiResult};
use crate::follow::{Followed, Following};
use crate::service::{now_millis, Api};
use crate::storage::{Created, DeploymentRecord};

/// Longest `?wait=` a portal may ask for, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;

/// A deployment to make: the app, what it does, the spec it deploys.
pub struct Ask<'a> {
    /// The app.
    pub app_id: &'a str,
    /// Deploy, stop or delete.
    pub kind: DeploymentKind,
    /// The spec (for a stop, the app's current one, kept for the record).
    pub spec: &'a AppSpec,
    /// The caller's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("no deployment {id}"))
}

impl Api {
    /// Refuses a new deployment past `maxConcurrentDeploys`, `deploysPerDay` or
    /// `deploysPerMonth` (429, `Retry-After`). Call it under the tenant's lock.
    pub async fn check_deploy_quotas(&self, caller: &Caller, now: i64) -> ApiResult<()> {
        let t = &caller.tenant;
        let q = t.quotas;
        if self.store.in_flight(&t.tenant_id).await? >= i64::from(q.max_concurrent_deploys) {
            self.metrics.refused("maxConcurrentDeploys");
            return Err(ApiError::TooManyRequests {
                detail: format!(
                    "quota maxConcurrentDeploys ({}) reached: wait for a deployment to finish",
                    q.max_concurrent_deploys
                ),
                retry_after: IN_FLIGHT_RETRY_SECS,
            });
        }
        let w = windows(now);
        for (name, limit, start, end) in [
            ("deploysPerDay", q.deploys_per_day, w.day_start, w.day_end),
            (
                "deploysPerMonth",
                q.deploys_per_month,
                w.month_start,
                w.month_end,
            ),
        ] {
            if self.store.deployments_since(&t.tenant_id, start).await? >= i64::from(limit) {
                self.metrics.refused(name);
                return Err(ApiError::TooManyRequests {
                    detail: format!("quota {name} ({limit}) reached"),
                    retry_after: seconds_until(now, end),
                });
            }
        }
        Ok(())
    }

    /// Records a deployment and asks the control plane for its job. With an
    /// `Idempotency-Key` the app already used, the first deployment instead.
    pub async fn deploy(&self, caller: &Caller, ask: Ask<'_>) -> ApiResult<Created<Deployment>> {
        let tenant_id = caller.tenant.tenant_id.as_str();
        let _turn = self.tenant_lock(tenant_id).await;
        if let Some(key) = &ask.idempotency_key {
            // A retry is answered before the quotas: it asks for nothing new.
            if let Some(first) = self
                .store
                .deployment_by_key(tenant_id, ask.app_id, key)
                .await?
            {
                return Ok(Created::Existing(first.view()));
            }
        }
        let now = now_millis();
        self.check_deploy_quotas(caller, now).await?;
        let record = new_deployment(
            tenant_id,
            ask.app_id,
            ask.kind,
            ask.spec,
            ask.idempotency_key,
            now,
        );
        match self.store.create_deployment(&record).await? {
            Created::Existing(first) => Ok(Created::Existing(first.view())),
            Created::New(record) => Ok(Created::New(self.submit(record).await?.view())),
        }
    }

    /// Asks the control plane for the job of a recorded deployment (again, after a restart:
    /// the deployment's id is the job's `Idempotency-Key`) and starts following it. A refusal
    /// marks the deployment failed with the reason.
    pub async fn submit(&self, record: DeploymentRecord) -> ApiResult<DeploymentRecord> {
        let job = match record.kind {
            DeploymentKind::Deploy => {
                let secrets = self
                    .store
                    .app(&record.tenant_id, &record.app_id)
                    .await?
                    .map(|a| a.secret_env)
                    .unwrap_or_default();
                deploy_job(&record.app_id, &record.tenant_id, &record.spec, &secrets)
            }
            DeploymentKind::Stop => stop_job(&record.app_id, &record.tenant_id, false),
            DeploymentKind::Delete => stop_job(&record.app_id, &record.tenant_id, true),
        };
        match self.control.create_job(&job, &record.deployment_id).await {
            Ok(job) => {
                let record = record.observed(&job);
                self.store.update_deployment(&record).await?;
                self.metrics
                    .deployments
                    .get_or_create(&vec![("kind", record.kind.as_str())])
                    .inc();
                tracing::info!(deployment_id = %record.deployment_id, app_id = %record.app_id, job_id = %job.job_id, "deployment queued");
                self.followers.watch(record.clone());
                Ok(record)
            }
            Err(e) => {
                let failed = DeploymentRecord {
                    state: berth_shared::wire::JobState::Failed,
                    error: Some(e.to_string()),
                    version: record.version + 1,
                    finished_at: Some(now_millis()),
                    ..record
                };
                self.store.update_deployment(&failed).await?;
                Err(e.into())
            }
        }
    }

    /// Follows again every deployment that was in flight when the api last stopped.
    pub async fn resume(&self) -> ApiResult<usize> {
        let unfinished = self.store.unfinished_deployments().await?;
        let n = unfinished.len();
        for d in unfinished {
            if d.job_id.is_some() {
                self.followers.watch(d);
            } else if let Err(e) = self.submit(d).await {
                tracing::warn!(error = %e, "a deployment queued before a restart could not be sent");
            }
        }
        Ok(n)
    }

    async fn deployment_record(&self, caller: &Caller, id: &str) -> ApiResult<DeploymentRecord> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(ApiError::BadRequest(format!(
                "deploymentId {:?} is not a UUID",
                berth_shared::ids::truncate(id)
            )));
        }
        self.store
            .deployment(&caller.tenant.tenant_id, id)
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// `GET /v1/deployments/{id}`; with `wait`, as soon as its version differs from
    /// `version`, or after `wait` seconds.
    pub async fn deployment(
        &self,
        caller: &Caller,
        id: &str,
        wait: Option<(u64, i64)>,
    ) -> ApiResult<Arc<Followed>> {
        let record = self.deployment_record(caller, id).await?;
        let mut rx = self.followers.watch(record);
        let Some((secs, version)) = wait.filter(|(secs, _)| *secs > 0) else {
            return Ok(rx.borrow().clone());
        };
        if secs > MAX_WAIT_SECS {
            return Err(ApiError::BadRequest(format!(
                "wait must be at most {MAX_WAIT_SECS} seconds"
            )));
        }
        let _counted = crate::metrics::Watching::new(&self.metrics);
        let changed = tokio::time::timeout(
            Duration::from_secs(secs),
            rx.wait_for(|d| d.record.version != version || d.record.state.is_final()),
        )
        .await
        .ok()
        .and_then(|r| r.ok().map(|d| d.clone()));
        // A timeout, or a follower that ended, leaves the newest state standing.
        Ok(changed.unwrap_or_else(|| rx.borrow().clone()))
    }

    /// The receiver of a deployment's changes, for its event stream.
    pub async fn deployment_changes(&self, caller: &Caller, id: &str) -> ApiResult<Following> {
        let record = self.deployment_record(caller, id).await?;
        Ok(self.followers.watch(record))
    }

    /// `GET /v1/deployments/{id}/logs`: the runner's lines (empty before its job exists).
    pub async fn deployment_logs(&self, caller: &Caller, id: &str) -> ApiResult<String> {
        let record = self.deployment_record(caller, id).await?;
        match record.job_id {
            Some(job_id) => Ok(self.control.logs(&job_id).await?),
            None => Ok(String::new()),
        }
    }
}
