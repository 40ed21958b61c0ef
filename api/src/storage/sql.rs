//! Every statement the api runs, named and commented, written once in SQL that PostgreSQL,
//! MariaDB and SQLite all read. Parameters are `?`; [`super::Dialect::sql`] numbers them for
//! PostgreSQL. What does differ between the databases (column types, auto-increment) is in the
//! migrations under `api/migrations/{postgres,mysql,sqlite}/`.

const TENANT_COLUMNS: &str = "tenant_id, name, max_apps, max_concurrent_deploys, deploys_per_day, \
     deploys_per_month, rate_limit_per_minute, created_at, updated_at";

/// Creates a tenant; a taken `tenant_id` fails with a unique violation.
pub const INSERT_TENANT: &str =
    "INSERT INTO api_tenant (tenant_id, name, max_apps, max_concurrent_deploys, \
     deploys_per_day, deploys_per_month, rate_limit_per_minute, created_at, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
/// Writes a tenant's name, quotas and rate limit.
pub const UPDATE_TENANT: &str =
    "UPDATE api_tenant SET name = ?, max_apps = ?, max_concurrent_deploys = ?, \
     deploys_per_day = ?, deploys_per_month = ?, rate_limit_per_minute = ?, updated_at = ? \
     WHERE tenant_id = ?";

/// One tenant by id.
pub fn select_tenant() -> String {
    format!("SELECT {TENANT_COLUMNS} FROM api_tenant WHERE tenant_id = ?")
}

/// Every tenant, by id (operators have few; the list is not paged).
pub fn select_tenants() -> String {
    format!("SELECT {TENANT_COLUMNS} FROM api_tenant ORDER BY tenant_id")
}

const KEY_COLUMNS: &str = "key_id, tenant_id, name, key_hash, created_at, last_used_at, revoked_at";

/// Stores a new key's hash (the key itself is never stored).
pub const INSERT_KEY: &str = "INSERT INTO api_key (key_id, tenant_id, name, key_hash, created_at) \
     VALUES (?, ?, ?, ?, ?)";
/// Revokes a live key of a tenant; 0 rows when there is none.
pub const REVOKE_KEY: &str =
    "UPDATE api_key SET revoked_at = ? WHERE tenant_id = ? AND key_id = ? AND revoked_at IS NULL";
/// Moves `lastUsedAt` forward (never back: batches may arrive out of order).
pub const TOUCH_KEY: &str = "UPDATE api_key SET last_used_at = ? \
     WHERE key_id = ? AND (last_used_at IS NULL OR last_used_at < ?)";

/// One key by id, whatever its tenant (the bearer check looks it up by the id it carries).
pub fn select_key() -> String {
    format!("SELECT {KEY_COLUMNS} FROM api_key WHERE key_id = ?")
}

/// A tenant's keys, oldest first.
pub fn select_keys() -> String {
    format!("SELECT {KEY_COLUMNS} FROM api_key WHERE tenant_id = ? ORDER BY created_at, key_id")
}

const APP_COLUMNS: &str = "app_id, tenant_id, spec, secret_env, deleting, created_at, updated_at";

/// Creates an app; an id any tenant holds fails with a unique violation.
pub const INSERT_APP: &str =
    "INSERT INTO api_app (app_id, tenant_id, spec, secret_env, deleting, created_at, updated_at) \
     VALUES (?, ?, ?, ?, 0, ?, ?)";
/// Replaces the spec of an app the tenant holds and is not deleting; 0 rows otherwise.
pub const UPDATE_APP: &str = "UPDATE api_app SET spec = ?, secret_env = ?, updated_at = ? \
     WHERE app_id = ? AND tenant_id = ? AND deleting = 0";
/// Marks an app as being deleted: no more changes or deployments, the id stays taken.
pub const MARK_APP_DELETING: &str =
    "UPDATE api_app SET deleting = 1, updated_at = ? WHERE app_id = ? AND tenant_id = ?";
/// Frees an app id once its delete deployment succeeded.
pub const DELETE_APP: &str = "DELETE FROM api_app WHERE tenant_id = ? AND app_id = ?";
/// Counts a tenant's apps, for `maxApps`.
pub const COUNT_APPS: &str = "SELECT COUNT(*) FROM api_app WHERE tenant_id = ?";
/// Who holds an app id (any tenant), to tell "not yours" (409) from "deleting".
pub const APP_HOLDER: &str = "SELECT tenant_id, deleting FROM api_app WHERE app_id = ?";

/// One app of a tenant.
pub fn select_app() -> String {
    format!("SELECT {APP_COLUMNS} FROM api_app WHERE app_id = ? AND tenant_id = ?")
}

/// A page of a tenant's apps after a cursor (an app id), by id.
pub fn select_apps() -> String {
    format!(
        "SELECT {APP_COLUMNS} FROM api_app WHERE tenant_id = ? AND app_id > ? ORDER BY app_id LIMIT ?"
    )
}

