//! The operator's commands of the public api: tenants and their API keys
//! (`X-Admin-Token`, SPEC §6).

use reqwest::Method;
use serde_json::{json, Value};

use crate::connection::{json, Connection};
use crate::output::{cell, say, table};

/// What `berth tenant create` asks for.
#[derive(Debug, Clone, clap::Args)]
pub struct TenantArgs {
    /// The tenant id (a DNS label).
    pub tenant: String,
    /// A name people read (the id when not given).
    #[arg(long)]
    pub name: Option<String>,
    /// Apps the tenant may hold at once.
    #[arg(long, default_value_t = 100)]
    pub max_apps: u32,
    /// Deployments in flight at once.
    #[arg(long, default_value_t = 10)]
    pub max_concurrent_deploys: u32,
    /// Deployments a day.
    #[arg(long, default_value_t = 1000)]
    pub deploys_per_day: u32,
    /// Deployments a month.
    #[arg(long, default_value_t = 20000)]
    pub deploys_per_month: u32,
    /// Requests a minute per key.
    #[arg(long, default_value_t = 600)]
    pub rate_limit_per_minute: u32,
}

impl TenantArgs {
    /// The `POST /v1/tenants` body.
    pub fn body(&self) -> Value {
        json!({
            "tenantId": self.tenant,
            "name": self.name.clone().unwrap_or_else(|| self.tenant.clone()),
            "quotas": {
                "maxApps": self.max_apps,
                "maxConcurrentDeploys": self.max_concurrent_deploys,
                "deploysPerDay": self.deploys_per_day,
                "deploysPerMonth": self.deploys_per_month,
            },
            "rateLimitPerMinute": self.rate_limit_per_minute,
        })
    }
}

/// `berth tenant create`.
pub async fn create_tenant(
    conn: &Connection,
    args: &TenantArgs,
    as_json: bool,
) -> anyhow::Result<()> {
    let tenant = json(
        conn.api_admin(Method::POST, "/v1/tenants")?
            .json(&args.body()),
    )
    .await?;
    if as_json {
        say(&format!("{tenant:#}"));
    } else {
        say(&format!(
            "tenant {} created; give it a key with `berth key create {}`",
            cell(&tenant["tenantId"]),
            cell(&tenant["tenantId"])
        ));
    }
    Ok(())
}

/// `berth tenant list`.
pub async fn list_tenants(conn: &Connection, as_json: bool) -> anyhow::Result<()> {
    let page = json(conn.api_admin(Method::GET, "/v1/tenants")?).await?;
    if as_json {
        say(&format!("{page:#}"));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items(&page)
        .iter()
        .map(|t| {
            let q = &t["quotas"];
            vec![
                cell(&t["tenantId"]),
                cell(&t["name"]),
                cell(&q["maxApps"]),
                cell(&q["maxConcurrentDeploys"]),
                format!(
                    "{}/{}",
                    cell(&q["deploysPerDay"]),
                    cell(&q["deploysPerMonth"])
                ),
                cell(&t["rateLimitPerMinute"]),
            ]
        })
        .collect();
    say(&table(
        &[
            "TENANT",
            "NAME",
            "MAX APPS",
            "CONCURRENT",
            "DAY/MONTH",
            "REQ/MIN",
        ],
        &rows,
    ));
    Ok(())
}

/// `berth key create TENANT --name N`: prints the key, which is shown this once only.
pub async fn create_key(
    conn: &Connection,
    tenant: &str,
    name: &str,
    as_json: bool,
) -> anyhow::Result<()> {
    let key = json(
        conn.api_admin(Method::POST, &format!("/v1/tenants/{tenant}/keys"))?
            .json(&json!({ "name": name })),
    )
    .await?;
    if as_json {
        say(&format!("{key:#}"));
    } else {
        say(&format!(
            "key {} for tenant {tenant} (shown only now; Berth keeps a hash):\n{}",
            cell(&key["keyId"]),
            cell(&key["key"])
        ));
    }
    Ok(())
}

/// `berth key list TENANT`.
pub async fn list_keys(conn: &Connection, tenant: &str, as_json: bool) -> anyhow::Result<()> {
    let page = json(conn.api_admin(Method::GET, &format!("/v1/tenants/{tenant}/keys"))?).await?;
    if as_json {
        say(&format!("{page:#}"));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items(&page)
        .iter()
        .map(|k| {
            vec![
                cell(&k["keyId"]),
                cell(&k["name"]),
                cell(&k["createdAt"]),
                cell(&k["lastUsedAt"]),
                cell(&k["revokedAt"]),
            ]
        })
        .collect();
    say(&table(
        &["KEY", "NAME", "CREATED", "LAST USED", "REVOKED"],
        &rows,
    ));
    Ok(())
}

/// `berth key revoke TENANT KEY_ID`: refused from the next request on.
pub async fn revoke_key(
    conn: &Connection,
    tenant: &str,
    key_id: &str,
    as_json: bool,
) -> anyhow::Result<()> {
    json(conn.api_admin(
        Method::DELETE,
        &format!("/v1/tenants/{tenant}/keys/{key_id}"),
    )?)
    .await?;
    if as_json {
        say(&format!(
            "{:#}",
            json!({ "keyId": key_id, "revoked": true })
        ));
    } else {
        say(&format!("key {key_id} of tenant {tenant} is revoked"));
    }
    Ok(())
}

/// The `items` of a page, or none.
pub fn items(page: &Value) -> &[Value] {
    page["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}
