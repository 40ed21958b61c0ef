//! Queue depth and placement: claims through the real control plane (the `berth-control`
//! binary, a child process) on PostgreSQL with 1,000 and with 100,000 pending jobs beside
//! 1,000,000 finished ones (and 1,000 again, so drift over the run shows), then with 10,000
//! more nodes to place on. Each row beside the first (1,000 pending, one node: the baseline),
//! in one run.
//!
//! Every pending job is a deploy of an app of its own, so every claim places an app on a node
//! (placements/s = claims/s). Runners claim without waiting and hold what they got (a runner
//! deploying), so the figure is the claim's: its pick, placement and lease. Jobs are written
//! with SQL `generate_series` into the migrated schema (copies of one job created over HTTP,
//! then `ANALYZE`: setup, not timed); the claims go over HTTP. Before each row the pending jobs
//! number the row's depth plus the claims it times, so the depth never falls below it.
//!
//! ```sh
//! ulimit -n 20000
//! cargo bench -p berth-control --bench depth
//! BERTH_BENCH_DEPTHS=1000,100000,1000 BERTH_BENCH_FINISHED=1000000 BERTH_BENCH_NODES=10000 cargo bench -p berth-control --bench depth
//! ```
//! Knobs: `BERTH_BENCH_CLAIMS` timed per row (2,000), `BERTH_BENCH_CLAIMERS` concurrent
//! runners (16). Needs PostgreSQL on 127.0.0.1 as `scripts/ensure-services.sh` leaves it.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::{stream, StreamExt, TryStreamExt};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use support::child::ControlPlane;
use support::{
    drop_db, env_usize, fresh_db, heartbeat, ms_since, node, Samples, DEPLOY_SECRET, RUNNER_TOKEN,
};

struct Knobs {
    depths: Vec<usize>,
    finished: usize,
    nodes: usize,
    claims: usize,
    claimers: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let knobs = Knobs {
        depths: std::env::var("BERTH_BENCH_DEPTHS")
            .unwrap_or_else(|_| "1000,100000,1000".into())
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect(),
        finished: env_usize("BERTH_BENCH_FINISHED", 1_000_000),
        nodes: env_usize("BERTH_BENCH_NODES", 10_000),
        claims: env_usize("BERTH_BENCH_CLAIMS", 2_000).max(1),
        claimers: env_usize("BERTH_BENCH_CLAIMERS", 16).max(1),
    };
    let (url, name) = fresh_db().await?;
    let result = run(&knobs, &url).await;
    drop_db(&name).await;
    result
}

async fn run(k: &Knobs, url: &str) -> anyhow::Result<()> {
    // Long TTLs and leases: nodes stay ONLINE without heartbeats and claimed jobs stay held,
    // so only the claims act; retention off, so the finished jobs stay.
    let plane = ControlPlane::start(
        url,
        &[
            ("BERTH_NODE_TTL_SECS", "86400"),
            ("BERTH_NODE_LOST_SECS", "86400"),
            ("BERTH_JOB_LEASE_SECS", "86400"),
            ("BERTH_JOB_RETENTION_SECS", "0"),
        ],
    )
    .await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    heartbeat(&client, &plane.base).await?;
    let mut db = PgConnection::connect(url).await?;
    template(&client, &plane.base, &mut db).await?;
    let filled = Instant::now();
    insert_jobs(&mut db, "done", k.finished, "SUCCEEDED").await?;
    println!(
        "Queue depth and placement on PostgreSQL: {} claims timed per row, {} runners claiming (no wait) over HTTP; berth-control as a child process",
        k.claims, k.claimers
    );
    println!(
        "  ({} finished jobs written with SQL in {:.1} s)",
        k.finished,
        filled.elapsed().as_secs_f64()
    );
    println!("  nodes    pending   finished   claims (placements)/s   claim p50 / p99 / max ms   p99 ratio to first row");
    let mut rows: Vec<(usize, usize)> = k.depths.iter().map(|&d| (1, d)).collect();
    if k.nodes > 0 {
        rows.push((1 + k.nodes, k.depths.first().copied().unwrap_or(1_000)));
    }
    let mut baseline = None;
    for (round, &(nodes, depth)) in rows.iter().enumerate() {
        if nodes > 1 {
            join_nodes(&plane.base, nodes - 1).await?;
        }
        sqlx::query("DELETE FROM deploy_job WHERE state = 'PENDING'")
            .execute(&mut db)
            .await?;
        insert_jobs(&mut db, &format!("r{round}"), depth + k.claims, "PENDING").await?;
        let (rate, claims) = drain(&client, &plane.base, k.claims, k.claimers, round).await?;
        let [p50, p99, max] = claims.quantiles([0.5, 0.99, 1.0]);
        let first = *baseline.get_or_insert(p99);
        println!(
            "  {nodes:>5}   {depth:>8}   {:>8}   {rate:>21.0}   {:>24}   {:>22.2}",
            k.finished,
            format!("{p50:.1} / {p99:.1} / {max:.1}"),
            p99 / first
        );
    }
    println!("  Goals: claim p99 at 100,000 pending within 1.5× of it at 1,000; ≥ 1,000 placements/s with 10,000 nodes.");
    drop(db);
    plane.stop().await;
    Ok(())
}

