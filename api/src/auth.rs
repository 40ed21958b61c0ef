//! Who is calling: operators by `X-Admin-Token`, tenants by `Authorization: Bearer <key>`.
//!
//! A key's row (and its tenant's limits) is kept in memory for [`CACHE_TTL`], so most requests
//! cost one HMAC and no database read. Only the key's stored HMAC is kept, never the secret
//! that matched it: a process's memory (a core dump, swapped pages) holds no key a caller could
//! present. Revocation wins over the cache: a revoked id goes into a set every check consults
//! first, so a lookup that raced the revocation cannot bring the key back. (With several api
//! replicas, another replica's cache may accept the key for up to [`CACHE_TTL`].)
//! `lastUsedAt` is kept in memory and written in batches by [`Keys::flush`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use berth_shared::headers::ADMIN_TOKEN;
use berth_shared::sealed::SealingKeys;
use berth_shared::secret::Secret;

use crate::domain::keys;
use crate::domain::ratelimit::TokenBucket;
use crate::error::ApiError;
use crate::storage::{KeyRecord, Store, StoreResult, TenantRecord};

/// How long a key's row and its tenant stay cached.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// A tenant's key that passed the check, with its tenant's limits.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant (shared with the key cache: a clone per request costs a reference count).
    pub tenant: Arc<TenantRecord>,
    /// The key it used.
    pub key_id: String,
}

struct Cached {
    key: KeyRecord,
    tenant: Arc<TenantRecord>,
    at: Instant,
}

/// Key checks, their cache, `lastUsedAt` and the per-key rate limit.
#[derive(Clone)]
pub struct Keys {
    store: Store,
    server_key: Arc<SealingKeys>,
    cache: Arc<Mutex<HashMap<String, Arc<Cached>>>>,
    revoked: Arc<Mutex<HashSet<String>>>,
    used: Arc<Mutex<HashMap<String, i64>>>,
    buckets: Arc<Mutex<HashMap<String, TokenBucket>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unauthorized(detail: &str) -> ApiError {
    ApiError::Unauthorized(detail.to_owned())
}

/// Checks the operator's `X-Admin-Token`, in constant time.
pub fn check_admin(token: &Secret, headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(ADMIN_TOKEN) {
        None => Err(unauthorized("missing the X-Admin-Token header")),
        Some(v) if token.matches(v.as_bytes()) => Ok(()),
        Some(_) => Err(unauthorized("the X-Admin-Token header is not valid")),
    }
}

impl Keys {
    /// Key checks against `store`, hashing under `server_key`.
    pub fn new(store: Store, server_key: Arc<SealingKeys>) -> Self {
        Self {
            store,
            server_key,
            cache: Arc::default(),
            revoked: Arc::default(),
            used: Arc::default(),
            buckets: Arc::default(),
        }
    }

    /// The hash a new key's secret part is stored as.
    pub fn hash(&self, secret: &str) -> String {
        keys::hash(&self.server_key, secret)
    }

    /// The caller behind `Authorization: Bearer <key>`, or `401` saying what is wrong.
    pub async fn authenticate(&self, headers: &HeaderMap, now: i64) -> Result<Caller, ApiError> {
        let text = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing the Authorization: Bearer <key> header"))?
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("the Authorization header must be Bearer <key>"))?;
        let presented =
            keys::parse(text.trim()).ok_or_else(|| unauthorized("that API key is not valid"))?;
        if lock(&self.revoked).contains(presented.key_id) {
            return Err(unauthorized("that API key has been revoked"));
        }
        let cached = self.lookup(presented.key_id).await?;
        if !keys::verify(&self.server_key, presented.secret, &cached.key.key_hash) {
            return Err(unauthorized("that API key is not valid"));
        }
        let key = &cached.key;
        if key.revoked_at.is_some() {
            return Err(unauthorized("that API key has been revoked"));
        }
        let mut used = lock(&self.used);
        match used.get_mut(&key.key_id) {
            Some(at) => *at = now,
            None => {
                used.insert(key.key_id.clone(), now);
            }
        }
        drop(used);
        Ok(Caller {
            tenant: cached.tenant.clone(),
            key_id: key.key_id.clone(),
        })
    }

    async fn lookup(&self, key_id: &str) -> Result<Arc<Cached>, ApiError> {
        if let Some(c) = lock(&self.cache).get(key_id) {
            if c.at.elapsed() < CACHE_TTL {
                return Ok(c.clone());
            }
        }
        let key = self
            .store
            .key(key_id)
            .await?
            .ok_or_else(|| unauthorized("that API key is not valid"))?;
        let tenant = self
            .store
            .tenant(&key.tenant_id)
            .await?
            .ok_or_else(|| unauthorized("that API key's tenant no longer exists"))?;
        let cached = Arc::new(Cached {
            key,
            tenant: Arc::new(tenant),
            at: Instant::now(),
        });
        lock(&self.cache).insert(key_id.to_owned(), cached.clone());
        Ok(cached)
    }

    /// Revokes a key of `tenant_id`: refused from this moment on. `false` when there is none.
    pub async fn revoke(&self, tenant_id: &str, key_id: &str, now: i64) -> StoreResult<bool> {
        let revoked = self.store.revoke_key(tenant_id, key_id, now).await?;
        if revoked {
            lock(&self.revoked).insert(key_id.to_owned());
            lock(&self.cache).remove(key_id);
        }
        Ok(revoked)
    }

    /// Forgets every cached tenant, so changed quotas and limits apply to the next request.
    pub fn tenant_changed(&self) {
        lock(&self.cache).clear();
    }

    /// Takes a token from the key's bucket: `Err(seconds)` when it is empty.
    pub fn rate_limit(&self, caller: &Caller, now: i64) -> Result<(), u64> {
        let limit = caller.tenant.rate_limit_per_minute;
        let mut buckets = lock(&self.buckets);
        if let Some(bucket) = buckets.get_mut(&caller.key_id) {
            return bucket.take(limit, now);
        }
        buckets
            .entry(caller.key_id.clone())
            .or_insert_with(|| TokenBucket::full(limit, now))
            .take(limit, now)
    }

    /// The newest `lastUsedAt` of a key: the one in memory when it is newer than `stored`.
    pub fn last_used(&self, key_id: &str, stored: Option<i64>) -> Option<i64> {
        let live = lock(&self.used).get(key_id).copied();
        live.max(stored)
    }

    /// Writes the `lastUsedAt` of every key used since the last flush, in one transaction.
    pub async fn flush(&self) -> StoreResult<()> {
        let used: Vec<(String, i64)> = lock(&self.used).drain().collect();
        if used.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.store.touch_keys(&used).await {
            // Put them back (unless a newer use came in) for the next flush.
            let mut live = lock(&self.used);
            for (k, at) in used {
                let entry = live.entry(k).or_insert(at);
                *entry = (*entry).max(at);
            }
            return Err(e);
        }
        Ok(())
    }
}
