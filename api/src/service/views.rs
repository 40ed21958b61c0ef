//! What tenants and operators read: the answers of SPEC §6, camelCase, without secret values.

use serde::{Deserialize, Serialize};

use crate::domain::deployment::{rfc3339, AppStatus};
use crate::domain::spec::AppSpec;
use crate::storage::{KeyRecord, TemplateRecord, UsageRecord};

/// A page of items and the cursor of the next one.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page of `items` when `limit` were asked: a full page has a next one, whose cursor
    /// `cursor_of` reads from the last item.
    pub fn of(items: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> String) -> Self {
        let next_cursor = (items.len() == limit as usize)
            .then(|| items.last().map(&cursor_of))
            .flatten();
        Self { items, next_cursor }
    }
}

/// `GET /v1/apps/{appId}`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppView {
    /// The app.
    pub app_id: String,
    /// Its desired spec (no secret values).
    pub spec: AppSpec,
    /// Names of its secret environment variables.
    pub secret_env_names: Vec<String>,
    /// Where it is, from its newest deployment.
    pub status: AppStatus,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When its spec last changed (RFC 3339).
    pub updated_at: String,
}

/// `GET /v1/templates/{templateId}`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateView {
    /// The template.
    pub template_id: String,
    /// Its spec (no secret values).
    pub spec: AppSpec,
    /// Names of its secret environment variables.
    pub secret_env_names: Vec<String>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

impl From<&TemplateRecord> for TemplateView {
    fn from(t: &TemplateRecord) -> Self {
        Self {
            template_id: t.template_id.clone(),
            spec: t.spec.clone(),
            secret_env_names: t.secret_env.keys().cloned().collect(),
            created_at: rfc3339(t.created_at),
            updated_at: rfc3339(t.updated_at),
        }
    }
}

/// `POST /v1/instances` and `GET /v1/instances/{slug}`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    /// The slug.
    pub slug: String,
    /// Its app (the slug).
    pub app_id: String,
    /// Where it answers: `http://{slug}.{domain}:{gatewayPort}/`.
    pub url: String,
    /// Its app's state.
    pub state: crate::domain::deployment::AppState,
    /// Its newest deployment.
    pub deployment_id: Option<String>,
}

/// A key as listed (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    /// Its id.
    pub key_id: String,
    /// Its name.
    pub name: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// When it was last used (RFC 3339).
    pub last_used_at: Option<String>,
    /// When it was revoked (RFC 3339).
    pub revoked_at: Option<String>,
}

impl KeyView {
    /// The view of `k`, with `last_used` (the live value) for `lastUsedAt`.
    pub fn of(k: &KeyRecord, last_used: Option<i64>) -> Self {
        Self {
            key_id: k.key_id.clone(),
            name: k.name.clone(),
            created_at: rfc3339(k.created_at),
            last_used_at: last_used.map(rfc3339),
            revoked_at: k.revoked_at.map(rfc3339),
        }
    }
}

/// `POST /v1/tenants/{tenantId}/keys`: the only answer that holds the key.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    /// Its id.
    pub key_id: String,
    /// Its name.
    pub name: String,
    /// The key: send it as `Authorization: Bearer <key>`. Shown this once.
    pub key: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
}

/// `GET /v1/tenants/{tenantId}/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyList {
    /// The tenant's keys, oldest first.
    pub items: Vec<KeyView>,
}

/// A line of the usage log.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageView {
    /// When (RFC 3339).
    pub at: String,
    /// Which key.
    pub key_id: String,
    /// What it asked (`app.put`, `deployment.create`, …).
    pub action: String,
    /// The app named.
    pub app_id: Option<String>,
    /// The deployment made.
    pub deployment_id: Option<String>,
    /// The HTTP status it got.
    pub status: u16,
    /// Why it was refused.
    pub detail: Option<String>,
}

impl From<&UsageRecord> for UsageView {
    fn from(u: &UsageRecord) -> Self {
        Self {
            at: rfc3339(u.at),
            key_id: u.key_id.clone(),
            action: u.action.clone(),
            app_id: u.app_id.clone(),
            deployment_id: u.deployment_id.clone(),
            status: u.status,
            detail: u.detail.clone(),
        }
    }
}

/// `GET /v1/tenants`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantList {
    /// Every tenant, by id.
    pub items: Vec<crate::domain::tenant::Tenant>,
}
