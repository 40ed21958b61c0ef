//! What every handler shares: the store, the settings, wake-ups and metrics.

use std::sync::Arc;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::storage::Store;
use crate::wake::Wake;

/// Cheap to clone; one per process.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    settings: Settings,
    wake: Wake,
    metrics: Metrics,
}

impl AppState {
    /// Builds the state around an opened store.
    pub fn new(store: Arc<dyn Store>, settings: Settings) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                settings,
                wake: Wake::default(),
                metrics: Metrics::default(),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Wake-ups.
    pub fn wake(&self) -> &Wake {
        &self.inner.wake
    }

    /// Metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}