/// One deploy job created over HTTP (so its payload and sealed environment are the real
/// ones), kept in `bench_template` and taken out of the queue.
async fn template(
    client: &reqwest::Client,
    base: &str,
    db: &mut PgConnection,
) -> anyhow::Result<()> {
    let res = client
        .post(format!("{base}/deploy/jobs"))
        .header("X-DEPLOY-SECRET", DEPLOY_SECRET)
        .json(&json!({ "appId": "template", "image": "img:1" }))
        .send()
        .await?;
    anyhow::ensure!(res.status() == 201, "create: {}", res.status());
    sqlx::query(
        "CREATE TABLE bench_template AS SELECT * FROM deploy_job WHERE app_id = 'template'",
    )
    .execute(&mut *db)
    .await?;
    sqlx::query("DELETE FROM deploy_job WHERE app_id = 'template'")
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// Writes `n` copies of the template in `state`, each of its own app `{prefix}-{i}`, then
/// refreshes the table's statistics (as autovacuum would after such a burst).
async fn insert_jobs(
    db: &mut PgConnection,
    prefix: &str,
    n: usize,
    state: &str,
) -> anyhow::Result<()> {
    let finished = if state == "PENDING" {
        "NULL"
    } else {
        "t.created_at"
    };
    sqlx::query(&format!(
        "INSERT INTO deploy_job (job_id, app_id, kind, state, payload, secret_env, attempt,
             max_attempts, run_after, node_id, version, created_at, updated_at, started_at, finished_at)
         SELECT md5($1 || '-' || i)::uuid::text, $1 || '-' || i, t.kind, $2, t.payload, t.secret_env,
             0, t.max_attempts, t.run_after, NULL, t.version, t.created_at, t.updated_at,
             {finished}, {finished}
         FROM bench_template t, generate_series(1, $3) i"
    ))
    .bind(prefix)
    .bind(state)
    .bind(n as i64)
    .execute(&mut *db)
    .await?;
    sqlx::query("VACUUM ANALYZE deploy_job")
        .execute(&mut *db)
        .await?;
    // Written out now, so no checkpoint of the setup's pages falls into the timed claims.
    sqlx::query("CHECKPOINT").execute(&mut *db).await?;
    Ok(())
}

/// Joins `n` roomy nodes and heartbeats each once (64 at a time; not timed).
async fn join_nodes(base: &str, n: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let client = &client;
    stream::iter(0..n)
        .map(|i| async move { node(client, base, &format!("depth-node-{i}")).await })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// `claimers` runners claim (no wait) until `claims` claims were served; claims per second
/// and each claim's latency.
async fn drain(
    client: &reqwest::Client,
    base: &str,
    claims: usize,
    claimers: usize,
    round: usize,
) -> anyhow::Result<(f64, Arc<Samples>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(Samples::default());
    let started = Instant::now();
    let runners: Vec<_> = (0..claimers)
        .map(|i| {
            let (client, next, samples) = (client.clone(), next.clone(), samples.clone());
            let url = format!("{base}/runner/jobs/claim");
            tokio::spawn(async move {
                let body = json!({ "runnerId": format!("depth-{round}-{i}"), "wait": 0 });
                while next.fetch_add(1, Ordering::Relaxed) < claims {
                    let asked = Instant::now();
                    let res = client
                        .post(&url)
                        .header("X-Runner-Token", RUNNER_TOKEN)
                        .json(&body)
                        .send()
                        .await?;
                    anyhow::ensure!(res.status() == 200, "claim: {}", res.status());
                    let _ = res.bytes().await?;
                    samples.push(ms_since(asked));
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for runner in runners {
        runner.await??;
    }
    Ok((claims as f64 / started.elapsed().as_secs_f64(), samples))
}
