//! Idle claims: what runners long-polling an empty queue cost the database, beside the same
//! control plane with no runner waiting (its background sweeps alone), in one run; and, with
//! the same runners waiting, the time from a job's creation to one of them holding it (the
//! waiting claims must still be woken at once).
//!
//! ```sh
//! cargo bench -p berth-control --bench idle
//! BERTH_BENCH_WAITERS=0,200,1000,2000 BERTH_BENCH_SECS=20 cargo bench -p berth-control --bench idle
//! ```
//! Needs PostgreSQL on 127.0.0.1 as `scripts/ensure-services.sh` leaves it. Transactions are
//! read from `pg_stat_database` for the bench's own database (the reads themselves subtracted).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_control::config::EventSettings;
use berth_control::state::AppState;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use support::{
    drop_db, env_usize, fresh_db, heartbeat, replica, transactions, DEPLOY_SECRET, RUNNER_TOKEN,
};
use tokio::sync::mpsc;

/// Seconds each runner's claim waits, as a runner's default (`BERTH_RUNNER_CLAIM_WAIT_SECS`).
const CLAIM_WAIT: u64 = 20;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let waiters: Vec<usize> = std::env::var("BERTH_BENCH_WAITERS")
        .unwrap_or_else(|_| "0,200,1000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let secs = env_usize("BERTH_BENCH_SECS", 10) as u64;
    let samples = env_usize("BERTH_BENCH_DISPATCH_SAMPLES", 20);
    let (url, name) = fresh_db().await?;
    let (base, state) = replica(&url, EventSettings::default()).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .build()?;
    heartbeat(&client, &base).await?;
    let mut stats = PgConnection::connect(&url).await?;

    println!("Idle claims on PostgreSQL: database transactions/s over {secs} s, runners long-polling an empty queue (wait {CLAIM_WAIT} s)");
    println!("  waiting claims   transactions/s   per waiting claim   dispatch p50 / p99 (ms, {samples} jobs)");
    let mut baseline = None;
    for (phase, &n) in waiters.iter().enumerate() {
        let (found, runners) = start_runners(&client, &base, n, phase);
        until_waiting(&state, n).await;
        // Let the arrivals' first looks settle before counting.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = transactions(&mut stats, &name).await?;
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let after = transactions(&mut stats, &name).await?;
        // Each read of the statistics is two transactions of its own.
        let rate = (after - before - 2).max(0) as f64 / started.elapsed().as_secs_f64();
        let base_rate = *baseline.get_or_insert(rate);
        let dispatch = if n > 0 {
            let (p50, p99) = dispatch(&client, &base, found, samples, phase).await?;
            format!("{p50:.2} / {p99:.2}")
        } else {
            "-".into()
        };
        let per = if n > 0 {
            format!("{:.4}", (rate - base_rate).max(0.0) / n as f64)
        } else {
            "-".into()
        };
        println!("  {n:>14}   {rate:>14.1}   {per:>17}   {dispatch}");
        for runner in runners {
            runner.abort();
        }
        until_waiting(&state, 0).await;
    }
    drop(stats);
    drop_db(&name).await;
    Ok(())
}

/// `n` runners, each claiming again as soon as its claim returns; every job one of them gets
/// is sent on the channel with the moment it arrived.
fn start_runners(
    client: &reqwest::Client,
    base: &str,
    n: usize,
    phase: usize,
) -> (
    mpsc::UnboundedReceiver<Instant>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let url = Arc::new(format!("{base}/runner/jobs/claim"));
    let runners = (0..n)
        .map(|i| {
            let (client, url, tx) = (client.clone(), url.clone(), tx.clone());
            tokio::spawn(async move {
                let body = json!({ "runnerId": format!("idle-{phase}-{i}"), "wait": CLAIM_WAIT });
                loop {
                    let res = client
                        .post(url.as_str())
                        .header("X-Runner-Token", RUNNER_TOKEN)
                        .json(&body)
                        .send()
                        .await;
                    match res {
                        Ok(res) if res.status() == 200 => {
                            let _ = tx.send(Instant::now());
                        }
                        Ok(_) => {}
                        Err(e) => {
                            eprintln!("claim failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            })
        })
        .collect();
    (rx, runners)
}

/// Waits until `n` claims wait in their long poll (the `berth_claims_waiting` gauge).
async fn until_waiting(state: &AppState, n: usize) {
    while state.metrics().claims_waiting.get() != n as i64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// p50 and p99 (ms) from a job's creation to a waiting runner holding it.
async fn dispatch(
    client: &reqwest::Client,
    base: &str,
    mut found: mpsc::UnboundedReceiver<Instant>,
    samples: usize,
    phase: usize,
) -> anyhow::Result<(f64, f64)> {
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let created = Instant::now();
        let res = client
            .post(format!("{base}/deploy/jobs"))
            .header("X-DEPLOY-SECRET", DEPLOY_SECRET)
            .json(&json!({ "appId": format!("idle-{phase}-{i}"), "image": "img:1" }))
            .send()
            .await?;
        anyhow::ensure!(res.status() == 201, "create: {}", res.status());
        let got = found
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("the runners stopped"))?;
        times.push(got.saturating_duration_since(created).as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    Ok((at(0.50), at(0.99)))
}