/// Creates a template (unique per tenant).
pub const INSERT_TEMPLATE: &str =
    "INSERT INTO api_template (tenant_id, template_id, spec, secret_env, created_at, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?)";
/// Replaces a template's spec.
pub const UPDATE_TEMPLATE: &str =
    "UPDATE api_template SET spec = ?, secret_env = ?, updated_at = ? \
     WHERE tenant_id = ? AND template_id = ?";
/// One template of a tenant.
pub const SELECT_TEMPLATE: &str = "SELECT template_id, spec, secret_env, created_at, updated_at \
     FROM api_template WHERE tenant_id = ? AND template_id = ?";

const DEPLOYMENT_COLUMNS: &str =
    "deployment_id, tenant_id, app_id, kind, state, job_id, spec, image, url, \
     node_id, error, version, idempotency_key, created_at, finished_at";

/// Records a deployment before its job is asked for; a reused `Idempotency-Key` of the same
/// app fails with a unique violation.
pub const INSERT_DEPLOYMENT: &str =
    "INSERT INTO api_deployment (deployment_id, tenant_id, app_id, kind, state, job_id, \
     spec, image, url, node_id, error, version, idempotency_key, created_at, finished_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
/// Copies what the control plane says of the deployment's job. Only moves forward: a
/// snapshot older than the stored one (a lower version) changes nothing.
pub const UPDATE_DEPLOYMENT: &str =
    "UPDATE api_deployment SET job_id = ?, state = ?, image = ?, url = ?, node_id = ?, \
     error = ?, version = ?, finished_at = ? WHERE deployment_id = ? AND version <= ?";
/// Deployments of a tenant still in flight, for `maxConcurrentDeploys`.
pub const COUNT_IN_FLIGHT: &str =
    "SELECT COUNT(*) FROM api_deployment WHERE tenant_id = ? AND state IN ('PENDING', 'RUNNING')";
/// Deployments of a tenant since a time, for `deploysPerDay` and `deploysPerMonth`.
pub const COUNT_SINCE: &str =
    "SELECT COUNT(*) FROM api_deployment WHERE tenant_id = ? AND created_at >= ?";

/// One deployment of a tenant.
pub fn select_deployment() -> String {
    format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM api_deployment WHERE deployment_id = ? AND tenant_id = ?"
    )
}

/// The deployment an `Idempotency-Key` of an app already made.
pub fn select_deployment_by_key() -> String {
    format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM api_deployment \
         WHERE tenant_id = ? AND app_id = ? AND idempotency_key = ?"
    )
}

/// A page of an app's deployments before a cursor (a deployment id), newest first.
pub fn select_deployments() -> String {
    format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM api_deployment \
         WHERE tenant_id = ? AND app_id = ? AND deployment_id < ? ORDER BY deployment_id DESC LIMIT ?"
    )
}

/// Every deployment not yet final, of every tenant: followed again after a restart.
pub fn select_unfinished() -> String {
    format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM api_deployment WHERE state IN ('PENDING', 'RUNNING') \
         ORDER BY deployment_id"
    )
}

/// Claims a slug for an instance; the unique row decides between concurrent identical calls.
pub const INSERT_INSTANCE: &str =
    "INSERT INTO api_instance (tenant_id, slug, template_id, app_id, deployment_id, created_at) \
     VALUES (?, ?, ?, ?, ?, ?)";
/// One instance of a tenant.
pub const SELECT_INSTANCE: &str = "SELECT slug, template_id, app_id, deployment_id, created_at \
     FROM api_instance WHERE tenant_id = ? AND slug = ?";
/// Frees the instances of a deleted app.
pub const DELETE_INSTANCES: &str = "DELETE FROM api_instance WHERE tenant_id = ? AND app_id = ?";

/// Appends a line to a tenant's usage log.
pub const INSERT_USAGE: &str =
    "INSERT INTO api_usage (tenant_id, at, key_id, action, app_id, deployment_id, status, detail) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
/// A page of a tenant's usage before a cursor (a row id), newest first.
pub const SELECT_USAGE: &str =
    "SELECT id, at, key_id, action, app_id, deployment_id, status, detail \
     FROM api_usage WHERE tenant_id = ? AND id < ? ORDER BY id DESC LIMIT ?";

/// The migrations this api has applied (its own table: the control plane's migrator owns
/// `_sqlx_migrations` in a database they may share).
pub const CREATE_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS api_schema_migrations \
     (version BIGINT PRIMARY KEY, name VARCHAR(200) NOT NULL, applied_at BIGINT NOT NULL)";
/// Versions already applied.
pub const SELECT_MIGRATIONS: &str = "SELECT version FROM api_schema_migrations";
/// Records an applied migration.
pub const INSERT_MIGRATION: &str =
    "INSERT INTO api_schema_migrations (version, name, applied_at) VALUES (?, ?, ?)";
