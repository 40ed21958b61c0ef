//! Operators' side: tenants and their keys.

use crate::domain::deployment::rfc3339;
use crate::domain::keys;
use crate::domain::tenant::{
    validate_limits, validate_name, validate_tenant_id, CreateTenant, PatchTenant, Tenant,
    DEFAULT_RATE_LIMIT,
};
use crate::error::{ApiError, ApiResult};
use crate::service::views::{CreatedKey, KeyList, KeyView};
use crate::service::{now_millis, Api};
use crate::storage::{KeyRecord, TenantRecord};

fn view(t: &TenantRecord) -> Tenant {
    Tenant {
        tenant_id: t.tenant_id.clone(),
        name: t.name.clone(),
        quotas: t.quotas,
        rate_limit_per_minute: t.rate_limit_per_minute,
        created_at: rfc3339(t.created_at),
        updated_at: rfc3339(t.updated_at),
    }
}

fn not_found(tenant_id: &str) -> ApiError {
    ApiError::NotFound(format!("no tenant {tenant_id}"))
}

impl Api {
    /// `POST /v1/tenants`.
    pub async fn create_tenant(&self, req: CreateTenant) -> ApiResult<Tenant> {
        validate_tenant_id(&req.tenant_id).map_err(ApiError::BadRequest)?;
        validate_name("name", &req.name).map_err(ApiError::BadRequest)?;
        let quotas = req.quotas.unwrap_or_default();
        let rate = req.rate_limit_per_minute.unwrap_or(DEFAULT_RATE_LIMIT);
        validate_limits(&quotas, rate).map_err(ApiError::BadRequest)?;
        let now = now_millis();
        let record = TenantRecord {
            tenant_id: req.tenant_id,
            name: req.name,
            quotas,
            rate_limit_per_minute: rate,
            created_at: now,
            updated_at: now,
        };
        if !self.store.create_tenant(&record).await? {
            return Err(ApiError::Conflict(format!(
                "tenant {} already exists",
                record.tenant_id
            )));
        }
        tracing::info!(tenant_id = %record.tenant_id, "tenant created");
        Ok(view(&record))
    }

    /// `GET /v1/tenants`.
    pub async fn tenants(&self) -> ApiResult<Vec<Tenant>> {
        Ok(self.store.tenants().await?.iter().map(view).collect())
    }

    async fn tenant_record(&self, tenant_id: &str) -> ApiResult<TenantRecord> {
        validate_tenant_id(tenant_id).map_err(ApiError::BadRequest)?;
        self.store
            .tenant(tenant_id)
            .await?
            .ok_or_else(|| not_found(tenant_id))
    }

    /// `GET /v1/tenants/{tenantId}`.
    pub async fn tenant(&self, tenant_id: &str) -> ApiResult<Tenant> {
        Ok(view(&self.tenant_record(tenant_id).await?))
    }

    /// `PATCH /v1/tenants/{tenantId}`: changes apply to the tenant's next request.
    pub async fn patch_tenant(&self, tenant_id: &str, patch: PatchTenant) -> ApiResult<Tenant> {
        let mut t = self.tenant_record(tenant_id).await?;
        if let Some(name) = patch.name {
            validate_name("name", &name).map_err(ApiError::BadRequest)?;
            t.name = name;
        }
        if let Some(q) = patch.quotas {
            t.quotas = t.quotas.patched(q);
        }
        t.rate_limit_per_minute = patch
            .rate_limit_per_minute
            .unwrap_or(t.rate_limit_per_minute);
        validate_limits(&t.quotas, t.rate_limit_per_minute).map_err(ApiError::BadRequest)?;
        t.updated_at = now_millis();
        self.store.update_tenant(&t).await?;
        self.keys.tenant_changed();
        Ok(view(&t))
    }

    /// `POST /v1/tenants/{tenantId}/keys`: the key is in this answer only.
    pub async fn create_key(&self, tenant_id: &str, name: String) -> ApiResult<CreatedKey> {
        self.tenant_record(tenant_id).await?;
        validate_name("name", &name).map_err(ApiError::BadRequest)?;
        let (key_id, text) = keys::generate();
        let secret = keys::parse(text.expose())
            .map(|k| k.secret.to_owned())
            .ok_or_else(|| ApiError::BadRequest("generated key did not parse".into()))?;
        let record = KeyRecord {
            key_id: key_id.clone(),
            tenant_id: tenant_id.to_owned(),
            name: name.clone(),
            key_hash: self.keys.hash(&secret),
            created_at: now_millis(),
            last_used_at: None,
            revoked_at: None,
        };
        self.store.create_key(&record).await?;
        tracing::info!(tenant_id, key_id, "key created");
        Ok(CreatedKey {
            key_id,
            name,
            key: text.expose().to_owned(),
            created_at: rfc3339(record.created_at),
        })
    }

    /// `GET /v1/tenants/{tenantId}/keys`.
    pub async fn keys(&self, tenant_id: &str) -> ApiResult<KeyList> {
        self.tenant_record(tenant_id).await?;
        let items = self
            .store
            .keys(tenant_id)
            .await?
            .iter()
            .map(|k| KeyView::of(k, self.keys.last_used(&k.key_id, k.last_used_at)))
            .collect();
        Ok(KeyList { items })
    }

    /// `DELETE /v1/tenants/{tenantId}/keys/{keyId}`: refused from now on.
    pub async fn revoke_key(&self, tenant_id: &str, key_id: &str) -> ApiResult<()> {
        self.tenant_record(tenant_id).await?;
        if !self.keys.revoke(tenant_id, key_id, now_millis()).await? {
            return Err(ApiError::NotFound(format!(
                "tenant {tenant_id} has no live key {key_id}"
            )));
        }
        tracing::info!(tenant_id, key_id, "key revoked");
        Ok(())
    }
}
