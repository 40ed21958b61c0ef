//! Claim throughput and dispatch latency of the control plane, beside raw SQL on the same
//! database in the same run.
//!
//! ```sh
//! cargo bench -p berth-control --bench claims            # PostgreSQL (default)
//! BERTH_BENCH_DB=mysql cargo bench -p berth-control --bench claims
//! BERTH_BENCH_JOBS=20000 BERTH_BENCH_CLAIMERS=8 BERTH_BENCH_ROUNDS=3 cargo bench -p berth-control --bench claims
//! ```
//! Needs PostgreSQL / MariaDB on 127.0.0.1 as `scripts/ensure-services.sh` leaves them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_control::config::Settings;
use berth_control::startup::Application;
use berth_control::state::AppState;
use berth_shared::wire::CreateJobRequest;
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::sync::Mutex;

mod support;

use support::{DEPLOY_SECRET, RUNNER_TOKEN};

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
        lease: Duration::from_millis(LEASE_MS as u64),
        node_ttl: Duration::from_millis(NODE_TTL_MS as u64),
        node_lost: Duration::from_millis(2 * NODE_TTL_MS as u64),
        ..support::settings(&url)
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

    // 1. Throughput: the same jobs claimed by raw SQL (both floors), by the store one by one,
    // by the claim queue and through HTTP, the table reset between phases. Each app has
    // deployed once before (a finished job and a placement), as in production, where finished
    // jobs far outnumber pending ones. The phases run in rounds and each round's ratios are
    // taken between its own phases, so a machine that slows down or speeds up between rounds
    // (as shared VMs do, by 2x) moves the figures but not the ratios; the medians are printed.
    insert_jobs(&state, jobs).await?;
    raw.finish_all_jobs().await?;
    insert_jobs(&state, jobs).await?;
    raw.place_all_apps().await?;
    let rounds = env_usize("BERTH_BENCH_ROUNDS", 3).max(1);
    let mut rows: Vec<[f64; 7]> = Vec::new();
    println!("claim throughput, claims/s (ratios against the same claim as raw SQL)");
    println!("  round   one-row SQL   same-claim SQL   store one by one   claim queue   HTTP (ratio)   claims per transaction (queue / HTTP)");
    for round in 1..=rounds {
        raw.reset_jobs().await?;
        let one_row = raw.claim_all(claimers, jobs, Floor::OneRow).await?;
        raw.reset_jobs().await?;
        let same = raw.claim_all(claimers, jobs, Floor::SameClaim).await?;
        raw.reset_jobs().await?;
        let store = store_claim_all(&state, claimers, jobs).await?;
        raw.reset_jobs().await?;
        let before = batches(&state);
        let queue = queue_claim_all(&state, claimers, jobs).await?;
        let queue_batch = batches(&state).mean_since(&before);
        raw.reset_jobs().await?;
        let before = batches(&state);
        let http = http_claim_all(&client, &base, claimers, jobs).await?;
        let http_batch = batches(&state).mean_since(&before);
        println!(
            "  {round:>5}   {one_row:>11.0}   {same:>14.0}   {store:>16.0}   {queue:>11.0}   {http:>5.0} ({:.2})   {queue_batch:.1} / {http_batch:.1}",
            http / same
        );
        rows.push([one_row, same, store, queue, http, queue_batch, http_batch]);
    }
    let mid = |k: usize| median(rows.iter().map(|r| r[k]).collect());
    let ratio = |k: usize, of: usize| median(rows.iter().map(|r| r[k] / r[of]).collect());
    println!("medians over {rounds} rounds");
    println!(
        "  raw SQL, the same claim (the floor)         {:>9.0} claims/s",
        mid(1)
    );
    println!(
        "  raw SQL, one-row claim (reference only)     {:>9.0} claims/s   ratio {:.2}",
        mid(0),
        ratio(0, 1)
    );
    println!(
        "  store claim one by one (batches of one)    {:>9.0} claims/s   ratio {:.2}",
        mid(2),
        ratio(2, 1)
    );
    println!(
        "  claim queue, batched, no HTTP (ClaimQueue)  {:>9.0} claims/s   ratio {:.2}   {:.1} claims per transaction",
        mid(3),
        ratio(3, 1),
        mid(5)
    );
    println!(
        "  HTTP claim, app already placed (sticky)     {:>9.0} claims/s   ratio {:.2}   {:.1} claims per transaction   (against the one-row claim {:.2})",
        mid(4),
        ratio(4, 1),
        mid(6),
        ratio(4, 0)
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
        "  raw SQL: the same claim of a ready job      p50 {:>6.2} ms   p99 {:>6.2} ms",
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
    let credential = support::join(client, base, support::NODE_JOIN_TOKEN, "bench-node").await?;
    let res = client
        .post(format!("{base}/internal/runtime-nodes/heartbeat"))
        .header("X-RT-Node-Token", credential)
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
                    job: berth_control::storage::JobSpec::seal(
                        job,
                        &state.settings().secrets.secret_key,
                    ),
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

/// The control plane's claim transactions so far: how many, and the claims they served.
struct Batches {
    count: f64,
    claims: f64,
}

impl Batches {
    /// Claims per transaction since `earlier`.
    fn mean_since(&self, earlier: &Batches) -> f64 {
        (self.claims - earlier.claims) / (self.count - earlier.count).max(1.0)
    }
}

/// Reads `berth_claim_batch_size` from the control plane's metrics.
fn batches(state: &AppState) -> Batches {
    let text = state.metrics().render();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Batches {
        count: value("berth_claim_batch_size_count "),
        claims: value("berth_claim_batch_size_sum "),
    }
}

/// The control plane's claims without HTTP, as the claim route makes them: through the claim
/// queue, which serves the claims waiting together in one transaction.
async fn queue_claim_all(state: &AppState, claimers: usize, jobs: usize) -> anyhow::Result<f64> {
    let state = state.clone();
    claim_until_empty("the claim queue", claimers, jobs, move |r| {
        let state = state.clone();
        async move {
            let claimer = berth_control::storage::Claimer {
                runner_id: format!("queue-{r}"),
                lease_token: berth_control::dispatch::new_lease_token(),
            };
            Ok(state.claims().claim(claimer).await?.is_some())
        }
    })
    .await
}

/// One claim per transaction, without HTTP: `Store::claim_jobs` with a batch of one, each
/// claimer on its own.
async fn store_claim_all(state: &AppState, claimers: usize, jobs: usize) -> anyhow::Result<f64> {
    let state = state.clone();
    claim_until_empty("the store", claimers, jobs, move |r| {
        let state = state.clone();
        async move {
            let now = berth_control::queue::now_millis();
            let batch = berth_control::storage::ClaimBatch {
                claimers: vec![berth_control::storage::Claimer {
                    runner_id: format!("store-{r}"),
                    lease_token: berth_control::dispatch::new_lease_token(),
                }],
                lease_expires_at: now + LEASE_MS,
                now,
                node_ttl_ms: NODE_TTL_MS,
                nodes_settled: true,
                node_lost_ms: None,
            };
            Ok(!state.store().claim_jobs(&batch).await?.is_empty())
        }
    })
    .await
}

/// Runs `claim(r)` from `claimers` tasks (`r` the task's number) until each finds nothing;
/// checks that `jobs` were claimed and returns claims per second. `what` names the claimer in
/// the error.
async fn claim_until_empty<F, Fut>(
    what: &str,
    claimers: usize,
    jobs: usize,
    claim: F,
) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<bool>> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..claimers {
        let claim = claim.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while claim(r).await? {
                n += 1;
            }
            Ok::<_, anyhow::Error>(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    anyhow::ensure!(total == jobs, "{what} claimed {total} of {jobs}");
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

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentiles(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |p: f64| values[((values.len() as f64 - 1.0) * p).round() as usize];
    (at(0.50), at(0.99))
}

/// Which claim the raw SQL floor makes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Floor {
    /// The claim the control plane makes, written by hand as tightly as SQL allows: the oldest
    /// job whose app has no running job and no older pending job, locked with `SKIP LOCKED`,
    /// sent to its app's node if that node is online and schedulable; the job's row, its
    /// `job.running` outbox event and the app's last-known run written in the same
    /// transaction. PostgreSQL: one statement; MariaDB: one transaction of five statements.
    SameClaim,
    /// The least a claim can be: the oldest pending job's row updated, nothing else checked or
    /// written (no per-app order, no node, no event, no app run). A reference line.
    OneRow,
}

/// The claim as raw SQL, on the same database, on a pool that does not ping connections before
/// use (as the control plane's pool on PostgreSQL).
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

    /// Puts every job the benchmark claims back to `PENDING` (without the attempts its claims
    /// opened, so the next phase opens attempt 1 again) and empties the outbox, then lets
    /// the database clean up (PostgreSQL: `VACUUM ANALYZE`; InnoDB: waits for purge), so each measured phase
    /// starts from the same table rather than one carrying the last phase's dead rows.
    async fn reset_jobs(&self) -> anyhow::Result<()> {
        self.execute(
            "UPDATE deploy_job SET state = 'PENDING', attempt = 0, runner_id = NULL, lease_token = NULL, \
             lease_expires_at = NULL WHERE state <> 'SUCCEEDED'",
        )
        .await?;
        self.execute("DELETE FROM job_attempt").await?;
        self.execute("DELETE FROM outbox_event").await?;
        match self {
            Self::Postgres(_) => {
                self.execute("VACUUM ANALYZE deploy_job, outbox_event, app_run")
                    .await
            }
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

    /// One claim; true when it claimed a job.
    async fn claim_one(&self, token: &str, floor: Floor) -> anyhow::Result<bool> {
        let now = berth_control::queue::now_millis();
        let lease_end = now + LEASE_MS;
        Ok(match (self, floor) {
            (Self::Postgres(p), Floor::SameClaim) => sqlx::query(PG_SAME_CLAIM)
                .bind(token)
                .bind(now)
                .bind(lease_end)
                .bind(now - NODE_TTL_MS)
                .fetch_optional(p)
                .await?
                .is_some(),
            (Self::Postgres(p), Floor::OneRow) => {
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
            (Self::MySql(p), Floor::SameClaim) => mysql_same_claim(p, token, now, lease_end).await?,
            (Self::MySql(p), Floor::OneRow) => {
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

    async fn claim_all(&self, claimers: usize, jobs: usize, floor: Floor) -> anyhow::Result<f64> {
        let started = Instant::now();
        let this = Arc::new(self.clone_pool());
        let mut tasks = Vec::new();
        for _ in 0..claimers {
            let this = this.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0usize;
                while this
                    .claim_one("0123456789abcdef0123456789abcdef", floor)
                    .await?
                {
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

    /// Latency of one raw claim (the same claim) that finds a ready job: the floor for dispatch.
    async fn single_claim_latency(&self, samples: usize) -> anyhow::Result<(f64, f64)> {
        self.reset_jobs().await?;
        let mut latencies = Vec::with_capacity(samples);
        for _ in 0..samples {
            let started = Instant::now();
            anyhow::ensure!(
                self.claim_one("0123456789abcdef0123456789abcdef", Floor::SameClaim)
                    .await?,
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

/// Heartbeat TTL of the benchmark's node, ms (as in its settings).
const NODE_TTL_MS: i64 = 3_600_000;

/// Leases outlive any phase: on a loaded machine a 20,000-job phase on MariaDB once ran past a
/// 5-minute lease, the reaper handed the early claims out again, and the phase counted 42,632
/// claims of 20,000 jobs (retries, not double claims: each came with a new attempt).
const LEASE_MS: i64 = 24 * 3_600_000;

/// [`Floor::SameClaim`] on PostgreSQL, one statement: `$1` lease token, `$2` now, `$3` lease end,
/// `$4` oldest heartbeat of an online node. The event body has the fields of the control
/// plane's `job.running` (`queue/events.rs`), built by the database.
const PG_SAME_CLAIM: &str = "WITH j AS (SELECT c.seq FROM deploy_job c WHERE c.state = 'PENDING' AND c.run_after <= $2 \
    AND NOT EXISTS (SELECT 1 FROM deploy_job b WHERE b.app_id = c.app_id AND b.state = 'RUNNING' OFFSET 0) \
    AND NOT EXISTS (SELECT 1 FROM deploy_job o WHERE o.app_id = c.app_id AND o.state = 'PENDING' AND o.seq < c.seq) \
    ORDER BY c.seq LIMIT 1 FOR UPDATE SKIP LOCKED), \
  u AS (UPDATE deploy_job d SET state = 'RUNNING', attempt = d.attempt + 1, node_id = n.node_id, runner_id = 'raw', \
    lease_token = $1, lease_expires_at = $3, waiting_reason = NULL, started_at = $2, updated_at = $2, version = d.version + 1 \
    FROM j, runtime_placement p, runtime_node n WHERE d.seq = j.seq AND p.app_id = d.app_id AND n.node_id = p.node_id \
    AND n.scheduling = 'ACTIVE' AND n.last_heartbeat_at >= $4 RETURNING d.*), \
  e AS (INSERT INTO outbox_event (event_id, routing_key, body, created_at) SELECT v.id, 'job.running', \
    json_build_object('eventId', v.id, 'type', 'job.running', 'occurredAt', to_char(to_timestamp($2 / 1000.0) AT TIME ZONE 'UTC', \
    'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), 'jobId', u.job_id, 'appId', u.app_id, 'kind', u.kind, 'state', u.state, \
    'attempt', u.attempt, 'version', u.version, 'nodeId', u.node_id, 'runnerId', u.runner_id, 'error', u.error, \
    'result', u.result::json, 'labels', u.payload::json -> 'labels')::text, $2 \
    FROM u, LATERAL (SELECT gen_random_uuid()::text AS id) v), \
  r AS (INSERT INTO app_run (app_id, last_job_id, state, node_id, updated_at) SELECT u.app_id, u.job_id, 'DEPLOYING', u.node_id, $2 \
    FROM u ON CONFLICT (app_id) DO UPDATE SET last_job_id = EXCLUDED.last_job_id, state = EXCLUDED.state, \
    node_id = EXCLUDED.node_id, updated_at = EXCLUDED.updated_at) \
  SELECT seq FROM u";

/// [`Floor::SameClaim`] on MariaDB, one transaction (no `UPDATE … RETURNING`, no
/// data-modifying CTEs): the pick, the app's node, the job, its event, the app's run.
async fn mysql_same_claim(
    pool: &sqlx::MySqlPool,
    token: &str,
    now: i64,
    lease_end: i64,
) -> anyhow::Result<bool> {
    let mut tx = pool.begin().await?;
    // The job alone is locked: `FOR UPDATE` in a join would lock the node's row too, and
    // every other claimer would skip every job.
    let picked: Option<(i64, String, String)> = sqlx::query_as(
        "SELECT c.seq, c.job_id, c.app_id FROM deploy_job c WHERE c.state = 'PENDING' AND c.run_after <= ? \
         AND NOT EXISTS (SELECT 1 FROM deploy_job r WHERE r.app_id = c.app_id AND r.state = 'RUNNING' LIMIT 1) \
         AND NOT EXISTS (SELECT 1 FROM deploy_job o WHERE o.app_id = c.app_id AND o.state = 'PENDING' AND o.seq < c.seq) \
         ORDER BY c.seq LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((seq, job_id, app_id)) = picked else {
        tx.commit().await?;
        return Ok(false);
    };
    let node_id: Option<String> = sqlx::query_scalar(
        "SELECT p.node_id FROM runtime_placement p JOIN runtime_node n ON n.node_id = p.node_id \
         WHERE p.app_id = ? AND n.scheduling = 'ACTIVE' AND n.last_heartbeat_at >= ?",
    )
    .bind(&app_id)
    .bind(now - NODE_TTL_MS)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(node_id) = node_id else {
        tx.commit().await?;
        return Ok(false);
    };
    sqlx::query(
        "UPDATE deploy_job SET state = 'RUNNING', attempt = attempt + 1, node_id = ?, runner_id = 'raw', lease_token = ?, \
         lease_expires_at = ?, waiting_reason = NULL, started_at = ?, updated_at = ?, version = version + 1 WHERE seq = ?",
    )
    .bind(&node_id)
    .bind(token)
    .bind(lease_end)
    .bind(now)
    .bind(now)
    .bind(seq)
    .execute(&mut *tx)
    .await?;
    let event_id = uuid::Uuid::now_v7().to_string();
    let body = json!({ "eventId": event_id, "type": "job.running", "jobId": job_id, "appId": app_id,
        "state": "RUNNING", "nodeId": node_id, "runnerId": "raw" });
    sqlx::query("INSERT INTO outbox_event (event_id, routing_key, body, created_at) VALUES (?, 'job.running', ?, ?)")
        .bind(&event_id)
        .bind(body.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO app_run (app_id, last_job_id, state, node_id, updated_at) VALUES (?, ?, 'DEPLOYING', ?, ?) \
         ON DUPLICATE KEY UPDATE last_job_id = VALUES(last_job_id), state = VALUES(state), node_id = VALUES(node_id), \
         updated_at = VALUES(updated_at)",
    )
    .bind(&app_id)
    .bind(&job_id)
    .bind(&node_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}
