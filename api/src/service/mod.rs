//! Between the routes and storage: every rule that needs I/O — quotas counted in the database,
//! the tenant's lock around a change, the call to the control plane — lives here, once.

pub mod apps;
pub mod deployments;
pub mod instances;
pub mod tenants;
pub mod usage;
pub mod views;

use berth_shared::wire::{AppRunState, JobState};

use crate::domain::deployment::{app_status, AppStatus, DeploymentKind};
use crate::storage::DeploymentRecord;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::auth::Keys;
use crate::config::Settings;
use crate::control::Control;
use crate::follow::Followers;
use crate::metrics::Metrics;
use crate::storage::Store;

/// Everything a handler needs, cheap to clone: one reference count, however many parts
/// (axum clones the state a few times per request: its routes, `State`, the middleware).
#[derive(Clone)]
pub struct Api(Arc<Services>);

impl std::ops::Deref for Api {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The parts of [`Api`], shared by all its clones.
pub struct Services {
    /// Validated settings.
    pub settings: Arc<Settings>,
    /// The api's tables.
    pub store: Store,
    /// The deploy API.
    pub control: Control,
    /// Key checks, `lastUsedAt` and rate limits.
    pub keys: Keys,
    /// One upstream follower per deployment in flight.
    pub followers: Followers,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    tenant_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Api {
    /// The service over `store` and the control plane named in `settings`.
    pub fn new(settings: Settings, store: Store) -> anyhow::Result<Self> {
        let control = Control::new(&settings.control_url, settings.deploy_secret.clone())?;
        let metrics = Arc::new(Metrics::default());
        let keys = Keys::new(store.clone(), settings.secret_key.clone());
        let followers = Followers::new(store.clone(), control.clone(), metrics.clone());
        Ok(Self(Arc::new(Services {
            settings: Arc::new(settings),
            store,
            control,
            keys,
            followers,
            metrics,
            tenant_locks: Mutex::default(),
        })))
    }

    /// Serialises a tenant's changes within this process, so quota counts and the checks
    /// before an insert see each other's results.
    pub async fn tenant_lock(&self, tenant_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.tenant_locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(tenant_id.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// The app's status from its newest deployment, `SLEEPING` when that deployment runs and
    /// the control plane's app run says it sleeps. Only an app whose spec sleeps when idle
    /// costs a call to the control plane; when that call fails, the app shows `RUNNING`.
    pub async fn status_of(&self, latest: Option<&DeploymentRecord>) -> AppStatus {
        let mut sleeping = false;
        if let (true, Some(d)) = (may_sleep(latest), latest) {
            match self.control.app_run(&d.app_id).await {
                Ok(run) => sleeping = run.is_some_and(|r| r.state == AppRunState::Sleeping),
                Err(e) => {
                    tracing::debug!(app_id = %d.app_id, error = %e, "app run unreadable; shown as running")
                }
            }
        }
        app_status(latest, sleeping)
    }
}

/// Whether an app whose newest deployment is `latest` may be sleeping: only then does its
/// status need the control plane's app run.
pub fn may_sleep(latest: Option<&DeploymentRecord>) -> bool {
    latest.is_some_and(|d| {
        d.kind == DeploymentKind::Deploy
            && d.state == JobState::Succeeded
            && d.spec.sleep_after_secs.is_some()
    })
}

/// Now, in milliseconds since the epoch.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `?limit=&cursor=` of every list.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Items per page (1 to 200; 50).
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// Most items per page.
pub const MAX_PAGE: u32 = 200;

impl PageQuery {
    /// The page size, checked.
    pub fn limit(&self) -> Result<u32, crate::error::ApiError> {
        match self.limit {
            None => Ok(50),
            Some(n @ 1..=MAX_PAGE) => Ok(n),
            Some(_) => Err(crate::error::ApiError::BadRequest(format!(
                "limit must be between 1 and {MAX_PAGE}"
            ))),
        }
    }
}
