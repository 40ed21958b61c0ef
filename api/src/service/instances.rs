//! Templates and per-user instances: an instance is the app `{slug}` made from a template with
//! the caller's `env` over it, deployed once. The instance row decides between concurrent
//! identical calls: one creates, the others answer the winner's instance.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::domain::deployment::{app_status, new_deployment, DeploymentKind};
use crate::domain::spec::{self, SpecRequest};
use crate::error::{ApiError, ApiResult};
use crate::service::apps::{app_id, refusal};
use crate::service::views::{InstanceView, TemplateView};
use crate::service::{now_millis, Api};
use crate::storage::{AppRecord, Created, InstanceRecord, PutApp, TemplateRecord};

/// `POST /v1/instances`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateInstance {
    /// The template to make it from.
    pub template: String,
    /// The instance's slug: a DNS label, also its app id and host name.
    pub slug: String,
    /// Environment variables merged over the template's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn template_id(value: &str) -> ApiResult<String> {
    app_id(value).map_err(|_| {
        ApiError::BadRequest(format!(
            "template id {:?} must be a DNS label",
            berth_shared::ids::truncate(value)
        ))
    })
}

impl Api {
    /// `PUT /v1/templates/{templateId}`: `true` when it is new.
    pub async fn put_template(
        &self,
        caller: &Caller,
        id: &str,
        req: SpecRequest,
    ) -> ApiResult<(bool, TemplateView)> {
        let id = template_id(id)?;
        let (spec, secrets) = req.split();
        // Checked as the app an instance of it would be.
        spec::validate(&id, &caller.tenant.tenant_id, &spec, &secrets)
            .map_err(ApiError::BadRequest)?;
        let now = now_millis();
        let record = TemplateRecord {
            template_id: id.clone(),
            spec,
            secret_env: secrets,
            created_at: now,
            updated_at: now,
        };
        let created = self
            .store
            .put_template(&caller.tenant.tenant_id, &record)
            .await?;
        let stored = self.own_template(caller, &id).await?;
        Ok((created, TemplateView::from(&stored)))
    }

    async fn own_template(&self, caller: &Caller, id: &str) -> ApiResult<TemplateRecord> {
        self.store
            .template(&caller.tenant.tenant_id, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no template {id}")))
    }

    /// `GET /v1/templates/{templateId}`.
    pub async fn template(&self, caller: &Caller, id: &str) -> ApiResult<TemplateView> {
        let id = template_id(id)?;
        Ok(TemplateView::from(&self.own_template(caller, &id).await?))
    }

    /// `POST /v1/instances`: `Created::New` the first time, the same instance after.
    pub async fn create_instance(
        &self,
        caller: &Caller,
        req: CreateInstance,
    ) -> ApiResult<Created<InstanceView>> {
        let slug = app_id(&req.slug)?;
        let template_id = template_id(&req.template)?;
        let tenant_id = caller.tenant.tenant_id.clone();
        if let Some(existing) = self.store.instance(&tenant_id, &slug).await? {
            return self.existing_instance(caller, existing, &template_id).await;
        }
        let template = self.own_template(caller, &template_id).await?;
        let mut spec = template.spec.clone();
        spec.env.extend(req.env);
        spec::validate(&slug, &tenant_id, &spec, &template.secret_env)
            .map_err(ApiError::BadRequest)?;
        let _turn = self.tenant_lock(&tenant_id).await;
        let max_apps = caller.tenant.quotas.max_apps;
        if let Some(refused) = self.store.app_refusal(&slug, &tenant_id).await? {
            return Err(refusal(refused, &slug, max_apps, &self.metrics));
        }
        if self.store.app(&tenant_id, &slug).await?.is_some() {
            // Unless it is the instance a concurrent call just made.
            return match self.store.instance(&tenant_id, &slug).await? {
                Some(existing) => self.existing_instance(caller, existing, &template_id).await,
                None => Err(ApiError::Conflict(format!(
                    "app {slug} exists and is not an instance"
                ))),
            };
        }
        if self.store.app_count(&tenant_id).await? >= i64::from(max_apps) {
            return Err(refusal(PutApp::OverQuota, &slug, max_apps, &self.metrics));
        }
        let now = now_millis();
        self.check_deploy_quotas(caller, now).await?;
        let app = AppRecord {
            app_id: slug.clone(),
            tenant_id: tenant_id.clone(),
            spec,
            secret_env: template.secret_env,
            deleting: false,
            created_at: now,
            updated_at: now,
        };
        let deployment = new_deployment(
            &tenant_id,
            &slug,
            DeploymentKind::Deploy,
            &app.spec,
            None,
            now,
        );
        let instance = InstanceRecord {
            slug: slug.clone(),
            template_id,
            app_id: slug.clone(),
            deployment_id: deployment.deployment_id.clone(),
            created_at: now,
        };
        match self
            .store
            .create_instance(&instance, &app, &deployment)
            .await?
        {
            Created::Existing(winner) => {
                self.existing_instance(caller, winner, &instance.template_id)
                    .await
            }
            Created::New(_) => {
                tracing::info!(slug = %slug, "instance created");
                let deployment = self.submit(deployment).await?;
                Ok(Created::New(InstanceView {
                    url: self.settings.instance_url(&slug),
                    state: app_status(Some(&deployment), false).state,
                    deployment_id: Some(deployment.deployment_id),
                    slug: slug.clone(),
                    app_id: slug,
                }))
            }
        }
    }

    async fn existing_instance(
        &self,
        caller: &Caller,
        existing: InstanceRecord,
        template_id: &str,
    ) -> ApiResult<Created<InstanceView>> {
        if existing.template_id != template_id {
            return Err(ApiError::Conflict(format!(
                "instance {} was made from template {}",
                existing.slug, existing.template_id
            )));
        }
        Ok(Created::Existing(
            self.instance_view(caller, existing).await?,
        ))
    }

    async fn instance_view(&self, caller: &Caller, i: InstanceRecord) -> ApiResult<InstanceView> {
        let latest = self
            .store
            .latest_deployment(&caller.tenant.tenant_id, &i.app_id)
            .await?;
        let status = self.status_of(latest.as_ref()).await;
        Ok(InstanceView {
            url: self.settings.instance_url(&i.slug),
            state: status.state,
            deployment_id: status.deployment_id.or(Some(i.deployment_id)),
            slug: i.slug,
            app_id: i.app_id,
        })
    }

    /// `GET /v1/instances/{slug}` (resolve).
    pub async fn instance(&self, caller: &Caller, slug: &str) -> ApiResult<InstanceView> {
        let slug = app_id(slug)?;
        let i = self
            .store
            .instance(&caller.tenant.tenant_id, &slug)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no instance {slug}")))?;
        self.instance_view(caller, i).await
    }
}
