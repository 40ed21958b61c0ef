//! The runner's Prometheus metrics and the small HTTP server that shows them
//! (`GET /metrics`, `GET /internal/health`, both open, on `BERTH_RUNNER_METRICS_ADDR`).
//!
//! What a fleet operator watches: claims by outcome, jobs by outcome, how long builds and agent
//! deploys take, and failed calls to the control plane and to agents (each failed attempt,
//! retried or not, so a flapping agent shows before its jobs fail).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use berth_shared::metrics::{outcome_counter as outcome, Outcome};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A label set naming who a call went to.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Target {
    target: &'static str,
}

/// Every metric one runner keeps; each field is resolved once, so the hot path bumps an atomic.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Claims that brought a job.
    pub claims_job: Counter,
    /// Claims whose long poll ended with nothing to do.
    pub claims_empty: Counter,
    /// Claims that failed (control plane unreachable or refusing).
    pub claims_failed: Counter,
    /// Jobs reported `SUCCEEDED`.
    pub jobs_succeeded: Counter,
    /// Jobs reported `FAILED`.
    pub jobs_failed: Counter,
    /// Jobs stopped without a report: the lease was lost, or the shutdown grace ran out.
    pub jobs_abandoned: Counter,
    /// Jobs being worked on now.
    pub jobs_running: Gauge,
    /// Seconds of a clone + build + push.
    pub build_seconds: Histogram,
    /// Seconds of an agent deploy call (until the app is ready).
    pub deploy_seconds: Histogram,
    /// Failed attempts of calls to the control plane.
    pub control_errors: Counter,
    /// Failed attempts of calls to runtime agents.
    pub agent_errors: Counter,
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
        let claims = Family::<Outcome, Counter>::default();
        registry.register("berth_runner_claims", "Claims by outcome", claims.clone());
        let jobs = Family::<Outcome, Counter>::default();
        registry.register(
            "berth_runner_jobs",
            "Jobs by how they ended here (succeeded, failed, abandoned)",
            jobs.clone(),
        );
        let jobs_running = Gauge::default();
        registry.register(
            "berth_runner_jobs_running",
            "Jobs this runner works on now",
            jobs_running.clone(),
        );
        let build_seconds = Histogram::new(exponential_buckets(0.5, 2.0, 12));
        registry.register(
            "berth_runner_build_seconds",
            "Time of a clone, build and push",
            build_seconds.clone(),
        );
        let deploy_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        registry.register(
            "berth_runner_deploy_seconds",
            "Time of an agent deploy call, until the app is ready",
            deploy_seconds.clone(),
        );
        let errors = Family::<Target, Counter>::default();
        registry.register(
            "berth_runner_call_errors",
            "Failed call attempts by target (control, agent)",
            errors.clone(),
        );
        let target = |target| errors.get_or_create(&Target { target }).clone();
        Self {
            claims_job: outcome(&claims, "job"),
            claims_empty: outcome(&claims, "empty"),
            claims_failed: outcome(&claims, "failed"),
            jobs_succeeded: outcome(&jobs, "succeeded"),
            jobs_failed: outcome(&jobs, "failed"),
            jobs_abandoned: outcome(&jobs, "abandoned"),
            jobs_running,
            build_seconds,
            deploy_seconds,
            control_errors: target("control"),
            agent_errors: target("agent"),
            registry,
        }
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

/// Serves `/metrics` and `/internal/health` on `addr` until `shutdown`; returns the bound
/// address (port 0 picks a free one) once listening, and the server's task.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on BERTH_RUNNER_METRICS_ADDR {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(move || async move { metrics.answer() }))
        .route(
            "/internal/health",
            get(|| async {
                axum::Json(serde_json::json!({
                    "status": "ok", "service": "berth-runner", "version": env!("CARGO_PKG_VERSION")
                }))
            }),
        );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app.into_make_service())
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_rendered_with_its_labels() {
        let m = Metrics::new();
        m.claims_job.inc();
        m.agent_errors.inc();
        m.build_seconds.observe(3.0);
        let text = m.render();
        for line in [
            "berth_runner_claims_total{outcome=\"job\"} 1",
            "berth_runner_claims_total{outcome=\"empty\"} 0",
            "berth_runner_jobs_total{outcome=\"abandoned\"} 0",
            "berth_runner_call_errors_total{target=\"agent\"} 1",
            "berth_runner_call_errors_total{target=\"control\"} 0",
            "berth_runner_build_seconds_count 1",
            "berth_runner_jobs_running 0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
