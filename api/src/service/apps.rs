//! Apps as desired state: write the spec, read it with its status, and the changes that deploy
//! it — a deployment, a rollback, a config patch, a stop, a delete.

use std::sync::Arc;

use axum::body::Bytes;
use berth_shared::ids::AppId;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::domain::deployment::{rfc3339, Deployment, DeploymentKind};
use crate::domain::spec::{self, merge, pinned, ConfigPatch, SpecRequest};
use crate::error::{ApiError, ApiResult};
use crate::service::deployments::Ask;
use crate::service::views::{AppView, Page};
use crate::service::{may_sleep, now_millis, Api, PageQuery};
use crate::storage::{AppRead, AppRecord, Created, PutApp};

/// `POST /v1/apps/{appId}/deployments`: `{}`, or `{image}` to change the spec's image first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeployRequest {
    /// A new image for the spec (it replaces a build).
    #[serde(default)]
    pub image: Option<String>,
}

/// `POST /v1/apps/{appId}/rollback`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackRequest {
    /// The earlier deployment whose image and spec to deploy again.
    pub deployment_id: String,
}

/// Checks an app id from a path.
pub fn app_id(value: &str) -> ApiResult<String> {
    AppId::parse(value)
        .map(String::from)
        .map_err(|e| ApiError::BadRequest(e.0))
}

fn not_found(app_id: &str) -> ApiError {
    ApiError::NotFound(format!("no app {app_id}"))
}

impl Api {
    /// The caller's app, or 404 (another tenant's app is exactly as missing).
    pub async fn own_app(&self, caller: &Caller, app_id: &str) -> ApiResult<AppRecord> {
        self.store
            .app(&caller.tenant.tenant_id, app_id)
            .await?
            .ok_or_else(|| not_found(app_id))
    }

    /// The caller's app unless it is being deleted (409).
    async fn live_app(&self, caller: &Caller, app_id: &str) -> ApiResult<AppRecord> {
        let app = self.own_app(caller, app_id).await?;
        if app.deleting {
            return Err(ApiError::Conflict(format!("app {app_id} is being deleted")));
        }
        Ok(app)
    }

    /// Writes an app's desired spec: `true` when the app is new.
    pub async fn put_app(
        &self,
        caller: &Caller,
        app_id: &str,
        req: SpecRequest,
    ) -> ApiResult<(bool, AppView)> {
        let tenant_id = &caller.tenant.tenant_id;
        let (spec, secrets) = req.split();
        spec::validate(app_id, tenant_id, &spec, &secrets).map_err(ApiError::BadRequest)?;
        let _turn = self.tenant_lock(tenant_id).await;
        let now = now_millis();
        let record = AppRecord {
            app_id: app_id.to_owned(),
            tenant_id: tenant_id.clone(),
            spec,
            secret_env: secrets,
            deleting: false,
            created_at: now,
            updated_at: now,
        };
        let created = match self
            .store
            .put_app(&record, caller.tenant.quotas.max_apps)
            .await?
        {
            PutApp::Created => true,
            PutApp::Updated => false,
            other => {
                return Err(refusal(
                    other,
                    app_id,
                    caller.tenant.quotas.max_apps,
                    &self.metrics,
                ))
            }
        };
        Ok((created, self.app(caller, app_id).await?))
    }

    async fn app_view(&self, app: &AppRead) -> AppView {
        AppView {
            secret_env_names: app.secret_env_names.clone(),
            status: self.status_of(app.latest.as_ref()).await,
            app_id: app.app_id.clone(),
            spec: app.spec.clone(),
            created_at: rfc3339(app.created_at),
            updated_at: rfc3339(app.updated_at),
        }
    }

    /// `GET /v1/apps/{appId}`: from the store's read cache when it is fresh (another tenant's
    /// app is as missing as one that does not exist).
    pub async fn app(&self, caller: &Caller, app_id: &str) -> ApiResult<AppView> {
        let app = self.app_entry(caller, app_id).await?;
        Ok(self.app_view(&app).await)
    }

