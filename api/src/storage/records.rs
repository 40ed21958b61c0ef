//! The rows of the api's tables as plain values, and how each is read back.

use std::collections::BTreeMap;

use berth_shared::sealed::{SealedEnv, SealingKeys};
use berth_shared::wire::JobState;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{json, parse_json, parse_state, spec_and_secrets, AnyQuery, StoreError, StoreResult};
use crate::domain::deployment::DeploymentKind;
use crate::domain::spec::AppSpec;
use crate::domain::tenant::Quotas;

/// A TEXT column. MariaDB's TEXT reaches the `Any` driver as a BLOB, so bytes are read as
/// UTF-8 when a string is refused.
pub(super) fn text(row: &AnyRow, column: &str) -> StoreResult<String> {
    opt_text(row, column)?.ok_or_else(|| StoreError::Corrupt(format!("{column} is NULL")))
}

/// A nullable TEXT column (see [`text`]).
pub(super) fn opt_text(row: &AnyRow, column: &str) -> StoreResult<Option<String>> {
    match row.try_get::<Option<String>, _>(column) {
        Ok(v) => Ok(v),
        Err(_) => row
            .try_get::<Option<Vec<u8>>, _>(column)?
            .map(|b| {
                String::from_utf8(b).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
            })
            .transpose(),
    }
}

fn u32_of(row: &AnyRow, column: &str) -> StoreResult<u32> {
    let v: i64 = row.try_get(column)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{column} = {v} is out of range")))
}

/// A tenant: who a portal's keys speak for, and its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantRecord {
    /// A DNS label.
    pub tenant_id: String,
    /// Shown to operators.
    pub name: String,
    /// Its quotas.
    pub quotas: Quotas,
    /// Requests per minute one of its keys may make.
    pub rate_limit_per_minute: u32,
    /// When it was created.
    pub created_at: i64,
    /// When it last changed.
    pub updated_at: i64,
}

