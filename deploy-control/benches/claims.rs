//! Claim throughput and dispatch latency of the control plane, beside raw SQL on the same
//! database in the same run.
//!
//! ```sh
//! cargo bench -p berth-control --bench claims            # PostgreSQL (default)
//! BERTH_BENCH_DB=mysql cargo bench -p berth-control --bench claims
//! BERTH_BENCH_JOBS=20000 BERTH_BENCH_CLAIMERS=8 cargo bench -p berth-control --bench claims
//! ```
//! Needs PostgreSQL / MariaDB on 127.0.0.1 as `scripts/ensure-services.sh` leaves them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_control::config::{Secrets, Settings};
use berth_control::queue::retry::RetryPolicy;
use berth_control::startup::Application;
use berth_control::state::AppState;
use berth_shared::secret::Secret;
use berth_shared::wire::CreateJobRequest;
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::sync::Mutex;

const RUNNER_TOKEN: &str = "bench-runner-token-0123456789";
const DEPLOY_SECRET: &str = "bench-deploy-secret-0123456789";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let jobs = env_usize("BERTH_BENCH_JOBS", 20_000);
    let claimers = env_usize("BERTH_BENCH_CLAIMERS", 8);
    let samples = env_usize("BERTH_BENCH_DISPATCH_SAMPLES", 500);
    let kind = std::env::var("BERTH_BENCH_DB").unwrap_or_else(|_| "postgres".into());
    let (admin, url, name) = database(&kind);
    create_db(&kind, &admin, &name).await?;

    let settings = Settings {
        database_url: url.clone(),
        secrets: Secrets {
            deploy: Secret::new(DEPLOY_SECRET),
            runner: Secret::new(RUNNER_TOKEN),
            node: Secret::new("bench-node-token-0123456789"),
            admin: Secret::new("bench-admin-token-0123456789"),
        },
        lease: Duration::from_secs(300),
        retry: RetryPolicy {
            max_attempts: 3,
            base_ms: 5000,
            cap_ms: 300_000,
        },
        node_ttl: Duration::from_secs(3600),
        sweep_interval: Duration::from_secs(1),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app = Application::build(settings, listener).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    tokio::spawn(app.run(std::future::pending()));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    register_node(&client, &base).await?;

    println!(
        "Berth control plane benchmark on {kind}: {jobs} jobs, {claimers} concurrent claimers"
    );
    let raw = Raw::connect(&kind, &url).await?;

    // 1. Throughput: the same jobs claimed by raw SQL, then (reset) by the store alone, then
    // (reset) through HTTP. Each app has deployed once before (a finished job and a
    // placement), as in production, where finished jobs far outnumber pending ones.
    insert_jobs(&state, jobs).await?;
    raw.finish_all_jobs().await?;
    insert_jobs(&state, jobs).await?;
    raw.place_all_apps().await?;
    raw.reset_jobs().await?;
    let raw_rate = raw.claim_all(claimers, jobs).await?;
    raw.reset_jobs().await?;
    let store_rate = store_claim_all(&state, claimers, jobs).await?;
    raw.reset_jobs().await?;
    let http_rate = http_claim_all(&client, &base, claimers, jobs).await?;
    println!("claim throughput");
    println!("  raw SQL claim (one statement, SKIP LOCKED)  {raw_rate:>9.0} claims/s");
    println!(
        "  store claim, no HTTP (Store::claim_job)     {store_rate:>9.0} claims/s   ratio {:.2}",
        store_rate / raw_rate
    );
    println!(
        "  HTTP claim, app already placed (sticky)     {http_rate:>9.0} claims/s   ratio {:.2}",
        http_rate / raw_rate
    );

    // 2. Dispatch latency: a job created while claimers wait, until a claim returns it.
    let http = dispatch_latency(&client, &base, claimers, samples).await?;
    let floor = raw.single_claim_latency(samples).await?;
    println!("dispatch latency ({samples} jobs, {claimers} waiting claimers)");
    println!(
        "  HTTP: create → waiting claim returns it     p50 {:>6.2} ms   p99 {:>6.2} ms",
        http.0, http.1
    );
    println!(
        "  raw SQL: one claim of a ready job           p50 {:>6.2} ms   p99 {:>6.2} ms",
        floor.0, floor.1
    );
    println!(
        "  ratio p50 {:.2}, p99 {:.2}",
        http.0 / floor.0,
        http.1 / floor.1
    );

    drop(raw);
    drop_db(&kind, &admin, &name).await;
    Ok(())
}