    /// [`Api::app`] as JSON. The JSON of a cached entry is made once, unless the view asks the
    /// control plane whether the app sleeps: that answer is not in the entry, so it is asked
    /// (and the JSON made) on every read, as [`Api::app`] does.
    pub async fn app_json(&self, caller: &Caller, app_id: &str) -> ApiResult<Bytes> {
        let app = self.app_entry(caller, app_id).await?;
        if let Some(json) = app.view_json.get() {
            return Ok(json.clone());
        }
        // A struct of strings, numbers and maps with string keys always serializes.
        let json = Bytes::from(serde_json::to_vec(&self.app_view(&app).await).unwrap_or_default());
        if !may_sleep(app.latest.as_ref()) {
            let _ = app.view_json.set(json.clone());
        }
        Ok(json)
    }

    async fn app_entry(&self, caller: &Caller, app_id: &str) -> ApiResult<Arc<AppRead>> {
        self.store
            .app_read(&caller.tenant.tenant_id, app_id)
            .await?
            .ok_or_else(|| not_found(app_id))
    }

    /// `GET /v1/apps`: by app id.
    pub async fn apps(&self, caller: &Caller, page: PageQuery) -> ApiResult<Page<AppView>> {
        let limit = page.limit()?;
        let after = match &page.cursor {
            Some(c) => app_id(c)?,
            None => String::new(),
        };
        let mut items = Vec::new();
        for app in self
            .store
            .apps(&caller.tenant.tenant_id, &after, limit)
            .await?
        {
            let latest = self
                .store
                .latest_deployment(&caller.tenant.tenant_id, &app.app_id)
                .await?;
            items.push(self.app_view(&AppRead::of(app, latest)).await);
        }
        Ok(Page::of(items, limit, |a| a.app_id.clone()))
    }

    /// `POST /v1/apps/{appId}/deployments`.
    pub async fn deploy_app(
        &self,
        caller: &Caller,
        app_id: &str,
        req: DeployRequest,
        idempotency_key: Option<String>,
    ) -> ApiResult<Created<Deployment>> {
        let mut app = self.live_app(caller, app_id).await?;
        if let Some(image) = req.image {
            app.spec = pinned(&app.spec, &image);
            self.save_spec(caller, &mut app).await?;
        }
        self.deploy(
            caller,
            Ask {
                app_id,
                kind: DeploymentKind::Deploy,
                spec: &app.spec,
                idempotency_key,
            },
        )
        .await
    }

    /// Validates and stores a changed spec of an app the caller holds.
    async fn save_spec(&self, caller: &Caller, app: &mut AppRecord) -> ApiResult<()> {
        spec::validate(
            &app.app_id,
            &caller.tenant.tenant_id,
            &app.spec,
            &app.secret_env,
        )
        .map_err(ApiError::BadRequest)?;
        app.updated_at = now_millis();
        match self
            .store
            .put_app(app, caller.tenant.quotas.max_apps)
            .await?
        {
            PutApp::Updated => Ok(()),
            other => Err(refusal(
                other,
                &app.app_id,
                caller.tenant.quotas.max_apps,
                &self.metrics,
            )),
        }
    }

    /// `GET /v1/apps/{appId}/deployments`: newest first.
    pub async fn app_deployments(
        &self,
        caller: &Caller,
        app_id: &str,
        page: PageQuery,
    ) -> ApiResult<Page<Deployment>> {
        self.own_app(caller, app_id).await?;
        let limit = page.limit()?;
        if let Some(c) = &page.cursor {
            uuid::Uuid::parse_str(c)
                .map_err(|_| ApiError::BadRequest("cursor is not a deployment id".into()))?;
        }
        let records = self
            .store
            .deployments(
                &caller.tenant.tenant_id,
                app_id,
                page.cursor.as_deref(),
                limit,
            )
            .await?;
        let items = records.iter().map(|d| d.view()).collect();
        Ok(Page::of(items, limit, |d: &Deployment| {
            d.deployment_id.clone()
        }))
    }

