//! What every handler shares: the store, the settings, wake-ups, the claim queue, the watch,
//! the grant signer, the coalesced heartbeats and metrics.

use std::sync::Arc;

use berth_shared::grant::GrantSigner;

use crate::config::{EventSettings, Settings};
use crate::dispatch::batch::ClaimQueue;
use crate::metrics::Metrics;
use crate::queue::now_millis;
use crate::service::beats::Beats;
use crate::storage::Store;
use crate::wake::Wake;
use crate::watch::Watch;

/// Cheap to clone; one per process.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    settings: Settings,
    events: EventSettings,
    wake: Wake,
    metrics: Metrics,
    claims: ClaimQueue,
    watch: Watch,
    grants: GrantSigner,
    beats: Beats,
}

impl AppState {
    /// Builds the state around an opened store, with these event settings.
    pub fn with_events(store: Arc<dyn Store>, settings: Settings, events: EventSettings) -> Self {
        let metrics = Metrics::default();
        let watch = Watch::new(now_millis());
        let claims = ClaimQueue::new(
            store.clone(),
            settings.lease.as_millis() as i64,
            (
                settings.node_ttl.as_millis() as i64,
                settings.node_lost.as_millis() as i64,
            ),
            watch.clone(),
            metrics.claim_batch.clone(),
        );
        let grants = GrantSigner::new(&settings.secrets.secret_key);
        let beats = Beats::new(settings.node_ttl);
        Self {
            inner: Arc::new(Inner {
                grants,
                beats,
                store,
                settings,
                events,
                wake: Wake::default(),
                metrics,
                claims,
                watch,
            }),
        }
    }

    /// Signs the agent grants of claims and renews them (keys derived from
    /// `BERTH_SECRET_KEY`, so every replica signs alike).
    pub fn grants(&self) -> &GrantSigner {
        &self.inner.grants
    }

    /// This process's coalesced heartbeats and the node credentials it accepted.
    pub fn beats(&self) -> &Beats {
        &self.inner.beats
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The event settings.
    pub fn events(&self) -> &EventSettings {
        &self.inner.events
    }

    /// Wake-ups.
    pub fn wake(&self) -> &Wake {
        &self.inner.wake
    }

    /// The queue claims wait in for their batch.
    pub fn claims(&self) -> &ClaimQueue {
        &self.inner.claims
    }

    /// How long the control plane has watched leases and nodes without a break.
    pub fn watch(&self) -> &Watch {
        &self.inner.watch
    }

    /// Metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}
