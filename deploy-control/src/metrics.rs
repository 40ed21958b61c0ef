//! `GET /metrics`: Prometheus text. Counters are kept as things happen; job and node gauges
//! are read from storage at scrape time, so every replica reports the same truth.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// The control plane's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Jobs handed to runners.
    pub claims: Counter,
    /// Seconds a successful claim request waited for its job (0 when one was ready).
    pub claim_wait: Histogram,
    /// Claim requests waiting in their long poll now (tests wait on it before they act).
    pub claims_waiting: Gauge,
    /// Claims served by each claim transaction (see [`crate::dispatch::batch`]).
    pub claim_batch: Histogram,
    /// Node heartbeats received.
    pub node_heartbeats: Counter,
    /// Node heartbeats answered from memory, their last-seen written by a later flush
    /// ([`crate::service::beats`]).
    pub node_heartbeats_coalesced: Counter,
    /// Outbox events the relay published and the broker confirmed.
    pub events_published: Counter,
    /// Relay passes that failed (broker or database); the relay reconnects and retries.
    pub relay_errors: Counter,
    /// Jobs by state, set at scrape time.
    jobs: Family<Labels, Gauge>,
    /// Nodes by state, set at scrape time.
    nodes: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("berth");
        let claims = Counter::default();
        let claim_wait = Histogram::new(exponential_buckets(0.0005, 2.0, 18));
        let claims_waiting = Gauge::default();
        let claim_batch = Histogram::new(exponential_buckets(1.0, 2.0, 6));
        let node_heartbeats = Counter::default();
        let node_heartbeats_coalesced = Counter::default();
        let events_published = Counter::default();
        let relay_errors = Counter::default();
        let jobs = Family::<Labels, Gauge>::default();
        let nodes = Family::<Labels, Gauge>::default();
        registry.register("claims", "Jobs handed to runners", claims.clone());
        registry.register(
            "claim_wait_seconds",
            "Time a successful claim waited for its job",
            claim_wait.clone(),
        );
        registry.register(
            "claims_waiting",
            "Claim requests waiting for a job now",
            claims_waiting.clone(),
        );
        registry.register(
            "claim_batch_size",
            "Claims served together by one claim transaction",
            claim_batch.clone(),
        );
        registry.register(
            "node_heartbeats",
            "Node heartbeats received",
            node_heartbeats.clone(),
        );
        registry.register(
            "node_heartbeats_coalesced",
            "Node heartbeats answered from memory and written by a later batch flush",
            node_heartbeats_coalesced.clone(),
        );
        registry.register(
            "events_published",
            "Outbox events published to RabbitMQ and confirmed",
            events_published.clone(),
        );
        registry.register(
            "relay_errors",
            "Outbox relay passes that failed",
            relay_errors.clone(),
        );
        registry.register("jobs", "Jobs by state", jobs.clone());
        registry.register("nodes", "Runtime nodes by state", nodes.clone());
        Self {
            registry,
            claims,
            claim_wait,
            claims_waiting,
            claim_batch,
            node_heartbeats,
            node_heartbeats_coalesced,
            events_published,
            relay_errors,
            jobs,
            nodes,
        }
    }
}

impl Metrics {
    /// Sets the number of jobs in `state`.
    pub fn set_jobs(&self, state: &'static str, count: i64) {
        self.jobs.get_or_create(&vec![("state", state)]).set(count);
    }

    /// Sets the number of nodes in `state`.
    pub fn set_nodes(&self, state: &'static str, count: i64) {
        self.nodes.get_or_create(&vec![("state", state)]).set(count);
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
