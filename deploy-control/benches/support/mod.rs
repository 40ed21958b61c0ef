//! What the control plane's benchmarks share: a fresh PostgreSQL database, a replica of the
//! real control plane serving on 127.0.0.1, a node to place on, and the role secrets.

#![allow(dead_code)] // Each bench uses its own part.

pub mod child;

use std::time::Duration;

use anyhow::Context;
pub use berth_control::config::test_secrets::{
    ADMIN_TOKEN, DEPLOY_SECRET, NODE_JOIN_TOKEN, RUNNER_TOKEN,
};
use berth_control::config::{EventSettings, Settings};
use berth_control::queue::retry::RetryPolicy;
use berth_control::startup::Application;
use berth_control::state::AppState;
use serde_json::json;
use sqlx::Connection;

pub const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// An integer knob from the environment.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Settings for a bench replica on `url`: long leases and TTLs, so only the bench acts, and
/// the flags' retry rules (5 s doubling to 300 s).
pub fn settings(url: &str) -> Settings {
    Settings {
        lease: Duration::from_secs(300),
        retry: RetryPolicy {
            max_attempts: 3,
            base_ms: 5000,
            cap_ms: 300_000,
        },
        node_ttl: Duration::from_secs(3600),
        node_lost: Duration::from_secs(3600),
        sweep_interval: Duration::from_secs(1),
        ..Settings::for_tests(url)
    }
}

/// Creates an empty database; its URL and name.
pub async fn fresh_db() -> anyhow::Result<(String, String)> {
    let name = format!("berth_bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(ADMIN)
        .await
        .context("PostgreSQL is not reachable at 127.0.0.1:5432; run scripts/ensure-services.sh")?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    Ok((format!("postgres://postgres@127.0.0.1:5432/{name}"), name))
}

/// Drops the database `name`, connections and all.
pub async fn drop_db(name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(ADMIN).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

/// A replica serving on 127.0.0.1:0; returns its base URL and state.
pub async fn replica(url: &str, events: EventSettings) -> anyhow::Result<(String, AppState)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app = Application::build_with_events(settings(url), events, listener).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    tokio::spawn(app.run(std::future::pending()));
    Ok((base, state))
}

/// Joins node `node_id` with `join_token` (SPEC §7); its credential.
pub async fn join(
    client: &reqwest::Client,
    base: &str,
    join_token: &str,
    node_id: &str,
) -> anyhow::Result<String> {
    let res = client
        .post(format!("{base}/internal/runtime-nodes/join"))
        .header("X-RT-Join-Token", join_token)
        .json(&json!({ "nodeId": node_id }))
        .send()
        .await?;
    anyhow::ensure!(res.status() == 201, "join: {}", res.status());
    let joined: serde_json::Value = res.json().await?;
    joined["credential"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("join: no credential"))
}

/// Joins and announces one roomy node, so jobs can be placed.
pub async fn heartbeat(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    node(client, base, "bench-node").await
}

/// Joins node `node_id` and announces it once, roomy and with no apps.
pub async fn node(client: &reqwest::Client, base: &str, node_id: &str) -> anyhow::Result<()> {
    let credential = join(client, base, NODE_JOIN_TOKEN, node_id).await?;
    let res = client
        .post(format!("{base}/internal/runtime-nodes/heartbeat"))
        .header("X-RT-Node-Token", credential)
        .json(&json!({
            "nodeId": node_id, "name": node_id,
            "agentBaseUrl": "http://127.0.0.1:1", "gatewayBaseUrl": "http://127.0.0.1:2",
            "labels": {}, "capacity": { "cpus": 64.0, "memoryMb": 1_000_000, "maxApps": 100_000 },
            "apps": [], "version": "bench"
        }))
        .send()
        .await?;
    anyhow::ensure!(res.status() == 200, "heartbeat: {}", res.status());
    Ok(())
}

/// Reports the job of `claim` (a claim's answer) `SUCCEEDED` as runner `runner_id`.
pub async fn report_success(
    client: &reqwest::Client,
    base: &str,
    runner_id: &str,
    claim: &serde_json::Value,
) -> reqwest::Result<reqwest::Response> {
    let job_id = claim["job"]["jobId"].as_str().unwrap_or_default();
    client
        .post(format!("{base}/runner/jobs/{job_id}/report"))
        .header("X-Runner-Token", RUNNER_TOKEN)
        .json(&json!({
            "runnerId": runner_id, "leaseToken": claim["lease"]["token"],
            "outcome": "SUCCEEDED",
        }))
        .send()
        .await
}

/// Committed and rolled-back transactions of database `name` so far, as PostgreSQL's
/// statistics say (each call is two transactions of its own; idle backends report theirs up to
/// 10 s late).
pub async fn transactions(conn: &mut sqlx::PgConnection, name: &str) -> anyhow::Result<i64> {
    // Statistics are read from a snapshot taken once per transaction: drop it first.
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = $1",
    )
    .bind(name)
    .fetch_one(&mut *conn)
    .await?;
    Ok(n)
}

/// The 50th and 99th percentiles of `values` (sorted in place).
pub fn percentiles(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    (quantile(values, 0.50), quantile(values, 0.99))
}

/// The quantile `q` (0 to 1) of `sorted`; zero when it is empty.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

/// Latencies (ms) gathered from many tasks, read as quantiles at the end of a phase.
#[derive(Debug, Default)]
pub struct Samples(std::sync::Mutex<Vec<f64>>);

impl Samples {
    /// Records one latency in milliseconds.
    pub fn push(&self, ms: f64) {
        if let Ok(mut v) = self.0.lock() {
            v.push(ms);
        }
    }

    /// How many were recorded.
    pub fn len(&self) -> usize {
        self.0.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// The quantiles `qs` (0 to 1) of what was recorded; zeros when nothing was.
    pub fn quantiles<const N: usize>(&self, qs: [f64; N]) -> [f64; N] {
        let mut v = self.0.lock().map(|v| v.clone()).unwrap_or_default();
        v.sort_by(f64::total_cmp);
        qs.map(|q| quantile(&v, q))
    }
}

/// Milliseconds since `since`.
pub fn ms_since(since: std::time::Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}