    /// `POST /v1/apps/{appId}/rollback`: the earlier deployment's image and spec, with the
    /// app's current secret values; the app's spec becomes that one.
    pub async fn rollback(
        &self,
        caller: &Caller,
        app_id: &str,
        req: RollbackRequest,
    ) -> ApiResult<Deployment> {
        let mut app = self.live_app(caller, app_id).await?;
        let earlier = match uuid::Uuid::parse_str(&req.deployment_id) {
            Ok(_) => {
                self.store
                    .deployment(&caller.tenant.tenant_id, &req.deployment_id)
                    .await?
            }
            Err(_) => return Err(ApiError::BadRequest("deploymentId is not a UUID".into())),
        }
        .filter(|d| d.app_id == app_id)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "app {app_id} has no deployment {}",
                req.deployment_id
            ))
        })?;
        let image = match (&earlier.kind, &earlier.image) {
            (DeploymentKind::Deploy, Some(image)) => image.clone(),
            _ => {
                return Err(ApiError::Conflict(format!(
                    "deployment {} deployed no image to roll back to (a stop, or a build that never pushed one)",
                    earlier.deployment_id
                )))
            }
        };
        app.spec = pinned(&earlier.spec, &image);
        self.save_spec(caller, &mut app).await?;
        self.deploy_now(caller, &app, DeploymentKind::Deploy).await
    }

    /// `PATCH /v1/apps/{appId}/config`: merges (`null` removes) and deploys.
    pub async fn patch_config(
        &self,
        caller: &Caller,
        app_id: &str,
        patch: ConfigPatch,
    ) -> ApiResult<Deployment> {
        let mut app = self.live_app(caller, app_id).await?;
        merge(&mut app.spec.env, patch.env);
        merge(&mut app.secret_env, patch.secret_env);
        self.save_spec(caller, &mut app).await?;
        self.deploy_now(caller, &app, DeploymentKind::Deploy).await
    }

    /// A deployment of `kind` of the app's current spec, without an `Idempotency-Key`.
    async fn deploy_now(
        &self,
        caller: &Caller,
        app: &AppRecord,
        kind: DeploymentKind,
    ) -> ApiResult<Deployment> {
        let ask = Ask {
            app_id: &app.app_id,
            kind,
            spec: &app.spec,
            idempotency_key: None,
        };
        match self.deploy(caller, ask).await? {
            Created::New(d) | Created::Existing(d) => Ok(d),
        }
    }

    /// `POST /v1/apps/{appId}/stop`: spec and volumes kept.
    pub async fn stop_app(&self, caller: &Caller, app_id: &str) -> ApiResult<Deployment> {
        let app = self.live_app(caller, app_id).await?;
        self.deploy_now(caller, &app, DeploymentKind::Stop).await
    }

    /// `DELETE /v1/apps/{appId}`: stops the app; its id is free once that deployment
    /// succeeds. A delete that failed may be asked again.
    pub async fn delete_app(&self, caller: &Caller, app_id: &str) -> ApiResult<Deployment> {
        let app = self.own_app(caller, app_id).await?;
        if app.deleting {
            let latest = self
                .store
                .latest_deployment(&caller.tenant.tenant_id, app_id)
                .await?;
            if let Some(d) =
                latest.filter(|d| d.kind == DeploymentKind::Delete && !d.state.is_final())
            {
                return Ok(d.view());
            }
        }
        let made = self
            .deploy_now(caller, &app, DeploymentKind::Delete)
            .await?;
        // Marked once the delete is queued, so a refused one (a quota) leaves the app as it was.
        self.store
            .mark_deleting(&caller.tenant.tenant_id, app_id, now_millis())
            .await?;
        Ok(made)
    }
}

/// The answer to a refused write of an app id.
pub fn refusal(
    outcome: PutApp,
    app_id: &str,
    max_apps: u32,
    metrics: &crate::metrics::Metrics,
) -> ApiError {
    match outcome {
        PutApp::HeldByOther => {
            ApiError::Conflict(format!("app id {app_id} is taken; choose another"))
        }
        PutApp::Deleting => ApiError::Conflict(format!(
            "app {app_id} is being deleted; its id is free once that ends"
        )),
        PutApp::OverQuota => {
            metrics.refused("maxApps");
            ApiError::Forbidden(format!(
                "quota maxApps ({max_apps}) reached: delete an app first"
            ))
        }
        PutApp::Created | PutApp::Updated => {
            ApiError::Conflict(format!("app {app_id} changed meanwhile; retry"))
        }
    }
}
