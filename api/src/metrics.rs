//! `GET /metrics`: Prometheus text of the api's counters and gauges (no secrets, no tenant ids).

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// The api's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Deployments asked of the control plane, by kind.
    pub deployments: Family<Labels, Counter>,
    /// Deployments that reached a final state, by state.
    pub deployments_finished: Family<Labels, Counter>,
    /// Requests refused by a limit, by which (`rate`, `maxApps`, …).
    pub refusals: Family<Labels, Counter>,
    /// Upstream `?wait` loops running: one per deployment in flight, however many watch it.
    pub upstream_follows: Gauge,
    /// Local watchers (long polls and event streams) waiting right now.
    pub watchers: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("berth_api");
        let deployments = Family::<Labels, Counter>::default();
        let deployments_finished = Family::<Labels, Counter>::default();
        let refusals = Family::<Labels, Counter>::default();
        let upstream_follows = Gauge::default();
        let watchers = Gauge::default();
        registry.register(
            "deployments",
            "Deployments asked of the control plane",
            deployments.clone(),
        );
        registry.register(
            "deployments_finished",
            "Deployments that reached a final state",
            deployments_finished.clone(),
        );
        registry.register(
            "refusals",
            "Requests refused by a rate limit or quota",
            refusals.clone(),
        );
        registry.register(
            "upstream_follows",
            "Upstream long polls running, one per deployment in flight",
            upstream_follows.clone(),
        );
        registry.register(
            "watchers",
            "Local long polls and event streams waiting",
            watchers.clone(),
        );
        Self {
            registry,
            deployments,
            deployments_finished,
            refusals,
            upstream_follows,
            watchers,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        berth_shared::metrics::render(&self.registry)
    }

    /// The `GET /metrics` answer.
    pub fn answer(&self) -> axum::response::Response {
        berth_shared::metrics::answer(&self.registry)
    }

    /// Counts a refusal by the limit it names.
    pub fn refused(&self, limit: &'static str) {
        self.refusals.get_or_create(&vec![("limit", limit)]).inc();
    }
}

/// Counts one watcher while it lives (it moves into the streams it counts).
pub struct Watching(Arc<Metrics>);

impl Watching {
    /// Starts counting.
    pub fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.watchers.inc();
        Self(metrics.clone())
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.watchers.dec();
    }
}
