//! Status watchers: N clients long-poll one job (`GET /deploy/jobs/{id}?version=&wait=`), the
//! job changes (a runner claims it), and every watcher gets the new version. Printed: p50, p99
//! and the last of the answers after the change, and the database transactions the change
//! cost — beside the same change with no watcher, in the same run. The count includes the
//! reader's own once-a-second look at the job during the 11 s the bench waits for
//! PostgreSQL's statistics, so about 11 more than the change itself with any watcher.
//!
//! ```sh
//! cargo bench -p berth-control --bench watchers
//! BERTH_BENCH_WATCHERS=0,1000,10000 cargo bench -p berth-control --bench watchers
//! ```
//! Needs PostgreSQL on 127.0.0.1 as `scripts/ensure-services.sh` leaves it.

mod support;

use std::time::{Duration, Instant};

use berth_control::config::EventSettings;
use berth_control::state::AppState;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use support::{drop_db, fresh_db, heartbeat, replica, transactions, DEPLOY_SECRET, RUNNER_TOKEN};
use uuid::Uuid;

/// Longer than PostgreSQL's delay in reporting an idle backend's statistics.
const STATS_DELAY: Duration = Duration::from_secs(11);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let counts: Vec<usize> = std::env::var("BERTH_BENCH_WATCHERS")
        .unwrap_or_else(|_| "0,1000,5000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let (url, name) = fresh_db().await?;
    let (base, state) = replica(&url, EventSettings::default()).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(20_000)
        .build()?;
    heartbeat(&client, &base).await?;
    let mut stats = PgConnection::connect(&url).await?;
    println!("Status watchers of one job on PostgreSQL: long polls answered after the job changes (a claim)");
    println!("  watchers   answers p50 / p99 / last (ms)   transactions for the change (the claim's own: baseline)");
    for (round, &n) in counts.iter().enumerate() {
        let job = create(&client, &base, &format!("watched-{round}")).await?;
        let job_id: Uuid = job["jobId"].as_str().unwrap_or_default().parse()?;
        let version = job["version"].as_i64().unwrap_or_default();
        let url = format!("{base}/deploy/jobs/{job_id}?version={version}&wait=60");
        let watchers: Vec<_> = (0..n)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    let res = client
                        .get(url)
                        .header("X-DEPLOY-SECRET", DEPLOY_SECRET)
                        .send()
                        .await?;
                    let at = Instant::now();
                    let body: Value = res.json().await?;
                    anyhow::ensure!(
                        body["version"].as_i64() > Some(version),
                        "an old version: {body}"
                    );
                    anyhow::Ok(at)
                })
            })
            .collect();
        until_watching(&state, job_id, n).await;
        // Idle backends report their statistics up to 10 s late (PostgreSQL 15): let the
        // watchers' own first reads land before counting.
        tokio::time::sleep(STATS_DELAY).await;
        let before = transactions(&mut stats, &name).await?;
        let changed = claim(&client, &base).await?;
        let mut after_ms = Vec::with_capacity(n);
        for w in watchers {
            after_ms.push(w.await??.saturating_duration_since(changed).as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(STATS_DELAY).await;
        // Each read of the statistics is two transactions of its own.
        let spent = transactions(&mut stats, &name).await? - before - 2;
        let times = if after_ms.is_empty() {
            "-".to_owned()
        } else {
            after_ms.sort_by(f64::total_cmp);
            let at =
                |q: f64| after_ms[((after_ms.len() as f64 * q) as usize).min(after_ms.len() - 1)];
            format!(
                "{:.1} / {:.1} / {:.1}",
                at(0.5),
                at(0.99),
                after_ms[after_ms.len() - 1]
            )
        };
        println!("  {n:>8}   {times:>28}   {spent}");
    }
    drop(stats);
    drop_db(&name).await;
    Ok(())
}

async fn create(client: &reqwest::Client, base: &str, app: &str) -> anyhow::Result<Value> {
    let res = client
        .post(format!("{base}/deploy/jobs"))
        .header("X-DEPLOY-SECRET", DEPLOY_SECRET)
        .json(&json!({ "appId": app, "image": "img:1" }))
        .send()
        .await?;
    anyhow::ensure!(res.status() == 201, "create: {}", res.status());
    Ok(res.json().await?)
}

/// Claims the one pending job; the moment the claim answered.
async fn claim(client: &reqwest::Client, base: &str) -> anyhow::Result<Instant> {
    let res = client
        .post(format!("{base}/runner/jobs/claim"))
        .header("X-Runner-Token", RUNNER_TOKEN)
        .json(&json!({ "runnerId": "bench-runner", "wait": 5 }))
        .send()
        .await?;
    let at = Instant::now();
    anyhow::ensure!(res.status() == 200, "claim: {}", res.status());
    Ok(at)
}

/// Waits until `n` long polls hold the job's watch.
async fn until_watching(state: &AppState, job_id: Uuid, n: usize) {
    while state.wake().watchers(job_id) < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
