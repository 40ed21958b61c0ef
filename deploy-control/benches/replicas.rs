//! Claims through several control-plane replicas on one PostgreSQL database: the same runners
//! draining the same queue through 1, 2 and 3 replicas, in one run, each figure beside the one
//! replica's (the baseline). Replicas share only the database, so what more replicas can cost is
//! contention on the queue's rows: each replica batches its own claims and the batches of
//! different replicas skip each other's locked rows.
//!
//! ```sh
//! cargo bench -p berth-control --bench replicas
//! BERTH_BENCH_JOBS=5000 BERTH_BENCH_CLAIMERS=16 BERTH_BENCH_REPLICAS=1,3,1 cargo bench -p berth-control --bench replicas
//! ```
//! Needs PostgreSQL on 127.0.0.1 as `scripts/ensure-services.sh` leaves it. The replicas run in
//! this process (one runtime on the machine's cores), so the figure is the database's side of
//! adding replicas, not extra CPU for them.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use berth_control::config::EventSettings;
use serde_json::{json, Value};
use support::{
    drop_db, env_usize, fresh_db, heartbeat, replica, report_success, DEPLOY_SECRET, RUNNER_TOKEN,
};

const MAX_REPLICAS: usize = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let jobs = env_usize("BERTH_BENCH_JOBS", 2_000);
    // One replica again at the end: a warm-up effect would show as a second figure apart
    // from the first.
    let rounds: Vec<usize> = std::env::var("BERTH_BENCH_REPLICAS")
        .unwrap_or_else(|_| "1,2,3,1".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|n| (1..=MAX_REPLICAS).contains(n))
        .collect();
    let claimers = env_usize("BERTH_BENCH_CLAIMERS", 8);
    let (url, name) = fresh_db().await?;
    let mut bases = Vec::new();
    for _ in 0..MAX_REPLICAS {
        bases.push(replica(&url, EventSettings::default()).await?.0);
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    heartbeat(&client, &bases[0]).await?;

    println!("Claims through replicas on PostgreSQL: {jobs} queued jobs, {claimers} runners claiming and reporting (each runner on replica i mod n)");
    println!("  replicas   jobs/s   ratio to 1 replica   retried claims");
    let mut baseline = None;
    for (round, &n) in rounds.iter().enumerate() {
        create_jobs(&client, &bases[0], jobs, round).await?;
        let (rate, empty) = drain(&client, &bases[..n], jobs, claimers).await?;
        let base = *baseline.get_or_insert(rate);
        println!(
            "  {n:>8}   {rate:>6.0}   {:>18.2}   {empty:>14}",
            rate / base
        );
    }
    drop_db(&name).await;
    Ok(())
}

/// Queues `jobs` deploy jobs of distinct apps (16 at a time; not timed).
async fn create_jobs(
    client: &reqwest::Client,
    base: &str,
    jobs: usize,
    round: usize,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let creators: Vec<_> = (0..16)
        .map(|_| {
            let (client, url, next) = (client.clone(), format!("{base}/deploy/jobs"), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= jobs {
                        return anyhow::Ok(());
                    }
                    let res = client
                        .post(&url)
                        .header("X-DEPLOY-SECRET", DEPLOY_SECRET)
                        .json(&json!({ "appId": format!("r{round}-{i}"), "image": "img:1" }))
                        .send()
                        .await?;
                    anyhow::ensure!(res.status() == 201, "create: {}", res.status());
                }
            })
        })
        .collect();
    for creator in creators {
        creator.await??;
    }
    Ok(())
}

/// `claimers` runners claim (no wait) and report until `jobs` jobs are done; jobs per second,
/// and how many claims came back empty on the way.
async fn drain(
    client: &reqwest::Client,
    bases: &[String],
    jobs: usize,
    claimers: usize,
) -> anyhow::Result<(f64, usize)> {
    let done = Arc::new(AtomicUsize::new(0));
    let empty = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let runners: Vec<_> = (0..claimers)
        .map(|i| {
            let base = bases[i % bases.len()].clone();
            let (client, done, empty) = (client.clone(), done.clone(), empty.clone());
            tokio::spawn(async move {
                let runner_id = format!("replicas-bench-{i}");
                while done.load(Ordering::Relaxed) < jobs {
                    let res = client
                        .post(format!("{base}/runner/jobs/claim"))
                        .header("X-Runner-Token", RUNNER_TOKEN)
                        .json(&json!({ "runnerId": runner_id, "wait": 0 }))
                        .send()
                        .await?;
                    if res.status() == 204 {
                        empty.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    anyhow::ensure!(res.status() == 200, "claim: {}", res.status());
                    let claim: Value = res.json().await?;
                    let res = report_success(&client, &base, &runner_id, &claim).await?;
                    anyhow::ensure!(res.status() == 200, "report: {}", res.status());
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for runner in runners {
        runner.await??;
    }
    let rate = jobs as f64 / started.elapsed().as_secs_f64();
    Ok((rate, empty.load(Ordering::Relaxed)))
}