fn database(kind: &str) -> (String, String, String) {
    let name = format!("berth_bench_{}", uuid::Uuid::new_v4().simple());
    let admin = match kind {
        "mysql" => std::env::var("BERTH_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into()),
        _ => std::env::var("BERTH_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
    };
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(b, _)| b)
        .to_owned();
    let url = format!("{base}/{name}");
    (admin, url, name)
}

async fn create_db(kind: &str, admin: &str, name: &str) -> anyhow::Result<()> {
    let sql = format!("CREATE DATABASE {name}");
    if kind == "mysql" {
        sqlx::query(&sql)
            .execute(&mut sqlx::MySqlConnection::connect(admin).await?)
            .await?;
    } else {
        sqlx::query(&sql)
            .execute(&mut sqlx::PgConnection::connect(admin).await?)
            .await?;
    }
    Ok(())
}

async fn drop_db(kind: &str, admin: &str, name: &str) {
    if kind == "mysql" {
        if let Ok(mut c) = sqlx::MySqlConnection::connect(admin).await {
            let _ = sqlx::query(&format!("DROP DATABASE {name}"))
                .execute(&mut c)
                .await;
        }
    } else if let Ok(mut c) = sqlx::PgConnection::connect(admin).await {
        let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut c)
            .await;
    }
}

async fn register_node(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let res = client
        .post(format!("{base}/internal/runtime-nodes/heartbeat"))
        .header("X-RT-Node-Token", "bench-node-token-0123456789")
        .json(&json!({
            "nodeId": "bench-node", "name": "bench-node",
            "agentBaseUrl": "http://127.0.0.1:7005", "gatewayBaseUrl": "http://127.0.0.1:8088",
            "capacity": { "cpus": 64.0, "memoryMb": 262144, "maxApps": 10_000_000 }, "version": "bench"
        }))
        .send()
        .await?;
    anyhow::ensure!(
        res.status().is_success(),
        "node heartbeat: {}",
        res.status()
    );
    Ok(())
}

