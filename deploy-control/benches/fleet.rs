//! The fleet simulator: simulated runtime agents and runners against the real control plane
//! (the `berth-control` binary, a child process with its default settings) on PostgreSQL.
//! Every agent joins once, then heartbeats at the agent's default interval (3 s, spread evenly
//! over it) reporting the apps placed on it; every runner long-polls `POST /runner/jobs/claim`
//! (`wait` 20, the runner's default) and reports success for the jobs a portal creates at a
//! steady rate. Five phases in one run, each row beside the first (the baseline):
//!
//! 1. `idle`: the control plane with no client (its background work alone), 16 s;
//! 2. `start`: the agents' first heartbeats, each a full write (the node comes `ONLINE`), until
//!    every agent's first heartbeat is answered and one interval more;
//! 3. `heartbeats`: the agents only, in their steady state;
//! 4. `restart`: the control plane killed and started again under the agents, two intervals
//!    from its first answer;
//! 5. `heartbeats + runners`: the agents, the runners and the job stream.
//!
//! Each row: heartbeats/s (as sent, and as `berth_node_heartbeats_total` in `/metrics`
//! counts), heartbeat latency p50 / p99 / max measured from each beat's scheduled time (a
//! beat that waits for a connection counts its wait), claims, the time from a job's creation
//! to a runner holding it (p50 / p99), the report's latency, database transactions/s of the
//! bench's database (`pg_stat_database`), the control plane's CPU (% of one core) and resident
//! memory, and the simulator's own CPU (it shares the machine). Nodes ever `OFFLINE`: the
//! highest `berth_nodes{state="OFFLINE"}` in `/metrics` (read every second) and the
//! `node.offline` events in the outbox — each node beats every 3 s against a 15 s TTL, so any
//! is a false `OFFLINE`.
//!
//! ```sh
//! ulimit -n 20000
//! cargo bench -p berth-control --bench fleet                      # 1,000 agents, 100 runners
//! BERTH_BENCH_NODES=10000 BERTH_BENCH_RUNNERS=1000 BERTH_BENCH_SECS=60 cargo bench -p berth-control --bench fleet
//! ```
//! Knobs: `BERTH_BENCH_HEARTBEAT_MS` (3000), `BERTH_BENCH_APPS` apps per node (3),
//! `BERTH_BENCH_JOB_RATE` jobs/s (20), `BERTH_BENCH_CONNECTIONS` (256). A real agent holds
//! one keep-alive connection of its own; the simulated agents share a pool of at most
//! `BERTH_BENCH_CONNECTIONS` keep-alive connections (at most that many heartbeats in flight),
//! so 10,000 agents fit in one process. Each runner holds its own connection, as a real one.
//! The apps reported are seeded with SQL (placements and runs, 3 per node) before the agents
//! start; the runners' jobs place new apps. Needs PostgreSQL on 127.0.0.1 as
//! `scripts/ensure-services.sh` leaves it.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{stream, StreamExt, TryStreamExt};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use support::child::{usage, ControlPlane, Usage};
use support::{
    drop_db, env_usize, fresh_db, join, ms_since, report_success, transactions, Samples,
    DEPLOY_SECRET, NODE_JOIN_TOKEN, RUNNER_TOKEN,
};
use tokio::sync::Semaphore;
use tokio::time::Instant as TokioInstant;

/// Seconds each claim waits, as a runner's default (`BERTH_RUNNER_CLAIM_WAIT_SECS`).
const CLAIM_WAIT: u64 = 20;
/// How long the idle phase lasts: past the default node TTL (15 s).
const IDLE: Duration = Duration::from_secs(16);
/// Longest the agents' start may take before the run fails.
const START_LIMIT: Duration = Duration::from_secs(120);
/// The phases after `idle`, in order.
const PHASES: [&str; 4] = ["start", "heartbeats", "restart", "heartbeats + runners"];

/// What the simulated clients saw in one phase.
#[derive(Default)]
struct Phase {
    heartbeats: Samples,
    heartbeat_errors: AtomicUsize,
    dispatch: Samples,
    reports: Samples,
    claim_errors: AtomicUsize,
}

/// The simulation's shared state: the phase clients record into, and the jobs in flight.
struct Sim {
    phases: [Phase; 4],
    current: AtomicUsize,
    stop: AtomicBool,
    /// When each job the portal created was asked for, by app.
    created: Mutex<HashMap<String, Instant>>,
    /// Agents whose first heartbeat was answered.
    started: AtomicUsize,
}