impl TenantRecord {
    pub(super) fn read(row: &AnyRow) -> StoreResult<Self> {
        Ok(Self {
            tenant_id: row.try_get("tenant_id")?,
            name: row.try_get("name")?,
            quotas: Quotas {
                max_apps: u32_of(row, "max_apps")?,
                max_concurrent_deploys: u32_of(row, "max_concurrent_deploys")?,
                deploys_per_day: u32_of(row, "deploys_per_day")?,
                deploys_per_month: u32_of(row, "deploys_per_month")?,
            },
            rate_limit_per_minute: u32_of(row, "rate_limit_per_minute")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// An API key as stored: its id and the hash of its secret part, never the key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// The id the key carries in its text (`bk_{keyId}_…`).
    pub key_id: String,
    /// Whose key it is.
    pub tenant_id: String,
    /// A name the operator gave it.
    pub name: String,
    /// Hex HMAC-SHA256 of the secret part (see [`crate::domain::keys`]).
    pub key_hash: String,
    /// When it was made.
    pub created_at: i64,
    /// When it was last used, as last flushed (the live value is in memory).
    pub last_used_at: Option<i64>,
    /// When it was revoked; a revoked key is refused.
    pub revoked_at: Option<i64>,
}

impl KeyRecord {
    pub(super) fn read(row: &AnyRow) -> StoreResult<Self> {
        Ok(Self {
            key_id: row.try_get("key_id")?,
            tenant_id: row.try_get("tenant_id")?,
            name: row.try_get("name")?,
            key_hash: row.try_get("key_hash")?,
            created_at: row.try_get("created_at")?,
            last_used_at: row.try_get("last_used_at")?,
            revoked_at: row.try_get("revoked_at")?,
        })
    }
}

/// An app's desired state.
#[derive(Debug, Clone, PartialEq)]
pub struct AppRecord {
    /// The app id (one namespace across tenants, like the control plane's).
    pub app_id: String,
    /// Whose app it is.
    pub tenant_id: String,
    /// The spec without secret values.
    pub spec: AppSpec,
    /// Secret environment values, never shown.
    pub secret_env: BTreeMap<String, String>,
    /// Being deleted: no more changes; the id is free once the delete deployment succeeds.
    pub deleting: bool,
    /// When it was created.
    pub created_at: i64,
    /// When its spec last changed.
    pub updated_at: i64,
}

impl AppRecord {
    pub(super) fn read(row: &AnyRow, keys: &SealingKeys) -> StoreResult<Self> {
        let app_id: String = row.try_get("app_id")?;
        let (spec, secret_env) = spec_and_secrets(row, keys, &app_id)?;
        Ok(Self {
            app_id,
            tenant_id: row.try_get("tenant_id")?,
            spec,
            secret_env,
            deleting: row.try_get::<i64, _>("deleting")? != 0,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    pub(super) fn spec_json(&self) -> StoreResult<String> {
        json(&self.spec)
    }

    /// The secret values sealed for this app, as the `secret_env` column holds them.
    pub(super) fn secrets_sealed(&self, keys: &SealingKeys) -> String {
        SealedEnv::seal(keys, &self.secret_env, &self.app_id)
            .as_stored()
            .to_owned()
    }
}

/// A template: an app spec instances are made from.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateRecord {
    /// A DNS label, unique per tenant.
    pub template_id: String,
    /// The spec without secret values.
    pub spec: AppSpec,
    /// Secret values every instance gets.
    pub secret_env: BTreeMap<String, String>,
    /// When it was created.
    pub created_at: i64,
    /// When it last changed.
    pub updated_at: i64,
}

impl TemplateRecord {
    pub(super) fn read(row: &AnyRow, keys: &SealingKeys) -> StoreResult<Self> {
        let template_id: String = row.try_get("template_id")?;
        let (spec, secret_env) = spec_and_secrets(row, keys, &template_owner(&template_id))?;
        Ok(Self {
            template_id,
            spec,
            secret_env,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

impl TemplateRecord {
    /// The secret values sealed for this template, as the `secret_env` column holds them.
    pub(super) fn secrets_sealed(&self, keys: &SealingKeys) -> String {
        SealedEnv::seal(keys, &self.secret_env, &template_owner(&self.template_id))
            .as_stored()
            .to_owned()
    }
}

/// What a template's secrets are sealed for: not an app id (those hold no `:`), so a template's
/// sealed values never open as an app's.
fn template_owner(template_id: &str) -> String {
    format!("template:{template_id}")
}

/// A deployment: one job the api asked of the control plane, and what it last saw of it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRecord {
    /// UUID v7, also the `Idempotency-Key` of its `POST /deploy/jobs`.
    pub deployment_id: String,
    /// Whose it is.
    pub tenant_id: String,
    /// The app.
    pub app_id: String,
    /// Deploy, stop or delete.
    pub kind: DeploymentKind,
    /// The job's state as last seen (`PENDING` until the job exists).
    pub state: JobState,
    /// The control plane's job, once created.
    pub job_id: Option<String>,
    /// The spec deployed (no secret values); a rollback deploys it again.
    pub spec: AppSpec,
    /// The image deployed: the spec's, or for a build the image it pushed.
    pub image: Option<String>,
    /// Where the app answered after this deployment.
    pub url: Option<String>,
    /// The node it ran on.
    pub node_id: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The job's version as last seen (0 before the job exists).
    pub version: i64,
    /// The caller's `Idempotency-Key`, if any.
    pub idempotency_key: Option<String>,
    /// When it was asked for.
    pub created_at: i64,
    /// When its job reached a final state.
    pub finished_at: Option<i64>,
}

impl DeploymentRecord {
    pub(super) fn read(row: &AnyRow) -> StoreResult<Self> {
        let kind: String = row.try_get("kind")?;
        Ok(Self {
            deployment_id: row.try_get("deployment_id")?,
            tenant_id: row.try_get("tenant_id")?,
            app_id: row.try_get("app_id")?,
            kind: DeploymentKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown deployment kind {kind}")))?,
            state: parse_state(&row.try_get::<String, _>("state")?)?,
            job_id: row.try_get("job_id")?,
            spec: parse_json(&text(row, "spec")?)?,
            image: opt_text(row, "image")?,
            url: opt_text(row, "url")?,
            node_id: row.try_get("node_id")?,
            error: opt_text(row, "error")?,
            version: row.try_get("version")?,
            idempotency_key: row.try_get("idempotency_key")?,
            created_at: row.try_get("created_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }

    /// Binds every column, in the order of `INSERT_DEPLOYMENT`.
    pub(super) fn bind_all<'q>(&self, s: AnyQuery<'q>, spec: String) -> AnyQuery<'q> {
        s.bind(self.deployment_id.clone())
            .bind(self.tenant_id.clone())
            .bind(self.app_id.clone())
            .bind(self.kind.as_str())
            .bind(self.state.as_str())
            .bind(self.job_id.clone())
            .bind(spec)
            .bind(self.image.clone())
            .bind(self.url.clone())
            .bind(self.node_id.clone())
            .bind(self.error.clone())
            .bind(self.version)
            .bind(self.idempotency_key.clone())
            .bind(self.created_at)
            .bind(self.finished_at)
    }
}

/// A per-user instance: a slug bound to the app made for it from a template.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    /// The slug (also the app id).
    pub slug: String,
    /// The template it was made from.
    pub template_id: String,
    /// Its app.
    pub app_id: String,
    /// Its first deployment.
    pub deployment_id: String,
    /// When it was made.
    pub created_at: i64,
}

impl InstanceRecord {
    pub(super) fn read(row: &AnyRow) -> StoreResult<Self> {
        Ok(Self {
            slug: row.try_get("slug")?,
            template_id: row.try_get("template_id")?,
            app_id: row.try_get("app_id")?,
            deployment_id: row.try_get("deployment_id")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// A line of a tenant's usage log: a change one of its keys asked for, and the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    /// Row id (the page cursor); 0 before it is stored.
    pub id: i64,
    /// When.
    pub at: i64,
    /// Which key asked.
    pub key_id: String,
    /// What it asked (`app.put`, `deployment.create`, …).
    pub action: String,
    /// The app it named, if any.
    pub app_id: Option<String>,
    /// The deployment it made, if any.
    pub deployment_id: Option<String>,
    /// The HTTP status it got.
    pub status: u16,
    /// The refusal's detail, if refused.
    pub detail: Option<String>,
}

impl UsageRecord {
    pub(super) fn read(row: &AnyRow) -> StoreResult<Self> {
        let status: i64 = row.try_get("status")?;
        Ok(Self {
            id: row.try_get("id")?,
            at: row.try_get("at")?,
            key_id: row.try_get("key_id")?,
            action: row.try_get("action")?,
            app_id: row.try_get("app_id")?,
            deployment_id: row.try_get("deployment_id")?,
            status: u16::try_from(status).unwrap_or(0),
            detail: opt_text(row, "detail")?,
        })
    }
}
