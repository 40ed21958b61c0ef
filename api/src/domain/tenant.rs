//! Tenants and their quotas (SPEC §6): what operators create and what bounds a tenant's keys.

use berth_shared::ids::{is_dns_label, truncate};
use serde::{Deserialize, Serialize};

/// What a tenant may hold and do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quotas {
    /// Apps it may hold at once (a new app past it is `403`).
    #[schemars(range(max = 1_000_000))]
    pub max_apps: u32,
    /// Deployments it may have in flight at once.
    #[schemars(range(max = 1_000_000))]
    pub max_concurrent_deploys: u32,
    /// Deployments it may ask for per UTC day.
    #[schemars(range(max = 1_000_000))]
    pub deploys_per_day: u32,
    /// Deployments it may ask for per UTC month.
    #[schemars(range(max = 1_000_000))]
    pub deploys_per_month: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_apps: 10,
            max_concurrent_deploys: 2,
            deploys_per_day: 200,
            deploys_per_month: 2000,
        }
    }
}

/// A change to some quotas; absent fields stay as they are.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotasPatch {
    /// New `maxApps`.
    #[schemars(range(max = 1_000_000))]
    pub max_apps: Option<u32>,
    /// New `maxConcurrentDeploys`.
    #[schemars(range(max = 1_000_000))]
    pub max_concurrent_deploys: Option<u32>,
    /// New `deploysPerDay`.
    #[schemars(range(max = 1_000_000))]
    pub deploys_per_day: Option<u32>,
    /// New `deploysPerMonth`.
    #[schemars(range(max = 1_000_000))]
    pub deploys_per_month: Option<u32>,
}

/// Largest value of any quota or rate limit.
pub const MAX_LIMIT: u32 = 1_000_000;
/// Default requests per minute per key.
pub const DEFAULT_RATE_LIMIT: u32 = 600;

/// `POST /v1/tenants`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTenant {
    /// A DNS label, unique.
    pub tenant_id: String,
    /// A name for people (1 to 200 characters).
    pub name: String,
    /// Its quotas (defaults: 10 apps, 2 deploys in flight, 200 a day, 2000 a month).
    #[serde(default)]
    pub quotas: Option<Quotas>,
    /// Requests per minute one key may make (600).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub rate_limit_per_minute: Option<u32>,
}

/// `PATCH /v1/tenants/{tenantId}`: absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchTenant {
    /// New name.
    pub name: Option<String>,
    /// Quotas to change.
    pub quotas: Option<QuotasPatch>,
    /// New rate limit.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub rate_limit_per_minute: Option<u32>,
}

/// A tenant as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    /// Its id.
    pub tenant_id: String,
    /// Its name.
    pub name: String,
    /// Its quotas.
    pub quotas: Quotas,
    /// Requests per minute per key.
    pub rate_limit_per_minute: u32,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// Checks a tenant id.
pub fn validate_tenant_id(id: &str) -> Result<(), String> {
    if is_dns_label(id) {
        Ok(())
    } else {
        Err(format!(
            "tenantId {:?} must be a DNS label: 1 to 63 characters of a-z, 0-9 and '-'",
            truncate(id)
        ))
    }
}

/// Checks a name a person gave (a tenant's or a key's).
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        Err(format!(
            "{what} must be 1 to 200 characters without control characters"
        ))
    } else {
        Ok(())
    }
}

/// Checks quotas and a rate limit against [`MAX_LIMIT`].
pub fn validate_limits(quotas: &Quotas, rate_limit: u32) -> Result<(), String> {
    let named = [
        ("maxApps", quotas.max_apps),
        ("maxConcurrentDeploys", quotas.max_concurrent_deploys),
        ("deploysPerDay", quotas.deploys_per_day),
        ("deploysPerMonth", quotas.deploys_per_month),
    ];
    if let Some((name, _)) = named.iter().find(|(_, v)| *v > MAX_LIMIT) {
        return Err(format!("quotas.{name} must be at most {MAX_LIMIT}"));
    }
    if rate_limit == 0 || rate_limit > MAX_LIMIT {
        return Err(format!(
            "rateLimitPerMinute must be between 1 and {MAX_LIMIT}"
        ));
    }
    Ok(())
}

impl Quotas {
    /// These quotas with `patch` applied.
    pub fn patched(self, patch: QuotasPatch) -> Self {
        Self {
            max_apps: patch.max_apps.unwrap_or(self.max_apps),
            max_concurrent_deploys: patch
                .max_concurrent_deploys
                .unwrap_or(self.max_concurrent_deploys),
            deploys_per_day: patch.deploys_per_day.unwrap_or(self.deploys_per_day),
            deploys_per_month: patch.deploys_per_month.unwrap_or(self.deploys_per_month),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_bounded() {
        assert!(validate_limits(&Quotas::default(), 1).is_ok());
        assert!(validate_limits(&Quotas::default(), 0)
            .unwrap_err()
            .contains("rateLimitPerMinute"));
        let big = Quotas {
            max_apps: MAX_LIMIT + 1,
            ..Quotas::default()
        };
        assert!(validate_limits(&big, 10).unwrap_err().contains("maxApps"));
    }

    #[test]
    fn a_patch_changes_only_what_it_names() {
        let q = Quotas::default().patched(QuotasPatch {
            max_apps: Some(3),
            ..Default::default()
        });
        assert_eq!(q.max_apps, 3);
        assert_eq!(q.deploys_per_day, Quotas::default().deploys_per_day);
    }
}