impl Sim {
    fn phase(&self) -> &Phase {
        &self.phases[self.current.load(Ordering::Relaxed).min(PHASES.len() - 1)]
    }
}

/// A phase's figures from the control plane's side.
struct Server {
    secs: f64,
    heartbeats: f64,
    claims: f64,
    transactions: f64,
    cpu: f64,
    rss: f64,
    sim_cpu: f64,
}

/// What a phase's measurement starts from.
struct Mark {
    at: Instant,
    heartbeats: f64,
    claims: f64,
    transactions: i64,
    usage: Usage,
    sim: Usage,
}

struct Knobs {
    nodes: usize,
    runners: usize,
    secs: u64,
    interval: Duration,
    apps: usize,
    job_rate: usize,
    connections: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let knobs = Knobs {
        nodes: env_usize("BERTH_BENCH_NODES", 1_000),
        runners: env_usize("BERTH_BENCH_RUNNERS", 100),
        secs: env_usize("BERTH_BENCH_SECS", 20) as u64,
        interval: Duration::from_millis(env_usize("BERTH_BENCH_HEARTBEAT_MS", 3_000) as u64),
        apps: env_usize("BERTH_BENCH_APPS", 3),
        job_rate: env_usize("BERTH_BENCH_JOB_RATE", 20).max(1),
        connections: env_usize("BERTH_BENCH_CONNECTIONS", 256).max(1),
    };
    let (url, name) = fresh_db().await?;
    let result = run(&knobs, &url, &name).await;
    drop_db(&name).await;
    result
}

