//! Status watchers on PostgreSQL, two shapes, each beside baselines from the same run:
//!
//! - **N watchers of one job**: N clients long-poll one job (`GET
//!   /deploy/jobs/{id}?version=&wait=`), a runner claims it, and every watcher must answer with
//!   the new version. Printed: p50 / p99 / last answer after the claim returned, and the database
//!   transactions of the window from 11 s before the claim to 11 s after the last answer
//!   (PostgreSQL reports an idle backend's statistics up to 10 s late). Baselines: the same
//!   window with no watcher, one watcher (the control plane's own single long poll), and the
//!   *floor*: a bare tokio server in this process answering N held connections with an answer
//!   of the same size on one signal, read by the same client.
//! - **N jobs, one watcher each**: N jobs, each long-polled by one client; every job is then
//!   cancelled (16 cancels in flight) and each watcher's answer is timed from its own job's
//!   cancel answer. Printed the same way, with the transactions per change beside the same N
//!   cancels with no watcher.
//!
//! The client is cheap on purpose (it shares the two cores with the control plane): one request
//! written on a raw TCP connection, the answer read to its `Content-Length`, checked only once
//! every answer is in; each connection stays open until then, as a keep-alive client's would.
//!
//! ```sh
//! ulimit -n 30000   # 10,000 watchers hold 20,000 sockets in this process
//! cargo bench -p berth-control --bench watchers
//! BERTH_BENCH_WATCHERS=0,1,1000,10000 BERTH_BENCH_JOBS=10000 cargo bench -p berth-control --bench watchers
//! ```
//! Knob: `BERTH_BENCH_CLAIM_PAUSE_MS` pauses before each claim (printed), to attach a profiler.
//! Needs PostgreSQL on 127.0.0.1 as `scripts/ensure-services.sh` leaves it.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use berth_control::config::EventSettings;
use berth_control::state::AppState;
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use support::{
    drop_db, env_usize, fresh_db, heartbeat, replica, transactions, DEPLOY_SECRET, RUNNER_TOKEN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// Longer than PostgreSQL's delay in reporting an idle backend's statistics.
const STATS_DELAY: Duration = Duration::from_secs(11);
/// Connections opened at once (the listener's backlog).
const CONNECTING: usize = 256;
/// Cancels in flight in the many-jobs shape.
const CANCELLERS: usize = 16;

/// A job's watcher: its answer's moment, its bytes, and its connection — kept open, as a
/// keep-alive client keeps it for its next poll, until every answer is in (closing each one as
/// its answer lands would spend the cores the later answers need on connection teardown).
type Answer = (Instant, Vec<u8>, TcpStream);

struct Bench {
    client: reqwest::Client,
    base: String,
    addr: SocketAddr,
    state: AppState,
    stats: PgConnection,
    db: String,
    gate: Arc<Semaphore>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let counts: Vec<usize> = std::env::var("BERTH_BENCH_WATCHERS")
        .unwrap_or_else(|_| "0,1,1000,10000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let jobs = env_usize("BERTH_BENCH_JOBS", 10_000);
    let most = counts.iter().copied().max().unwrap_or(0).max(jobs);
    check_files(2 * most + 500)?;
    let (url, db) = fresh_db().await?;
    let (base, state) = replica(&url, EventSettings::default()).await?;
    let client = reqwest::Client::builder().build()?;
    heartbeat(&client, &base).await?;
    let addr = base.trim_start_matches("http://").parse()?;
    let stats = PgConnection::connect(&url).await?;
    let mut bench = Bench {
        client,
        base,
        addr,
        state,
        stats,
        db,
        gate: Arc::new(Semaphore::new(CONNECTING)),
    };
    let result = run(&mut bench, &counts, jobs).await;
    drop_db(&bench.db).await;
    result
}

async fn run(bench: &mut Bench, counts: &[usize], jobs: usize) -> anyhow::Result<()> {
    println!("Status watchers on PostgreSQL: long polls answered after their job changes");
    println!("N watchers of one job, answered after a claim:");
    println!("  watchers   answers p50 / p99 / last (ms)   floor p50 / p99 / last (ms)   transactions in the window");
    for (round, &n) in counts.iter().enumerate() {
        one_job(bench, round, n).await?;
    }
    if jobs > 0 {
        println!("N jobs, one watcher each, every job cancelled ({CANCELLERS} cancels in flight), each answer timed from its own job's cancel:");
        println!("  jobs   watchers   answers p50 / p99 / last (ms)   transactions in the window (per change)");
        for watched in [false, true] {
            many_jobs(bench, jobs, watched).await?;
        }
    }
    Ok(())
}

/// N watchers of one job, then a claim.
async fn one_job(bench: &mut Bench, round: usize, n: usize) -> anyhow::Result<()> {
    let job = create(&bench.client, &bench.base, &format!("watched-{round}")).await?;
    let (job_id, version) = id_version(&job)?;
    let watchers: Vec<_> = watch_jobs(bench, &vec![(job_id, version); n]).await?;
    until_watching(&bench.state, &[job_id], n).await;
    // Idle backends report their statistics up to 10 s late (PostgreSQL 15): let the
    // watchers' own first reads land before counting.
    tokio::time::sleep(STATS_DELAY).await;
    let before = transactions(&mut bench.stats, &bench.db).await?;
    let pause = env_usize("BERTH_BENCH_CLAIM_PAUSE_MS", 0);
    if pause > 0 {
        // A window to attach a profiler to this process before the change.
        println!("  ({n} watching; claiming in {pause} ms: BERTH_BENCH_CLAIM_PAUSE_MS)");
        tokio::time::sleep(Duration::from_millis(pause as u64)).await;
    }
    let changed = claim(&bench.client, &bench.base).await?;
    let mut after_ms = Vec::with_capacity(n);
    let mut open = Vec::with_capacity(n);
    for w in watchers {
        let (at, bytes, connection) = w.await??;
        check(&bytes, version)?;
        after_ms.push(ms_since(changed, at));
        open.push(connection);
    }
    drop(open);
    tokio::time::sleep(STATS_DELAY).await;
    // Each read of the statistics is two transactions of its own.
    let spent = transactions(&mut bench.stats, &bench.db).await? - before - 2;
    let answer_len = serde_json::to_vec(&job)?.len();
    let floor = if n > 0 {
        spread(&mut floor(bench, n, answer_len).await?)
    } else {
        "-".to_owned()
    };
    println!(
        "  {n:>8}   {:>28}   {floor:>26}   {spent}",
        spread(&mut after_ms)
    );
    Ok(())
}

/// N jobs with one watcher each (none when `!watched`), then every job cancelled.
async fn many_jobs(bench: &mut Bench, n: usize, watched: bool) -> anyhow::Result<()> {
    let tag = if watched { "many" } else { "many-idle" };
    let created: Vec<Value> = futures::stream::iter(0..n)
        .map(|i| {
            let (client, base) = (&bench.client, &bench.base);
            async move { create(client, base, &format!("{tag}-{i}")).await }
        })
        .buffered(CANCELLERS)
        .try_collect()
        .await?;
    let jobs = created
        .iter()
        .map(id_version)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let watchers = if watched {
        watch_jobs(bench, &jobs).await?
    } else {
        Vec::new()
    };
    let ids: Vec<Uuid> = jobs.iter().map(|(id, _)| *id).collect();
    until_watching(&bench.state, &ids, usize::from(watched)).await;
    tokio::time::sleep(STATS_DELAY).await;
    let before = transactions(&mut bench.stats, &bench.db).await?;
    let (client, base) = (&bench.client, &bench.base);
    let cancelled: Vec<Instant> = futures::stream::iter(&ids)
        .map(|id| cancel(client, base, *id))
        .buffered(CANCELLERS)
        .try_collect()
        .await?;
    let mut after_ms = Vec::with_capacity(watchers.len());
    let mut open = Vec::with_capacity(watchers.len());
    for ((w, at), (_, version)) in watchers.into_iter().zip(&cancelled).zip(&jobs) {
        let (answered, bytes, connection) = w.await??;
        check(&bytes, *version)?;
        after_ms.push(ms_since(*at, answered));
        open.push(connection);
    }
    drop(open);
    tokio::time::sleep(STATS_DELAY).await;
    let spent = transactions(&mut bench.stats, &bench.db).await? - before - 2;
    let times = if watched {
        spread(&mut after_ms)
    } else {
        "- (baseline)".to_owned()
    };
    println!(
        "  {n:>4}   {:>8}   {times:>28}   {spent} ({:.2})",
        if watched { n } else { 0 },
        spent as f64 / n as f64
    );
    Ok(())
}

/// One long poll per `(job, version)`, each on its own connection, `CONNECTING` connecting at a
/// time.
async fn watch_jobs(
    bench: &Bench,
    jobs: &[(Uuid, i64)],
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<Answer>>>> {
    let mut watchers = Vec::with_capacity(jobs.len());
    for (job_id, version) in jobs {
        let request = format!(
            "GET /deploy/jobs/{job_id}?version={version}&wait=60 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             X-DEPLOY-SECRET: {DEPLOY_SECRET}\r\n\r\n"
        );
        let permit = bench.gate.clone().acquire_owned().await?;
        watchers.push(tokio::spawn(long_poll(bench.addr, request, permit)));
    }
    Ok(watchers)
}

/// Sends `request` on a new connection and reads one whole answer (its head and its
/// `Content-Length` body): the moment it was complete, and its bytes.
async fn long_poll(
    addr: SocketAddr,
    request: String,
    connecting: OwnedSemaphorePermit,
) -> anyhow::Result<Answer> {
    let stream = TcpStream::connect(addr).await;
    drop(connecting);
    let mut stream = stream?;
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(2048);
    while answer_len(&buf).is_none_or(|len| buf.len() < len) {
        anyhow::ensure!(
            stream.read_buf(&mut buf).await? > 0,
            "closed before the answer was complete"
        );
    }
    Ok((Instant::now(), buf, stream))
}

/// The length of a whole answer whose head is in `buf`, once the head is complete.
fn answer_len(buf: &[u8]) -> Option<usize> {
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let body = std::str::from_utf8(&buf[..head])
        .ok()?
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    Some(head + body)
}

/// That `answer` is a `200` with a version newer than `version`.
fn check(answer: &[u8], version: i64) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(answer);
    anyhow::ensure!(text.starts_with("HTTP/1.1 200"), "not a 200: {text}");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let body: Value = serde_json::from_str(body).context("the answer's body")?;
    anyhow::ensure!(
        body["version"].as_i64() > Some(version),
        "an old version: {body}"
    );
    Ok(())
}

/// The floor: a bare tokio server holding `n` connections, each request's head read, answers
/// all of them with `len` bytes of body on one signal and keeps them open; the client is the
/// watchers' own.
async fn floor(bench: &Bench, n: usize, len: usize) -> anyhow::Result<Vec<f64>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let answer: Arc<[u8]> = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n{}",
        " ".repeat(len)
    )
    .into_bytes()
    .into();
    let (go, signal) = watch::channel(false);
    let (held_tx, mut held) = tokio::sync::mpsc::channel::<()>(n.max(1));
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (answer, mut signal, held_tx) = (answer.clone(), signal.clone(), held_tx.clone());
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(512);
                while answer_len(&buf).is_none() {
                    if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                }
                let _ = held_tx.send(()).await;
                if signal.wait_for(|go| *go).await.is_ok() {
                    let _ = stream.write_all(&answer).await;
                    // Held open, as a keep-alive server holds it, until the client closes it.
                    let _ = stream.read(&mut [0u8; 1]).await;
                }
            });
        }
    });
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let permit = bench.gate.clone().acquire_owned().await?;
        let request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_owned();
        clients.push(tokio::spawn(long_poll(addr, request, permit)));
    }
    for _ in 0..n {
        held.recv().await.context("the floor server stopped")?;
    }
    let changed = Instant::now();
    go.send_replace(true);
    let mut after_ms = Vec::with_capacity(n);
    let mut open = Vec::with_capacity(n);
    for c in clients {
        let (at, _, connection) = c.await??;
        after_ms.push(ms_since(changed, at));
        open.push(connection);
    }
    drop(open);
    server.abort();
    Ok(after_ms)
}

