//! One lock per app: deploys, stops, sleeps and wakes of one app run one at a time.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

/// The per-app locks, created on first use.
#[derive(Debug, Default)]
pub struct AppLocks {
    locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl AppLocks {
    /// Waits for the app's lock; it is held until the guard drops.
    pub async fn lock(&self, app_id: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(app_id.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }
}