async fn run(k: &Knobs, url: &str, name: &str) -> anyhow::Result<()> {
    let mut plane = ControlPlane::start(url, &[]).await?;
    let mut db = PgConnection::connect(url).await?;
    let scrape = reqwest::Client::new();
    println!(
        "Fleet simulator on PostgreSQL: {} agents heartbeating every {} ms with {} apps each ({} pooled connections), {} runners long-polling (wait {CLAIM_WAIT} s), {} jobs/s; {} s per phase; berth-control as a child process with its defaults (node TTL 15 s)",
        k.nodes, k.interval.as_millis(), k.apps, k.connections, k.runners, k.job_rate, k.secs
    );
    println!("  phase                  heartbeats/s sent / served   heartbeat p50 / p99 / max ms   errors   claims   dispatch p50 / p99 ms   report p50 / p99 ms   transactions/s   CPU %   RSS MiB   simulator CPU %");

    // 1. Idle: the control plane's background work alone. It lasts longer than the node TTL:
    // until the control plane has watched the nodes that long, every heartbeat wakes the
    // waiting claims (`service::nodes::heartbeat`), a start-up effect kept out of the phases.
    let from = mark(&plane, &scrape, &mut db, name).await?;
    tokio::time::sleep(IDLE).await;
    let idle = measure(&plane, &scrape, &mut db, name, &from).await?;
    println!("  {:<21}  {:>27}   {:>29}   {:>6}   {:>6}   {:>21}   {:>19}   {:>14.1}   {:>5.1}   {:>7.0}   {:>15.1}",
        "idle", "-", "-", "-", "-", "-", "-", idle.transactions, idle.cpu, idle.rss, idle.sim_cpu);

    let joined = Instant::now();
    let credentials = join_all(&plane.base, k.nodes).await?;
    let join_secs = joined.elapsed().as_secs_f64();
    seed_apps(&mut db, k.nodes, k.apps).await?;

    let sim = Arc::new(Sim {
        phases: Default::default(),
        current: AtomicUsize::new(0),
        started: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        created: Mutex::new(HashMap::new()),
    });
    let offline = Arc::new(AtomicUsize::new(0));
    let start_from = mark(&plane, &scrape, &mut db, name).await?;
    let started_at = Instant::now();
    let mut tasks = agents(&plane.base, k, credentials, &sim)?;
    tasks.push(watch_offline(
        plane.base.clone(),
        offline.clone(),
        sim.clone(),
    ));

    // 2. The agents' start. Each node's first heartbeat on a control plane takes the full path
    // (the node comes ONLINE, durably, before it is answered), so the first interval's beats
    // queue. The start lasts until every agent's first heartbeat is answered, and one interval
    // more for the beats that queued behind them; its row is apart from the steady phases.
    tokio::time::sleep(k.interval).await;
    while sim.started.load(Ordering::Relaxed) < k.nodes {
        anyhow::ensure!(
            started_at.elapsed() < START_LIMIT,
            "after {START_LIMIT:?} only {} of {} agents had their first heartbeat answered",
            sim.started.load(Ordering::Relaxed),
            k.nodes
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = started_at.elapsed().as_secs_f64();
    tokio::time::sleep(k.interval).await;
    sim.current.store(1, Ordering::Relaxed);
    let start = measure(&plane, &scrape, &mut db, name, &start_from).await?;
    row(PHASES[0], &sim.phases[0], &start);

    // 3. Heartbeats: the steady state.
    let from = mark(&plane, &scrape, &mut db, name).await?;
    tokio::time::sleep(Duration::from_secs(k.secs)).await;
    let beats = measure(&plane, &scrape, &mut db, name, &from).await?;
    row(PHASES[1], &sim.phases[1], &beats);

    // 4. A restart under the fleet: the control plane killed and started again on its address
    // and database. Beats that meet no server count as errors. The row covers two intervals
    // from the new process's first answer; a process that just started seeds its coalescing
    // from the node table (`service::beats`), so the nodes' first beats on it are not all
    // written in full.
    sim.current.store(2, Ordering::Relaxed);
    let down = Instant::now();
    plane.restart(url, &[]).await?;
    let down_secs = down.elapsed().as_secs_f64();
    let from = mark(&plane, &scrape, &mut db, name).await?;
    tokio::time::sleep(k.interval * 2).await;
    let restarted = measure(&plane, &scrape, &mut db, name, &from).await?;
    row(PHASES[2], &sim.phases[2], &restarted);
    let coalesced = plane
        .metric(&scrape, "berth_node_heartbeats_coalesced_total")
        .await?;
    let served = plane.metric(&scrape, "berth_node_heartbeats_total").await?;
    println!(
        "  (restart: down {down_secs:.1} s; {coalesced:.0} of the new process's first {served:.0} heartbeats answered from memory)"
    );

    // 5. Heartbeats, runners and the job stream.
    sim.current.store(3, Ordering::Relaxed);
    let runners = reqwest::Client::builder()
        .pool_max_idle_per_host(k.runners + 16)
        .build()?;
    tasks.extend(
        (0..k.runners).map(|i| runner(runners.clone(), plane.base.clone(), i, sim.clone())),
    );
    tasks.push(portal(
        runners.clone(),
        plane.base.clone(),
        k.job_rate,
        sim.clone(),
    ));
    let from = mark(&plane, &scrape, &mut db, name).await?;
    tokio::time::sleep(Duration::from_secs(k.secs)).await;
    let busy = measure(&plane, &scrape, &mut db, name, &from).await?;
    row(PHASES[3], &sim.phases[3], &busy);

    sim.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.abort();
    }
    let events: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox_event WHERE routing_key = 'node.offline'")
            .fetch_one(&mut db)
            .await?;
    println!(
        "  {} agents joined in {join_secs:.1} s ({:.0} joins/s); every agent's first heartbeat answered {drained:.1} s after they started; nodes ever OFFLINE: at most {} at once in /metrics, {events} node.offline events (goal: 0; heartbeat p99 < 50 ms)",
        k.nodes,
        k.nodes as f64 / join_secs.max(1e-9),
        offline.load(Ordering::Relaxed)
    );
    drop(db);
    plane.stop().await;
    Ok(())
}

/// Joins `nodes` agents (64 at a time, as many agents starting together); their credentials.
async fn join_all(base: &str, nodes: usize) -> anyhow::Result<Vec<String>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let client = &client;
    stream::iter(0..nodes)
        .map(|i| async move { join(client, base, NODE_JOIN_TOKEN, &node_id(i)).await })
        .buffered(64)
        .try_collect()
        .await
}

fn node_id(i: usize) -> String {
    format!("sim-node-{i}")
}

fn app_id(node: usize, app: usize) -> String {
    format!("sim-{node}-{app}")
}