/// p50 / p99 / last of `ms`, or `-` for none.
fn spread(ms: &mut [f64]) -> String {
    if ms.is_empty() {
        return "-".to_owned();
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    format!("{:.1} / {:.1} / {:.1}", at(0.5), at(0.99), ms[ms.len() - 1])
}

/// Milliseconds from `from` to `to` (0 when `to` came first).
fn ms_since(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}

/// That this process may hold `needed` files, or how to allow it.
fn check_files(needed: usize) -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse::<usize>().ok());
    match soft {
        Some(soft) if soft < needed => anyhow::bail!(
            "{needed} open files needed, {soft} allowed: run `ulimit -n {needed}` first"
        ),
        _ => Ok(()),
    }
}

fn id_version(job: &Value) -> anyhow::Result<(Uuid, i64)> {
    let id = job["jobId"].as_str().unwrap_or_default().parse()?;
    Ok((id, job["version"].as_i64().unwrap_or_default()))
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

/// Cancels `job_id`; the moment the cancel answered.
async fn cancel(client: &reqwest::Client, base: &str, job_id: Uuid) -> anyhow::Result<Instant> {
    let res = client
        .post(format!("{base}/deploy/jobs/{job_id}/cancel"))
        .header("X-DEPLOY-SECRET", DEPLOY_SECRET)
        .send()
        .await?;
    let at = Instant::now();
    anyhow::ensure!(res.status() == 200, "cancel: {}", res.status());
    Ok(at)
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

/// Waits until each of `jobs` has `n` long polls holding its watch.
async fn until_watching(state: &AppState, jobs: &[Uuid], n: usize) {
    while jobs.iter().any(|id| state.wake().watchers(*id) < n) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
