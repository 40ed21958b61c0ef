//! The api's own tables (`api_*`), on PostgreSQL, MariaDB or SQLite.
//!
//! One [`Store`] holds every sequence of statements, written once over sqlx's `Any` driver;
//! the statements themselves are named in [`sql`], portable across the three databases, and
//! the migrations per database (the only place their SQL differs) are in
//! `api/migrations/{postgres,mysql,sqlite}/`, applied at start-up by [`migrate`]. Time is
//! passed in as milliseconds since the epoch, never read from the database clock.
//!
//! Where concurrent callers race (a slug, an app id, an `Idempotency-Key`), a unique row
//! decides: the loser's insert fails and it reads the winner's row.
//!
//! The hot read of an app with its newest deployment ([`Store::app_read`]) is served from a
//! cache ([`app_cache`]) that every write of an app or a deployment here keeps exact.

pub mod app_cache;
pub mod migrate;
mod records;
pub mod sql;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use berth_shared::sealed::{SealedEnv, SealingKeys};
use berth_shared::wire::JobState;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

pub use app_cache::{AppRead, TTL as APP_READ_TTL};
pub use records::*;

use crate::domain::spec::AppSpec;

/// What can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or could not be reached (503, logged, never shown).
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// A stored row could not be read back (a bug or a hand-edited row).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Shorthand for storage results.
pub type StoreResult<T> = Result<T, StoreError>;

/// Which database a URL names; it decides the placeholders and the migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `postgres://` (numbered `$1` parameters).
    Postgres,
    /// `mysql://` or `mariadb://`.
    MySql,
    /// `sqlite:`.
    Sqlite,
}

impl Dialect {
    /// The dialect of `url`, or a message naming the accepted schemes.
    pub fn of(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Ok(Self::MySql)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            anyhow::bail!("BERTH_DATABASE_URL must start with postgres://, mysql:// or sqlite:")
        }
    }

    /// `statement` with its `?` parameters as this database reads them. The statements in
    /// [`sql`] hold no `?` inside literals, so a plain scan is enough.
    pub fn sql<'a>(self, statement: &'a str) -> Cow<'a, str> {
        if self != Self::Postgres {
            return Cow::Borrowed(statement);
        }
        let mut out = String::with_capacity(statement.len() + 16);
        let mut n = 0;
        for c in statement.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        Cow::Owned(out)
    }
}

/// The api's storage: a pool, its dialect, the keys that seal `secretEnv` columns (the
/// rest of the api sees secret values in clear; the database never does), and the read cache
/// of app views its writes keep exact.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    keys: Arc<SealingKeys>,
    views: Arc<app_cache::AppCache>,
}

/// Whether `e` is a unique-constraint violation: the loser of a race on a unique row.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// How an insert that a unique row may refuse ended.
enum Inserted {
    New,
    Taken,
}

