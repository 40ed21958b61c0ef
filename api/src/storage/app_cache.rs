//! A read cache of apps as `GET /v1/apps/{appId}` shows them — the app's row and its newest
//! deployment — so that the hot read of a portal's status spinner costs no database round trip.
//!
//! In one process it is exact: every write of an app or a deployment goes through
//! [`super::Store`], which forgets the entry it changed once the write is done, and a read that
//! raced a write (it began before the write and ends after it) does not put back what it read:
//! each entry is stored only if no write happened since its read began (a generation counter).
//! Across api processes on one database it is bounded-stale: another process's write is seen
//! within [`TTL`] (docs/api.md). Only reads use it; every write reads the tables.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use std::time::{Duration, Instant};

use super::{AppRecord, DeploymentRecord};
use crate::domain::spec::AppSpec;

/// How long an entry is served: the most another api process's write can stay unseen.
pub const TTL: Duration = Duration::from_secs(1);
/// Entries kept at most; past it, expired ones go, and if none had, all of them.
const CAPACITY: usize = 10_000;

/// An app as its view shows it: the row without secret values, and its newest deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct AppRead {
    /// The app id.
    pub app_id: String,
    /// Its desired spec (no secret values).
    pub spec: AppSpec,
    /// Names of its secret environment variables (the values are never cached).
    pub secret_env_names: Vec<String>,
    /// Being deleted.
    pub deleting: bool,
    /// When it was created.
    pub created_at: i64,
    /// When its spec last changed.
    pub updated_at: i64,
    /// Its newest deployment, if any.
    pub latest: Option<DeploymentRecord>,
    /// Its view as JSON, made by the first read that needed it when the view depends on
    /// nothing but this entry (`crate::service::Api::app`), then shared by every read of it.
    pub view_json: OnceLock<Bytes>,
}

impl AppRead {
    /// What the view shows of `app` and its newest deployment `latest`.
    pub fn of(app: AppRecord, latest: Option<DeploymentRecord>) -> Self {
        Self {
            secret_env_names: app.secret_env.into_keys().collect(),
            app_id: app.app_id,
            spec: app.spec,
            deleting: app.deleting,
            created_at: app.created_at,
            updated_at: app.updated_at,
            latest,
            view_json: OnceLock::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<(String, String), (Arc<AppRead>, Instant)>,
    /// Moves on every write: a read that began at another generation is not stored.
    generation: u64,
}

/// The cache, keyed by (tenant, app): another tenant's lookup never finds an entry.
#[derive(Debug, Default)]
pub(super) struct AppCache {
    inner: Mutex<Inner>,
}

impl AppCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fresh entry of (`tenant_id`, `app_id`), or on a miss the generation to pass to
    /// [`AppCache::put`] once the tables were read.
    pub(super) fn get(&self, tenant_id: &str, app_id: &str) -> Result<Arc<AppRead>, u64> {
        let inner = self.lock();
        let key = (tenant_id.to_owned(), app_id.to_owned());
        match inner.entries.get(&key) {
            Some((read, at)) if at.elapsed() < TTL => Ok(Arc::clone(read)),
            _ => Err(inner.generation),
        }
    }

    /// Stores what a read that began at `generation` found, unless a write came since.
    pub(super) fn put(&self, tenant_id: &str, read: Arc<AppRead>, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= CAPACITY {
            inner.entries.retain(|_, (_, at)| at.elapsed() < TTL);
            if inner.entries.len() >= CAPACITY {
                inner.entries.clear();
            }
        }
        let key = (tenant_id.to_owned(), read.app_id.clone());
        inner.entries.insert(key, (read, Instant::now()));
    }

    /// Forgets (`tenant_id`, `app_id`) after a write of its app or of one of its deployments.
    pub(super) fn forget(&self, tenant_id: &str, app_id: &str) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner
            .entries
            .remove(&(tenant_id.to_owned(), app_id.to_owned()));
    }
}
