//! Node heartbeats through one control plane beside the same database's raw single-row
//! upserts, in one run: `N` joined nodes heartbeat from 16 concurrent senders over HTTP on
//! 127.0.0.1, first repeating what they reported (coalesced: answered from memory, written by
//! the batch flush), then changing their report on every heartbeat (each one written in full);
//! the baseline is `pgbench` (or, without it, sqlx) upserting one row of a node table like
//! `runtime_node` per transaction from 16 connections to the same PostgreSQL.
//!
//! ```sh
//! nice cargo bench -p berth-control --bench heartbeats
//! BERTH_BENCH_NODES=10000 BERTH_BENCH_SECS=20 BERTH_BENCH_SENDERS=16 cargo bench -p berth-control --bench heartbeats
//! ```
//! Needs PostgreSQL on 127.0.0.1 as `scripts/ensure-services.sh` leaves it (`pgbench` comes with
//! `postgresql-client`). The control plane, its senders and `pgbench` share this machine's cores.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_control::config::EventSettings;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use support::{
    drop_db, env_usize, fresh_db, join, ms_since, percentiles, replica, NODE_JOIN_TOKEN,
};

/// The node table the baseline upserts: `runtime_node`'s columns a heartbeat writes.
const BASELINE_TABLE: &str =
    "CREATE TABLE bench_node (node_id TEXT PRIMARY KEY, name TEXT NOT NULL, \
    labels TEXT NOT NULL, cpus DOUBLE PRECISION NOT NULL, memory_mb BIGINT NOT NULL, \
    reported_apps TEXT NOT NULL, version TEXT NOT NULL, state TEXT NOT NULL, \
    last_heartbeat_at BIGINT NOT NULL)";

/// One baseline transaction: a heartbeat's upsert of one random node's row.
const BASELINE_UPSERT: &str = "INSERT INTO bench_node (node_id, name, labels, cpus, memory_mb, \
    reported_apps, version, state, last_heartbeat_at) VALUES ($1, $1, '{}', 4, 8192, '[]', 'bench', \
    'ONLINE', $2) ON CONFLICT (node_id) DO UPDATE SET name = EXCLUDED.name, labels = EXCLUDED.labels, \
    cpus = EXCLUDED.cpus, memory_mb = EXCLUDED.memory_mb, reported_apps = EXCLUDED.reported_apps, \
    version = EXCLUDED.version, state = 'ONLINE', last_heartbeat_at = EXCLUDED.last_heartbeat_at";