impl Store {
    /// Connects to `url` and applies the api's migrations; `keys` seal secret values.
    pub async fn connect(url: &str, keys: Arc<SealingKeys>) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::of(url)?;
        let url = match dialect {
            // `mariadb://` is how operators write it; the driver knows `mysql://`.
            Dialect::MySql => Cow::Owned(url.replacen("mariadb://", "mysql://", 1)),
            _ => Cow::Borrowed(url),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if dialect == Dialect::Sqlite { 4 } else { 16 })
            // With the database away, calls answer 503 within this instead of sqlx's 30 s.
            .acquire_timeout(std::time::Duration::from_secs(2))
            .connect(&url)
            .await?;
        let store = Self {
            pool,
            dialect,
            keys,
            views: Arc::default(),
        };
        migrate::run(&store).await?;
        Ok(store)
    }

    /// The database this store talks to.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    fn q<'a>(&self, statement: &'a str) -> Cow<'a, str> {
        self.dialect.sql(statement)
    }

    async fn execute(
        &self,
        statement: &str,
        bind: impl FnOnce(AnyQuery<'_>) -> AnyQuery<'_>,
    ) -> StoreResult<u64> {
        let sql = self.q(statement);
        Ok(bind(sqlx::query(&sql))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn insert(
        &self,
        statement: &str,
        bind: impl FnOnce(AnyQuery<'_>) -> AnyQuery<'_>,
    ) -> StoreResult<Inserted> {
        match self.execute(statement, bind).await {
            Ok(_) => Ok(Inserted::New),
            Err(StoreError::Database(e)) if is_unique_violation(&e) => Ok(Inserted::Taken),
            Err(e) => Err(e),
        }
    }

    async fn fetch_all<T>(
        &self,
        statement: &str,
        bind: impl FnOnce(AnyQuery<'_>) -> AnyQuery<'_>,
        read: impl Fn(&AnyRow) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let sql = self.q(statement);
        let rows = bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        rows.iter().map(read).collect()
    }

    async fn fetch_one<T>(
        &self,
        statement: &str,
        bind: impl FnOnce(AnyQuery<'_>) -> AnyQuery<'_>,
        read: impl Fn(&AnyRow) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        let sql = self.q(statement);
        let row = bind(sqlx::query(&sql)).fetch_optional(&self.pool).await?;
        row.as_ref().map(read).transpose()
    }

    async fn count(
        &self,
        statement: &str,
        bind: impl FnOnce(AnyQuery<'_>) -> AnyQuery<'_>,
    ) -> StoreResult<i64> {
        let sql = self.q(statement);
        let row = bind(sqlx::query(&sql)).fetch_one(&self.pool).await?;
        Ok(row.try_get::<i64, _>(0)?)
    }

    // ---- tenants ----

    /// Creates a tenant; `false` when the id is taken.
    pub async fn create_tenant(&self, t: &TenantRecord) -> StoreResult<bool> {
        let q = &t.quotas;
        let inserted = self
            .insert(sql::INSERT_TENANT, |s| {
                s.bind(t.tenant_id.clone())
                    .bind(t.name.clone())
                    .bind(i64::from(q.max_apps))
                    .bind(i64::from(q.max_concurrent_deploys))
                    .bind(i64::from(q.deploys_per_day))
                    .bind(i64::from(q.deploys_per_month))
                    .bind(i64::from(t.rate_limit_per_minute))
                    .bind(t.created_at)
                    .bind(t.updated_at)
            })
            .await?;
        Ok(matches!(inserted, Inserted::New))
    }

    /// Writes a tenant's name, quotas and rate limit.
    pub async fn update_tenant(&self, t: &TenantRecord) -> StoreResult<()> {
        let q = &t.quotas;
        self.execute(sql::UPDATE_TENANT, |s| {
            s.bind(t.name.clone())
                .bind(i64::from(q.max_apps))
                .bind(i64::from(q.max_concurrent_deploys))
                .bind(i64::from(q.deploys_per_day))
                .bind(i64::from(q.deploys_per_month))
                .bind(i64::from(t.rate_limit_per_minute))
                .bind(t.updated_at)
                .bind(t.tenant_id.clone())
        })
        .await?;
        Ok(())
    }

    /// One tenant.
    pub async fn tenant(&self, tenant_id: &str) -> StoreResult<Option<TenantRecord>> {
        let id = tenant_id.to_owned();
        self.fetch_one(&sql::select_tenant(), |s| s.bind(id), TenantRecord::read)
            .await
    }

    /// Every tenant, by id.
    pub async fn tenants(&self) -> StoreResult<Vec<TenantRecord>> {
        self.fetch_all(&sql::select_tenants(), |s| s, TenantRecord::read)
            .await
    }

    // ---- keys ----

    /// Stores a new key (its hash).
    pub async fn create_key(&self, k: &KeyRecord) -> StoreResult<()> {
        self.execute(sql::INSERT_KEY, |s| {
            s.bind(k.key_id.clone())
                .bind(k.tenant_id.clone())
                .bind(k.name.clone())
                .bind(k.key_hash.clone())
                .bind(k.created_at)
        })
        .await?;
        Ok(())
    }

    /// One key by id, whatever its tenant.
    pub async fn key(&self, key_id: &str) -> StoreResult<Option<KeyRecord>> {
        let id = key_id.to_owned();
        self.fetch_one(&sql::select_key(), |s| s.bind(id), KeyRecord::read)
            .await
    }

    /// A tenant's keys, oldest first.
    pub async fn keys(&self, tenant_id: &str) -> StoreResult<Vec<KeyRecord>> {
        let id = tenant_id.to_owned();
        self.fetch_all(&sql::select_keys(), |s| s.bind(id), KeyRecord::read)
            .await
    }

    /// Revokes a live key of a tenant; `false` when it has none by that id.
    pub async fn revoke_key(&self, tenant_id: &str, key_id: &str, now: i64) -> StoreResult<bool> {
        let (t, k) = (tenant_id.to_owned(), key_id.to_owned());
        let n = self
            .execute(sql::REVOKE_KEY, |s| s.bind(now).bind(t).bind(k))
            .await?;
        Ok(n == 1)
    }

    /// Writes the `lastUsedAt` of many keys (one statement each, one transaction).
    pub async fn touch_keys(&self, used: &[(String, i64)]) -> StoreResult<()> {
        let statement = self.q(sql::TOUCH_KEY);
        let mut tx = self.pool.begin().await?;
        for (key_id, at) in used {
            sqlx::query(&statement)
                .bind(*at)
                .bind(key_id.clone())
                .bind(*at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- apps ----

    /// Writes an app's desired spec: a new app when no tenant holds the id and the tenant is
    /// under `max_apps`, else a change of the tenant's own app.
    pub async fn put_app(&self, app: &AppRecord, max_apps: u32) -> StoreResult<PutApp> {
        let put = self.write_app(app, max_apps).await;
        self.views.forget(&app.tenant_id, &app.app_id);
        put
    }

    async fn write_app(&self, app: &AppRecord, max_apps: u32) -> StoreResult<PutApp> {
        let (spec, secrets) = (app.spec_json()?, app.secrets_sealed(&self.keys));
        let updated = self
            .execute(sql::UPDATE_APP, |s| {
                s.bind(spec.clone())
                    .bind(secrets.clone())
                    .bind(app.updated_at)
                    .bind(app.app_id.clone())
                    .bind(app.tenant_id.clone())
            })
            .await?;
        if updated == 1 {
            return Ok(PutApp::Updated);
        }
        if let Some(refused) = self.app_refusal(&app.app_id, &app.tenant_id).await? {
            return Ok(refused);
        }
        if self.app_count(&app.tenant_id).await? >= i64::from(max_apps) {
            return Ok(PutApp::OverQuota);
        }
        let inserted = self
            .insert(sql::INSERT_APP, |s| {
                s.bind(app.app_id.clone())
                    .bind(app.tenant_id.clone())
                    .bind(spec)
                    .bind(secrets)
                    .bind(app.created_at)
                    .bind(app.updated_at)
            })
            .await?;
        match inserted {
            Inserted::New => Ok(PutApp::Created),
            // Another call took the id between the update and the insert.
            Inserted::Taken => Ok(self
                .app_refusal(&app.app_id, &app.tenant_id)
                .await?
                .unwrap_or(PutApp::Updated)),
        }
    }

    /// Why an app id cannot be written by `tenant_id`, if it cannot.
    pub async fn app_refusal(&self, app_id: &str, tenant_id: &str) -> StoreResult<Option<PutApp>> {
        let id = app_id.to_owned();
        let holder = self
            .fetch_one(
                sql::APP_HOLDER,
                |s| s.bind(id),
                |r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)? != 0)),
            )
            .await?;
        Ok(match holder {
            Some((holder, _)) if holder != tenant_id => Some(PutApp::HeldByOther),
            Some((_, true)) => Some(PutApp::Deleting),
            _ => None,
        })
    }

    /// How many apps a tenant holds.
    pub async fn app_count(&self, tenant_id: &str) -> StoreResult<i64> {
        let id = tenant_id.to_owned();
        self.count(sql::COUNT_APPS, |s| s.bind(id)).await
    }

    /// One app of a tenant (another tenant's is `None`, like a missing one).
    pub async fn app(&self, tenant_id: &str, app_id: &str) -> StoreResult<Option<AppRecord>> {
        let (a, t) = (app_id.to_owned(), tenant_id.to_owned());
        let keys = &self.keys;
        self.fetch_one(
            &sql::select_app(),
            |s| s.bind(a).bind(t),
            |r| AppRecord::read(r, keys),
        )
        .await
    }

    /// A page of a tenant's apps after `after` (an app id; "" for the first page).
    pub async fn apps(
        &self,
        tenant_id: &str,
        after: &str,
        limit: u32,
    ) -> StoreResult<Vec<AppRecord>> {
        let (t, a) = (tenant_id.to_owned(), after.to_owned());
        self.fetch_all(
            &sql::select_apps(),
            |s| s.bind(t).bind(a).bind(i64::from(limit)),
            |r| AppRecord::read(r, &self.keys),
        )
        .await
    }

    /// Marks a tenant's app as being deleted.
    pub async fn mark_deleting(&self, tenant_id: &str, app_id: &str, now: i64) -> StoreResult<()> {
        let (a, t) = (app_id.to_owned(), tenant_id.to_owned());
        let marked = self
            .execute(sql::MARK_APP_DELETING, |s| s.bind(now).bind(a).bind(t))
            .await;
        self.views.forget(tenant_id, app_id);
        marked.map(drop)
    }

    /// Frees an app id and its instances (its delete deployment succeeded).
    pub async fn remove_app(&self, tenant_id: &str, app_id: &str) -> StoreResult<()> {
        let removed = self.delete_app_rows(tenant_id, app_id).await;
        self.views.forget(tenant_id, app_id);
        removed
    }

    async fn delete_app_rows(&self, tenant_id: &str, app_id: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // Both statements take (tenant, app).
        for statement in [sql::DELETE_INSTANCES, sql::DELETE_APP] {
            sqlx::query(&self.q(statement))
                .bind(tenant_id.to_owned())
                .bind(app_id.to_owned())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- templates ----

    /// Writes a template; `true` when it is new.
    pub async fn put_template(&self, tenant_id: &str, t: &TemplateRecord) -> StoreResult<bool> {
        let spec = json(&t.spec)?;
        let secrets = t.secrets_sealed(&self.keys);
        let updated = self
            .execute(sql::UPDATE_TEMPLATE, |s| {
                s.bind(spec.clone())
                    .bind(secrets.clone())
                    .bind(t.updated_at)
                    .bind(tenant_id.to_owned())
                    .bind(t.template_id.clone())
            })
            .await?;
        if updated == 1 {
            return Ok(false);
        }
        let inserted = self
            .insert(sql::INSERT_TEMPLATE, |s| {
                s.bind(tenant_id.to_owned())
                    .bind(t.template_id.clone())
                    .bind(spec)
                    .bind(secrets)
                    .bind(t.created_at)
                    .bind(t.updated_at)
            })
            .await?;
        Ok(matches!(inserted, Inserted::New))
    }

    /// One template of a tenant.
    pub async fn template(
        &self,
        tenant_id: &str,
        template_id: &str,
    ) -> StoreResult<Option<TemplateRecord>> {
        let (t, id) = (tenant_id.to_owned(), template_id.to_owned());
        self.fetch_one(
            sql::SELECT_TEMPLATE,
            |s| s.bind(t).bind(id),
            |r| TemplateRecord::read(r, &self.keys),
        )
        .await
    }

    // ---- deployments ----

    /// Records a new deployment, or returns the one its `Idempotency-Key` already made.
    pub async fn create_deployment(
        &self,
        d: &DeploymentRecord,
    ) -> StoreResult<Created<DeploymentRecord>> {
        let spec = json(&d.spec)?;
        let inserted = self
            .insert(sql::INSERT_DEPLOYMENT, |s| d.bind_all(s, spec))
            .await;
        self.views.forget(&d.tenant_id, &d.app_id);
        match inserted? {
            Inserted::New => Ok(Created::New(d.clone())),
            Inserted::Taken => {
                let existing = match &d.idempotency_key {
                    Some(key) => self.deployment_by_key(&d.tenant_id, &d.app_id, key).await?,
                    None => None,
                };
                existing.map(Created::Existing).ok_or_else(|| {
                    StoreError::Corrupt(format!("deployment {} exists twice", d.deployment_id))
                })
            }
        }
    }

    /// The deployment an app's `Idempotency-Key` made, if any.
    pub async fn deployment_by_key(
        &self,
        tenant_id: &str,
        app_id: &str,
        key: &str,
    ) -> StoreResult<Option<DeploymentRecord>> {
        let (t, a, k) = (tenant_id.to_owned(), app_id.to_owned(), key.to_owned());
        self.fetch_one(
            &sql::select_deployment_by_key(),
            |s| s.bind(t).bind(a).bind(k),
            DeploymentRecord::read,
        )
        .await
    }

    /// Copies a newer snapshot of the deployment's job (by `version`) into its row.
    pub async fn update_deployment(&self, d: &DeploymentRecord) -> StoreResult<()> {
        let updated = self
            .execute(sql::UPDATE_DEPLOYMENT, |s| {
                s.bind(d.job_id.clone())
                    .bind(d.state.as_str())
                    .bind(d.image.clone())
                    .bind(d.url.clone())
                    .bind(d.node_id.clone())
                    .bind(d.error.clone())
                    .bind(d.version)
                    .bind(d.finished_at)
                    .bind(d.deployment_id.clone())
                    .bind(d.version)
            })
            .await;
        self.views.forget(&d.tenant_id, &d.app_id);
        updated.map(drop)
    }

    /// One deployment of a tenant.
    pub async fn deployment(
        &self,
        tenant_id: &str,
        deployment_id: &str,
    ) -> StoreResult<Option<DeploymentRecord>> {
        let (d, t) = (deployment_id.to_owned(), tenant_id.to_owned());
        self.fetch_one(
            &sql::select_deployment(),
            |s| s.bind(d).bind(t),
            DeploymentRecord::read,
        )
        .await
    }

    /// A page of an app's deployments before `before` (a deployment id), newest first.
    pub async fn deployments(
        &self,
        tenant_id: &str,
        app_id: &str,
        before: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<DeploymentRecord>> {
        // Every UUID sorts below "g": no cursor means "from the newest".
        let (t, a, b) = (
            tenant_id.to_owned(),
            app_id.to_owned(),
            before.unwrap_or("g").to_owned(),
        );
        self.fetch_all(
            &sql::select_deployments(),
            |s| s.bind(t).bind(a).bind(b).bind(i64::from(limit)),
            DeploymentRecord::read,
        )
        .await
    }

    /// A tenant's app with its newest deployment, as `GET /v1/apps/{appId}` shows it: from the
    /// read cache when it holds a fresh entry, else from the tables (and then cached).
    pub async fn app_read(
        &self,
        tenant_id: &str,
        app_id: &str,
    ) -> StoreResult<Option<Arc<AppRead>>> {
        let generation = match self.views.get(tenant_id, app_id) {
            Ok(hit) => return Ok(Some(hit)),
            Err(generation) => generation,
        };
        let Some(app) = self.app(tenant_id, app_id).await? else {
            return Ok(None);
        };
        let latest = self.latest_deployment(tenant_id, app_id).await?;
        let read = Arc::new(AppRead::of(app, latest));
        self.views.put(tenant_id, Arc::clone(&read), generation);
        Ok(Some(read))
    }

    /// The app's newest deployment, if any.
    pub async fn latest_deployment(
        &self,
        tenant_id: &str,
        app_id: &str,
    ) -> StoreResult<Option<DeploymentRecord>> {
        Ok(self.deployments(tenant_id, app_id, None, 1).await?.pop())
    }

    /// Every deployment not yet final.
    pub async fn unfinished_deployments(&self) -> StoreResult<Vec<DeploymentRecord>> {
        self.fetch_all(&sql::select_unfinished(), |s| s, DeploymentRecord::read)
            .await
    }

    /// A tenant's deployments in flight.
    pub async fn in_flight(&self, tenant_id: &str) -> StoreResult<i64> {
        let t = tenant_id.to_owned();
        self.count(sql::COUNT_IN_FLIGHT, |s| s.bind(t)).await
    }

    /// A tenant's deployments created at or after `since`.
    pub async fn deployments_since(&self, tenant_id: &str, since: i64) -> StoreResult<i64> {
        let t = tenant_id.to_owned();
        self.count(sql::COUNT_SINCE, |s| s.bind(t).bind(since))
            .await
    }

    // ---- instances ----

    /// Creates an instance, its app and its first deployment in one transaction; when the slug
    /// is taken, the instance that holds it. The app id must be free (see [`Store::put_app`]).
    pub async fn create_instance(
        &self,
        instance: &InstanceRecord,
        app: &AppRecord,
        deployment: &DeploymentRecord,
    ) -> StoreResult<Created<InstanceRecord>> {
        let tenant = app.tenant_id.clone();
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(&self.q(sql::INSERT_INSTANCE))
            .bind(tenant.clone())
            .bind(instance.slug.clone())
            .bind(instance.template_id.clone())
            .bind(instance.app_id.clone())
            .bind(instance.deployment_id.clone())
            .bind(instance.created_at)
            .execute(&mut *tx)
            .await;
        match claimed {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                drop(tx);
                let winner = self.instance(&tenant, &instance.slug).await?;
                return winner.map(Created::Existing).ok_or_else(|| {
                    StoreError::Corrupt(format!("instance {} vanished", instance.slug))
                });
            }
            Err(e) => return Err(e.into()),
        }
        sqlx::query(&self.q(sql::INSERT_APP))
            .bind(app.app_id.clone())
            .bind(tenant)
            .bind(app.spec_json()?)
            .bind(app.secrets_sealed(&self.keys))
            .bind(app.created_at)
            .bind(app.updated_at)
            .execute(&mut *tx)
            .await?;
        let spec = json(&deployment.spec)?;
        deployment
            .bind_all(sqlx::query(&self.q(sql::INSERT_DEPLOYMENT)), spec)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.views.forget(&app.tenant_id, &app.app_id);
        Ok(Created::New(instance.clone()))
    }

    /// One instance of a tenant.
    pub async fn instance(
        &self,
        tenant_id: &str,
        slug: &str,
    ) -> StoreResult<Option<InstanceRecord>> {
        let (t, s2) = (tenant_id.to_owned(), slug.to_owned());
        self.fetch_one(
            sql::SELECT_INSTANCE,
            |s| s.bind(t).bind(s2),
            InstanceRecord::read,
        )
        .await
    }

    // ---- usage ----

    /// Appends a line to a tenant's usage log.
    pub async fn record_usage(&self, tenant_id: &str, u: &UsageRecord) -> StoreResult<()> {
        self.execute(sql::INSERT_USAGE, |s| {
            s.bind(tenant_id.to_owned())
                .bind(u.at)
                .bind(u.key_id.clone())
                .bind(u.action.clone())
                .bind(u.app_id.clone())
                .bind(u.deployment_id.clone())
                .bind(i64::from(u.status))
                .bind(u.detail.clone())
        })
        .await?;
        Ok(())
    }

    /// A page of a tenant's usage before `before` (a row id), newest first.
    pub async fn usage(
        &self,
        tenant_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<UsageRecord>> {
        let t = tenant_id.to_owned();
        self.fetch_all(
            sql::SELECT_USAGE,
            |s| {
                s.bind(t)
                    .bind(before.unwrap_or(i64::MAX))
                    .bind(i64::from(limit))
            },
            UsageRecord::read,
        )
        .await
    }
}

/// A query over the `Any` driver, as the helpers above bind it.
pub type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// How a create ended: a new row, or the row an earlier identical call made.
#[derive(Debug, Clone, PartialEq)]
pub enum Created<T> {
    /// This call created it.
    New(T),
    /// An earlier call did; this is its row.
    Existing(T),
}

/// How [`Store::put_app`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutApp {
    /// A new app (201).
    Created,
    /// The tenant's app, changed (200).
    Updated,
    /// Another tenant holds the id (409).
    HeldByOther,
    /// The app is being deleted; its id is not free yet (409).
    Deleting,
    /// The tenant holds `maxApps` apps already (403).
    OverQuota,
}

fn json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse_state(text: &str) -> StoreResult<JobState> {
    JobState::parse(text).ok_or_else(|| StoreError::Corrupt(format!("unknown state {text}")))
}

/// Spec (JSON text) and secrets (sealed for `owner`) as stored.
fn spec_and_secrets(
    row: &AnyRow,
    keys: &SealingKeys,
    owner: &str,
) -> StoreResult<(AppSpec, BTreeMap<String, String>)> {
    let sealed = SealedEnv::from_stored(records::text(row, "secret_env")?);
    let secrets = sealed
        .open(keys, owner)
        .map_err(|e| StoreError::Corrupt(format!("secretEnv of {owner}: {e}")))?;
    Ok((parse_json(&records::text(row, "spec")?)?, secrets))
}
