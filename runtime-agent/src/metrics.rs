//! Prometheus metrics (`GET /metrics`): counters the hot path bumps without locks.

use berth_shared::metrics::{outcome_counter as get, Outcome};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Every metric the agent and its gateway keep.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Deploys that made an app ready.
    pub deploys_ok: Counter,
    /// Deploys that failed.
    pub deploys_failed: Counter,
    /// Deploys refused because a newer job of the app has replaced theirs (stale requests).
    pub deploys_stale: Counter,
    /// Seconds from a deploy request to the app being routed.
    pub deploy_seconds: Histogram,
    /// Stop calls.
    pub stops: Counter,
    /// Containers removed because the control plane settled their app elsewhere (SPEC §8).
    pub displaced: Counter,
    /// Apps routed now.
    pub apps: Gauge,
    /// Gateway answers by status class, resolved once so a request bumps an atomic only.
    pub gateway: [Counter; 5],
    /// Sleeping apps woken and ready (`berth_agent_wakes_total{outcome="ok"}`).
    pub wakes_ok: Counter,
    /// Wakes that failed: the container did not start or become ready in time.
    pub wakes_failed: Counter,
    /// Seconds from the first request of a sleeping app to it being ready and routed.
    pub wake_seconds: Histogram,
    /// Apps put to sleep after their idle time.
    pub sleeps: Counter,
    /// Apps asleep (or waking) now.
    pub apps_sleeping: Gauge,
    /// Heartbeats the control plane accepted.
    pub heartbeats_ok: Counter,
    /// Heartbeats that failed.
    pub heartbeats_failed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let deploys = Family::<Outcome, Counter>::default();
        registry.register("berth_agent_deploys", "Deploys by outcome", deploys.clone());
        let deploy_seconds = Histogram::new(exponential_buckets(0.1, 2.0, 10));
        registry.register(
            "berth_agent_deploy_seconds",
            "Time from a deploy request to the app being routed",
            deploy_seconds.clone(),
        );
        let stops = Counter::default();
        registry.register("berth_agent_stops", "Stop calls", stops.clone());
        let displaced = Counter::default();
        registry.register(
            "berth_agent_displaced",
            "Containers removed because the control plane settled their app on another node or stopped it",
            displaced.clone(),
        );
        let apps = Gauge::default();
        registry.register("berth_agent_apps", "Apps routed by this node", apps.clone());
        let gateway = Family::<Outcome, Counter>::default();
        registry.register(
            "berth_gateway_responses",
            "Gateway answers by status class",
            gateway.clone(),
        );
        let wakes = Family::<Outcome, Counter>::default();
        registry.register(
            "berth_agent_wakes",
            "Wakes of sleeping apps by outcome",
            wakes.clone(),
        );
        let wake_seconds = Histogram::new(exponential_buckets(0.025, 2.0, 12));
        registry.register(
            "berth_agent_wake_seconds",
            "Time from the first request of a sleeping app to it being ready and routed",
            wake_seconds.clone(),
        );
        let sleeps = Counter::default();
        registry.register(
            "berth_agent_sleeps",
            "Apps put to sleep after their idle time",
            sleeps.clone(),
        );
        let apps_sleeping = Gauge::default();
        registry.register(
            "berth_agent_apps_sleeping",
            "Apps asleep or waking now",
            apps_sleeping.clone(),
        );
        let heartbeats = Family::<Outcome, Counter>::default();
        registry.register(
            "berth_agent_heartbeats",
            "Heartbeats by outcome",
            heartbeats.clone(),
        );
        Self {
            deploys_ok: get(&deploys, "succeeded"),
            deploys_failed: get(&deploys, "failed"),
            deploys_stale: get(&deploys, "stale"),
            deploy_seconds,
            stops,
            displaced,
            apps,
            gateway: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| get(&gateway, class)),
            wakes_ok: get(&wakes, "ok"),
            wakes_failed: get(&wakes, "failed"),
            wake_seconds,
            sleeps,
            apps_sleeping,
            heartbeats_ok: get(&heartbeats, "ok"),
            heartbeats_failed: get(&heartbeats, "failed"),
            registry,
        }
    }

    /// Counts one gateway answer.
    pub fn gateway_response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.gateway[class].inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        berth_shared::metrics::render(&self.registry)
    }

    /// The `GET /metrics` answer.
    pub fn answer(&self) -> axum::response::Response {
        berth_shared::metrics::answer(&self.registry)
    }
}