/// Throughput and latency of one phase.
struct Figure {
    per_sec: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl Figure {
    /// The figure of `tasks` started at `started`, each returning the latencies (ms) it took.
    async fn gathered(
        tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Vec<f64>>>>,
        started: Instant,
    ) -> anyhow::Result<Figure> {
        let mut times = Vec::new();
        for task in tasks {
            times.extend(task.await??);
        }
        let per_sec = times.len() as f64 / started.elapsed().as_secs_f64();
        let (p50, p99) = percentiles(&mut times);
        Ok(Figure {
            per_sec,
            p50_ms: Some(p50),
            p99_ms: Some(p99),
        })
    }

    fn row(&self, what: &str, baseline: f64) {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        println!(
            "  {what:<44} {:>10.0}   {:>8} / {:<8}   {:>5.2}x",
            self.per_sec,
            ms(self.p50_ms),
            ms(self.p99_ms),
            self.per_sec / baseline
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let nodes = env_usize("BERTH_BENCH_NODES", 2_000);
    let senders = env_usize("BERTH_BENCH_SENDERS", 16);
    let secs = env_usize("BERTH_BENCH_SECS", 10) as u64;
    let (url, name) = fresh_db().await?;
    let (base, _state) = replica(&url, EventSettings::default()).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(senders * 2)
        .build()?;
    let fleet = Arc::new(join_fleet(&client, &base, nodes).await?);

    println!("Node heartbeats on PostgreSQL: {nodes} joined nodes, {senders} concurrent senders, {secs} s a phase");
    println!(
        "  {:<44} {:>10}   {:^19}   ratio",
        "", "per second", "p50 / p99 (ms)"
    );
    let baseline = raw_upserts(&url, &name, nodes, senders, secs).await?;
    baseline.row("raw single-row upserts (baseline)", baseline.per_sec);
    let coalesced = send(&client, &base, &fleet, senders, secs, false).await?;
    coalesced.row("heartbeats, report unchanged (coalesced)", baseline.per_sec);
    let changed = send(&client, &base, &fleet, senders, secs, true).await?;
    changed.row(
        "heartbeats, report changed (written in full)",
        baseline.per_sec,
    );
    let again = raw_upserts(&url, &name, nodes, senders, secs).await?;
    again.row("raw single-row upserts (again)", baseline.per_sec);
    drop_db(&name).await;
    Ok(())
}

/// A joined node: its id and credential.
struct Node {
    id: String,
    credential: String,
}

/// Joins `n` nodes, each with one first heartbeat (the full write that lets the next coalesce).
async fn join_fleet(client: &reqwest::Client, base: &str, n: usize) -> anyhow::Result<Vec<Node>> {
    let mut fleet = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("node-{i:05}");
        let credential = join(client, base, NODE_JOIN_TOKEN, &id).await?;
        let node = Node { id, credential };
        beat(client, base, &node, "bench").await?;
        fleet.push(node);
    }
    Ok(fleet)
}

/// The heartbeat of `node` reporting agent version `version`.
fn body(node: &Node, version: &str) -> Vec<u8> {
    json!({
        "nodeId": node.id, "name": node.id,
        "agentBaseUrl": "http://127.0.0.1:1", "gatewayBaseUrl": "http://127.0.0.1:2",
        "labels": { "zone": "a" }, "capacity": { "cpus": 4.0, "memoryMb": 8192, "maxApps": 50 },
        "apps": [], "version": version
    })
    .to_string()
    .into_bytes()
}

/// One heartbeat, which must be answered `200`.
async fn beat(
    client: &reqwest::Client,
    base: &str,
    node: &Node,
    version: &str,
) -> anyhow::Result<()> {
    let res = client
        .post(format!("{base}/internal/runtime-nodes/heartbeat"))
        .header("X-RT-Node-Token", node.credential.as_str())
        .header("Content-Type", "application/json")
        .body(body(node, version))
        .send()
        .await?;
    anyhow::ensure!(res.status() == 200, "heartbeat: {}", res.status());
    Ok(())
}

/// `senders` tasks heartbeating the fleet's nodes in turn for `secs` seconds; with `change`, each
/// heartbeat reports another agent version than the node's last one.
async fn send(
    client: &reqwest::Client,
    base: &str,
    fleet: &Arc<Vec<Node>>,
    senders: usize,
    secs: u64,
    change: bool,
) -> anyhow::Result<Figure> {
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|s| {
            let (client, base, fleet) = (client.clone(), base.to_owned(), fleet.clone());
            tokio::spawn(async move {
                let mut times = Vec::new();
                let mut round = 0usize;
                while Instant::now() < until {
                    for node in fleet.iter().skip(s).step_by(senders) {
                        if Instant::now() >= until {
                            break;
                        }
                        let version = if change {
                            format!("bench-{}", round % 2)
                        } else {
                            "bench".to_owned()
                        };
                        let sent = Instant::now();
                        beat(&client, &base, node, &version).await?;
                        times.push(ms_since(sent));
                    }
                    round += 1;
                }
                anyhow::Ok(times)
            })
        })
        .collect();
    Figure::gathered(tasks, started).await
}

/// The baseline: single-row upserts of random nodes from `senders` connections for `secs`
/// seconds, by `pgbench` when it is installed, else by sqlx from this process.
async fn raw_upserts(
    url: &str,
    name: &str,
    nodes: usize,
    senders: usize,
    secs: u64,
) -> anyhow::Result<Figure> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::query("DROP TABLE IF EXISTS bench_node")
        .execute(&mut conn)
        .await?;
    sqlx::query(BASELINE_TABLE).execute(&mut conn).await?;
    match pgbench(name, nodes, senders, secs)? {
        Some(per_sec) => Ok(Figure {
            per_sec,
            p50_ms: None,
            p99_ms: None,
        }),
        None => sqlx_upserts(url, nodes, senders, secs).await,
    }
}

/// `pgbench`'s transactions/s for [`BASELINE_UPSERT`]; `None` when it is not installed.
fn pgbench(name: &str, nodes: usize, senders: usize, secs: u64) -> anyhow::Result<Option<f64>> {
    let script = tempfile::NamedTempFile::new()?;
    let upsert = BASELINE_UPSERT.replace("$1", "('node-' || :n)").replace(
        "$2",
        "(extract(epoch from clock_timestamp()) * 1000)::bigint",
    );
    std::fs::write(
        script.path(),
        format!("\\set n random(1, {nodes})\n{upsert};\n"),
    )?;
    let run = std::process::Command::new("pgbench")
        .args(["-n", "-h", "127.0.0.1", "-U", "postgres", "-j", "2"])
        .args(["-c", &senders.to_string(), "-T", &secs.to_string(), "-f"])
        .arg(script.path())
        .arg(name)
        .output();
    let out = match run {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "pgbench: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench's output: {text}"))?;
    Ok(Some(tps))
}

/// [`BASELINE_UPSERT`] from `senders` sqlx connections.
async fn sqlx_upserts(
    url: &str,
    nodes: usize,
    senders: usize,
    secs: u64,
) -> anyhow::Result<Figure> {
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let mut conn = PgConnection::connect(url).await?;
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let mut i = s;
            while Instant::now() < until {
                let sent = Instant::now();
                let at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_millis() as i64;
                sqlx::query(BASELINE_UPSERT)
                    .bind(format!("node-{}", i % nodes + 1))
                    .bind(at)
                    .execute(&mut conn)
                    .await?;
                times.push(ms_since(sent));
                i += senders;
            }
            anyhow::Ok(times)
        }));
    }
    Figure::gathered(tasks, started).await
}