/// Places `apps` running apps on each of `nodes` nodes (their placements and last-known runs,
/// written with SQL: setup, not measured), so each agent reports apps the control plane knows
/// are there.
async fn seed_apps(db: &mut PgConnection, nodes: usize, apps: usize) -> anyhow::Result<()> {
    let (nodes, apps) = (nodes as i64, apps as i64);
    sqlx::query(
        "INSERT INTO runtime_placement (app_id, node_id, memory_mb, cpu_millis, updated_at)
         SELECT 'sim-' || n || '-' || a, 'sim-node-' || n, 256, 250, 0
         FROM generate_series(0, $1 - 1) n, generate_series(0, $2 - 1) a",
    )
    .bind(nodes)
    .bind(apps)
    .execute(&mut *db)
    .await?;
    sqlx::query(
        "INSERT INTO app_run (app_id, last_job_id, state, image, node_id, url, updated_at)
         SELECT 'sim-' || n || '-' || a, md5('sim-' || n || '-' || a)::uuid::text, 'RUNNING',
                'img:1', 'sim-node-' || n, 'http://127.0.0.1:2/', 0
         FROM generate_series(0, $1 - 1) n, generate_series(0, $2 - 1) a",
    )
    .bind(nodes)
    .bind(apps)
    .execute(&mut *db)
    .await?;
    sqlx::query("ANALYZE").execute(&mut *db).await?;
    Ok(())
}