/// Inserts `n` jobs, each for its own app, through the store (8 at a time).
async fn insert_jobs(state: &AppState, n: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (state, next) = (state.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let job = CreateJobRequest {
                    app_id: format!("app-{i}"),
                    image: Some("bench:1".into()),
                    ..Default::default()
                }
                .validate()
                .map_err(anyhow::Error::msg)?;
                let new = berth_control::storage::NewJob {
                    job_id: uuid::Uuid::now_v7(),
                    job,
                    idempotency_key: None,
                    request_hash: String::new(),
                    max_attempts: 3,
                    now: berth_control::queue::now_millis(),
                };
                state.store().create_job(new).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!(
        "(inserted {n} jobs in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The control plane's claim without HTTP: `Store::claim_job`, as the claim route calls it.
async fn store_claim_all(state: &AppState, claimers: usize, jobs: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..claimers {
        let state = state.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            loop {
                let now = berth_control::queue::now_millis();
                let request = berth_control::storage::ClaimRequest {
                    runner_id: format!("store-{r}"),
                    lease_token: berth_control::dispatch::new_lease_token(),
                    lease_expires_at: now + 300_000,
                    now,
                    node_ttl_ms: 3_600_000,
                };
                match state.store().claim_job(&request).await? {
                    Some(_) => n += 1,
                    None => return Ok::<_, anyhow::Error>(n),
                }
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    anyhow::ensure!(total == jobs, "the store claimed {total} of {jobs}");
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

async fn http_claim_all(
    client: &reqwest::Client,
    base: &str,
    claimers: usize,
    jobs: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..claimers {
        let (client, url) = (client.clone(), format!("{base}/runner/jobs/claim"));
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            loop {
                let res = client
                    .post(&url)
                    .header("X-Runner-Token", RUNNER_TOKEN)
                    .json(&json!({ "runnerId": format!("bench-{r}"), "wait": 0 }))
                    .send()
                    .await?;
                match res.status().as_u16() {
                    200 => n += 1,
                    204 => return Ok::<_, anyhow::Error>(n),
                    s => anyhow::bail!("claim answered {s}"),
                }
                // Read the body as a runner would.
                let _ = res.bytes().await;
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    anyhow::ensure!(total == jobs, "claimed {total} of {jobs}");
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Creates jobs one after another while `claimers` wait; the time from a create's answer to
/// the claim that returns that job.
async fn dispatch_latency(
    client: &reqwest::Client,
    base: &str,
    claimers: usize,
    samples: usize,
) -> anyhow::Result<(f64, f64)> {
    let received: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let mut tasks = Vec::new();
    for r in 0..claimers {
        let (client, url, received) = (
            client.clone(),
            format!("{base}/runner/jobs/claim"),
            received.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let res = client
                    .post(&url)
                    .header("X-Runner-Token", RUNNER_TOKEN)
                    .json(&json!({ "runnerId": format!("wait-{r}"), "wait": 5 }))
                    .send()
                    .await?;
                if res.status() == 204 {
                    return Ok::<_, anyhow::Error>(());
                }
                let at = Instant::now();
                let claim: Value = res.json().await?;
                let id = claim["job"]["jobId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                received.lock().await.push((id, at));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut created = Vec::new();
    for i in 0..samples {
        let res = client
            .post(format!("{base}/deploy/jobs"))
            .header("X-DEPLOY-SECRET", DEPLOY_SECRET)
            .json(&json!({ "appId": format!("dispatch-{i}"), "image": "bench:1" }))
            .send()
            .await?;
        let at = Instant::now();
        let job: Value = res.json().await?;
        created.push((job["jobId"].as_str().unwrap_or_default().to_owned(), at));
        // Space the jobs out so each meets waiting claimers, as in real traffic.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for t in tasks {
        t.await??;
    }
    let received = received.lock().await;
    let mut latencies: Vec<f64> = created
        .iter()
        .filter_map(|(id, at)| {
            received
                .iter()
                .find(|(r, _)| r == id)
                .map(|(_, got)| got.saturating_duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    anyhow::ensure!(
        latencies.len() == samples,
        "only {} of {samples} jobs were dispatched",
        latencies.len()
    );
    Ok(percentiles(&mut latencies))
}

fn percentiles(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |p: f64| values[((values.len() as f64 - 1.0) * p).round() as usize];
    (at(0.50), at(0.99))
}

/// The same claim as raw SQL, on the same database: one statement per claim on a pool that
/// does not ping connections before use (as the control plane's pool on PostgreSQL).
enum Raw {
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool),
}

impl Raw {
    async fn connect(kind: &str, url: &str) -> anyhow::Result<Self> {
        Ok(if kind == "mysql" {
            Self::MySql(
                sqlx::mysql::MySqlPoolOptions::new()
                    .max_connections(16)
                    .test_before_acquire(false)
                    // As the control plane's pool: no gap locks in the pick.
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::Executor::execute(
                                conn,
                                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?,
            )
        } else {
            Self::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(16)
                    .test_before_acquire(false)
                    .connect(url)
                    .await?,
            )
        })
    }

    /// Runs one statement that returns nothing.
    async fn execute(&self, sql: &str) -> anyhow::Result<()> {
        match self {
            Self::Postgres(p) => {
                sqlx::query(sql).execute(p).await?;
            }
            Self::MySql(p) => {
                sqlx::query(sql).execute(p).await?;
            }
        }
        Ok(())
    }

    /// Places every app on the bench node, as after a first deploy: the claims measured are
    /// the common case of a redeploy.
    async fn place_all_apps(&self) -> anyhow::Result<()> {
        self.execute(
            "INSERT INTO runtime_placement (app_id, node_id, memory_mb, cpu_millis, updated_at) \
             SELECT DISTINCT app_id, 'bench-node', 0, 0, 0 FROM deploy_job",
        )
        .await
    }

    /// Marks every job `SUCCEEDED`: the apps' earlier deploys.
    async fn finish_all_jobs(&self) -> anyhow::Result<()> {
        self.execute("UPDATE deploy_job SET state = 'SUCCEEDED', attempt = 1")
            .await
    }

    /// Puts every job the benchmark claims back to `PENDING`, then lets the database clean
    /// up (PostgreSQL: `VACUUM ANALYZE`; InnoDB: waits for purge), so each measured phase
    /// starts from the same table rather than one carrying the last phase's dead rows.
    async fn reset_jobs(&self) -> anyhow::Result<()> {
        self.execute(
            "UPDATE deploy_job SET state = 'PENDING', attempt = 0, runner_id = NULL, lease_token = NULL, \
             lease_expires_at = NULL WHERE state <> 'SUCCEEDED'",
        )
        .await?;
        match self {
            Self::Postgres(_) => self.execute("VACUUM ANALYZE deploy_job").await,
            Self::MySql(p) => {
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline {
                    let (_, history): (String, String) =
                        sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'")
                            .fetch_one(p)
                            .await?;
                    if history.parse::<u64>().unwrap_or(0) < 100 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                self.execute("ANALYZE TABLE deploy_job").await
            }
        }
    }

    /// One claim statement; true when it claimed a job.
    async fn claim_one(&self, token: &str) -> anyhow::Result<bool> {
        let now = berth_control::queue::now_millis();
        let lease_end = now + 300_000;
        Ok(match self {
            Self::Postgres(p) => {
                sqlx::query(
                    "UPDATE deploy_job SET state = 'RUNNING', attempt = attempt + 1, runner_id = 'raw', lease_token = $1, \
                     lease_expires_at = $3, version = version + 1 WHERE seq = (SELECT seq FROM deploy_job WHERE state = 'PENDING' \
                     AND run_after <= $2 ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING seq",
                )
                .bind(token)
                .bind(now)
                .bind(lease_end)
                .fetch_optional(p)
                .await?
                .is_some()
            }
            Self::MySql(p) => {
                // MariaDB has no UPDATE … RETURNING: select and update in one transaction.
                let mut tx = p.begin().await?;
                let seq: Option<i64> = sqlx::query_scalar(
                    "SELECT seq FROM deploy_job WHERE state = 'PENDING' AND run_after <= ? ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED",
                )
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(seq) = seq {
                    sqlx::query("UPDATE deploy_job SET state = 'RUNNING', attempt = attempt + 1, runner_id = 'raw', lease_token = ?, lease_expires_at = ?, version = version + 1 WHERE seq = ?")
                        .bind(token)
                        .bind(lease_end)
                        .bind(seq)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                seq.is_some()
            }
        })
    }

    async fn claim_all(&self, claimers: usize, jobs: usize) -> anyhow::Result<f64> {
        let started = Instant::now();
        let this = Arc::new(self.clone_pool());
        let mut tasks = Vec::new();
        for _ in 0..claimers {
            let this = this.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0usize;
                while this.claim_one("0123456789abcdef0123456789abcdef").await? {
                    n += 1;
                }
                Ok::<_, anyhow::Error>(n)
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await??;
        }
        anyhow::ensure!(total == jobs, "raw SQL claimed {total} of {jobs}");
        Ok(total as f64 / started.elapsed().as_secs_f64())
    }

    /// Latency of one claim statement that finds a ready job (the floor for dispatch).
    async fn single_claim_latency(&self, samples: usize) -> anyhow::Result<(f64, f64)> {
        self.reset_jobs().await?;
        let mut latencies = Vec::with_capacity(samples);
        for _ in 0..samples {
            let started = Instant::now();
            anyhow::ensure!(
                self.claim_one("0123456789abcdef0123456789abcdef").await?,
                "no job left to claim"
            );
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(percentiles(&mut latencies))
    }

    fn clone_pool(&self) -> Self {
        match self {
            Self::Postgres(p) => Self::Postgres(p.clone()),
            Self::MySql(p) => Self::MySql(p.clone()),
        }
    }
}