/// One task per agent, each beating every `k.interval` from its own offset in the interval.
fn agents(
    base: &str,
    k: &Knobs,
    credentials: Vec<String>,
    sim: &Arc<Sim>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(k.connections)
        .build()?;
    let permits = Arc::new(Semaphore::new(k.connections));
    let url = Arc::new(format!("{base}/internal/runtime-nodes/heartbeat"));
    let start = TokioInstant::now();
    let (interval, nodes, apps) = (k.interval, k.nodes, k.apps);
    Ok(credentials
        .into_iter()
        .enumerate()
        .map(|(i, credential)| {
            let (client, permits, url, sim) =
                (client.clone(), permits.clone(), url.clone(), sim.clone());
            let body = heartbeat_body(i, apps);
            let offset = interval.mul_f64(i as f64 / nodes as f64);
            tokio::spawn(async move {
                let mut due = start + offset;
                let mut first = true;
                while !sim.stop.load(Ordering::Relaxed) {
                    tokio::time::sleep_until(due).await;
                    let scheduled = due.into_std();
                    due += interval;
                    let Ok(_permit) = permits.acquire().await else {
                        return;
                    };
                    let res = client
                        .post(url.as_str())
                        .header("X-RT-Node-Token", &credential)
                        .header("Content-Type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    let phase = sim.phase();
                    match res {
                        Ok(res) if res.status() == 200 => {
                            // The answer is read, as an agent reads its removals and grant keys.
                            let _ = res.bytes().await;
                            phase.heartbeats.push(ms_since(scheduled));
                            if std::mem::take(&mut first) {
                                sim.started.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {
                            phase.heartbeat_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect())
}

/// Node `i`'s heartbeat (SPEC §7): a roomy node reporting its `apps` seeded apps.
fn heartbeat_body(i: usize, apps: usize) -> Vec<u8> {
    let reported: Vec<Value> = (0..apps)
        .map(|a| {
            json!({
                "appId": app_id(i, a), "containerId": format!("c{i}x{a}"),
                "image": "img:1", "state": "running",
            })
        })
        .collect();
    let body = json!({
        "nodeId": node_id(i), "name": node_id(i),
        "agentBaseUrl": "http://127.0.0.1:1", "gatewayBaseUrl": "http://127.0.0.1:2",
        "labels": {}, "capacity": { "cpus": 64.0, "memoryMb": 1_000_000, "maxApps": 10_000 },
        "apps": reported, "version": "fleet-sim"
    });
    body.to_string().into_bytes()
}

/// A runner: claims (long-polling), reports success, claims again.
fn runner(
    client: reqwest::Client,
    base: String,
    i: usize,
    sim: Arc<Sim>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let runner_id = format!("sim-runner-{i}");
        let claim_body = json!({ "runnerId": runner_id, "wait": CLAIM_WAIT });
        while !sim.stop.load(Ordering::Relaxed) {
            let res = client
                .post(format!("{base}/runner/jobs/claim"))
                .header("X-Runner-Token", RUNNER_TOKEN)
                .json(&claim_body)
                .send()
                .await;
            let claim: Value = match res {
                Ok(res) if res.status() == 200 => match res.json().await {
                    Ok(claim) => claim,
                    Err(_) => continue,
                },
                Ok(res) if res.status() == 204 => continue,
                _ => {
                    sim.phase().claim_errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let app = claim["job"]["appId"].as_str().unwrap_or_default();
            let asked = sim.created.lock().ok().and_then(|mut c| c.remove(app));
            if let Some(asked) = asked {
                sim.phase().dispatch.push(ms_since(asked));
            }
            let reported = Instant::now();
            let res = report_success(&client, &base, &runner_id, &claim).await;
            match res {
                Ok(res) if res.status() == 200 => sim.phase().reports.push(ms_since(reported)),
                _ => {
                    sim.phase().claim_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
}

/// A portal creating `rate` deploy jobs a second, each of a new app (so each claim places).
fn portal(
    client: reqwest::Client,
    base: String,
    rate: usize,
    sim: Arc<Sim>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
        for n in 0.. {
            tick.tick().await;
            if sim.stop.load(Ordering::Relaxed) {
                return;
            }
            let (client, base, sim) = (client.clone(), base.clone(), sim.clone());
            tokio::spawn(async move {
                let app = format!("sim-job-{n}");
                let asked = Instant::now();
                if let Ok(mut created) = sim.created.lock() {
                    created.insert(app.clone(), asked);
                }
                let res = client
                    .post(format!("{base}/deploy/jobs"))
                    .header("X-DEPLOY-SECRET", DEPLOY_SECRET)
                    .json(&json!({ "appId": app, "image": "img:1" }))
                    .send()
                    .await;
                if !res.is_ok_and(|r| r.status() == 201) {
                    sim.phase().claim_errors.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    })
}

/// Reads `berth_nodes{state="OFFLINE"}` every second and keeps the highest.
fn watch_offline(
    base: String,
    highest: Arc<AtomicUsize>,
    sim: Arc<Sim>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        while !sim.stop.load(Ordering::Relaxed) {
            if let Ok(res) = client.get(format!("{base}/metrics")).send().await {
                if let Ok(text) = res.text().await {
                    let n = support::child::sample(&text, "berth_nodes{state=\"OFFLINE\"}");
                    highest.fetch_max(n as usize, Ordering::Relaxed);
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

async fn mark(
    plane: &ControlPlane,
    scrape: &reqwest::Client,
    db: &mut PgConnection,
    name: &str,
) -> anyhow::Result<Mark> {
    Ok(Mark {
        at: Instant::now(),
        heartbeats: plane.metric(scrape, "berth_node_heartbeats_total").await?,
        claims: plane.metric(scrape, "berth_claims_total").await?,
        transactions: transactions(db, name).await?,
        usage: plane.usage()?,
        sim: usage(std::process::id())?,
    })
}

async fn measure(
    plane: &ControlPlane,
    scrape: &reqwest::Client,
    db: &mut PgConnection,
    name: &str,
    from: &Mark,
) -> anyhow::Result<Server> {
    let to = mark(plane, scrape, db, name).await?;
    let secs = to.at.duration_since(from.at).as_secs_f64();
    // Each read of the statistics is two transactions of its own; each scrape of /metrics
    // counts jobs and nodes (about two more).
    let own = 2 + 4;
    Ok(Server {
        secs,
        heartbeats: (to.heartbeats - from.heartbeats) / secs,
        claims: to.claims - from.claims,
        transactions: (to.transactions - from.transactions - own).max(0) as f64 / secs,
        cpu: to.usage.cpu_percent_since(&from.usage),
        rss: to.usage.rss_mib,
        sim_cpu: to.sim.cpu_percent_since(&from.sim),
    })
}

fn row(name: &str, phase: &Phase, s: &Server) {
    let [hb50, hb99, hbmax] = phase.heartbeats.quantiles([0.5, 0.99, 1.0]);
    let sent = phase.heartbeats.len() as f64 / s.secs;
    let errors =
        phase.heartbeat_errors.load(Ordering::Relaxed) + phase.claim_errors.load(Ordering::Relaxed);
    let (dispatch, report) = if phase.dispatch.len() + phase.reports.len() > 0 {
        let [d50, d99] = phase.dispatch.quantiles([0.5, 0.99]);
        let [r50, r99] = phase.reports.quantiles([0.5, 0.99]);
        (
            format!("{d50:.1} / {d99:.1}"),
            format!("{r50:.1} / {r99:.1}"),
        )
    } else {
        ("-".into(), "-".into())
    };
    println!(
        "  {name:<21}  {:>27}   {:>29}   {errors:>6}   {:>6.0}   {dispatch:>21}   {report:>19}   {:>14.1}   {:>5.1}   {:>7.0}   {:>15.1}",
        format!("{sent:.0} / {:.0}", s.heartbeats),
        format!("{hb50:.1} / {hb99:.1} / {hbmax:.1}"),
        s.claims,
        s.transactions,
        s.cpu,
        s.rss,
        s.sim_cpu
    );
}
