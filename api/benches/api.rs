//! berth-api benchmark (not a test): each figure beside a baseline from the same run.
//!
//! ```sh
//! cargo bench -p berth-api --bench api
//! # knobs: BERTH_BENCH_WATCHERS=10000 BERTH_BENCH_CLIENTS=64 BERTH_BENCH_SECS=3
//! #        BERTH_BENCH_ROUNDS=2 BERTH_BENCH_ACCEPTS=200 BERTH_BENCH_CANCEL_PAUSE_MS=0
//! #        BERTH_BENCH_KEEPALIVE=1 (part 2's watchers keep their connections, as browsers do;
//! #        by default each asks `Connection: close`)
//! ```
//!
//! The control plane runs in this process (SQLite); the api runs in a child process — this same
//! binary, started again with `BERTH_BENCH_ROLE=api` — so its memory and its sockets can be read
//! from `/proc/{pid}` apart from the clients'. Everything is on 127.0.0.1.
//! 1. Requests/s of `GET /v1/apps/{appId}` with a key (the key check, the rate limit, the app's
//!    row and its newest deployment, a cancelled one) beside the same process's unauthenticated
//!    `GET /internal/health`, `BERTH_BENCH_CLIENTS`
//!    keep-alive connections, `BERTH_BENCH_SECS` per phase, phases alternating for
//!    `BERTH_BENCH_ROUNDS` rounds; medians and their ratio (goal ≥ 0.5×).
//! 2. Twice, `BERTH_BENCH_WATCHERS` long polls (`?wait=60&version=V`, one connection each) of one
//!    deployment: the api's RSS before and while they wait (per watcher), its TCP connections to
//!    the control plane (its socket inodes matched in `/proc/net/tcp`), then the job is cancelled
//!    upstream and every watcher's answer is timed from the cancel request: p50/p99/max (goal p99
//!    ≤ 100 ms), and its RSS once they are gone. Baseline: one long poll on the control plane's own `GET /deploy/jobs/{id}?wait=`,
//!    woken by the same cancel.
//! 3. Accept latency: `POST /v1/apps/{appId}/deployments` through the api beside `POST
//!    /deploy/jobs` straight to the control plane, alternating, `BERTH_BENCH_ACCEPTS` each:
//!    p50/p99 and their ratio. No runner or agent runs, so this is the api's overhead on a
//!    deployment, not a whole deployment (docs/benchmarks-api.md relates the two).

mod support;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::config::test_secrets::ADMIN_TOKEN as ADMIN;
use berth_api::config::Settings;
use berth_control::config::test_secrets::DEPLOY_SECRET as DEPLOY;
use berth_control::config::Settings as ControlSettings;
use berth_control::queue::retry::RetryPolicy;
use berth_shared::secret::Secret;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use support::{env_usize, percentile};

const ROLE: &str = "BERTH_BENCH_ROLE";
const IMAGE: &str = "127.0.0.1:5000/bench/app:v1";

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match std::env::var(ROLE).as_deref() {
        Ok("api") => return runtime.block_on(serve_api()),
        Ok("floor") => return runtime.block_on(serve_floor()),
        _ => {}
    }
    runtime.block_on(bench())
}

/// The child: the api on 127.0.0.1:0, its port on stdout, until stdin closes.
async fn serve_api() -> anyhow::Result<()> {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let settings = Settings::for_tests(
        &var("BERTH_DATABASE_URL"),
        &var("BERTH_CONTROL_URL"),
        Secret::new(DEPLOY),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let app = berth_api::startup::Application::build(settings, listener).await?;
    println!("{}", app.port());
    app.run(async {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    })
    .await
}

/// Part 2's `Connection` header: `keep-alive` with `BERTH_BENCH_KEEPALIVE=1`, else `close`.
fn connection() -> &'static str {
    match std::env::var("BERTH_BENCH_KEEPALIVE").as_deref() {
        Ok("1") => "keep-alive",
        _ => "close",
    }
}

/// The floor's child: a bare tokio server on 127.0.0.1:0 (its port on stdout) that reads each
/// request's head and holds it; a `GET /go` answers every held request at once with
/// `BERTH_FLOOR_BYTES` bytes and part 2's [`connection`] header, then closes it (or, kept
/// alive, once the client does) — the api's answer to a watcher with nothing of the api in it.
async fn serve_floor() -> anyhow::Result<()> {
    let len = env_usize("BERTH_FLOOR_BYTES", 300);
    let answer: Arc<[u8]> = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\
         connection: {}\r\n\r\n{}",
        connection(),
        " ".repeat(len)
    )
    .into_bytes()
    .into();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    let (go, signal) = tokio::sync::watch::channel(false);
    let go = Arc::new(go);
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
        std::process::exit(0);
    });
    loop {
        let (mut stream, _) = listener.accept().await?;
        let (answer, mut signal, go) = (answer.clone(), signal.clone(), go.clone());
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(512);
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                if stream.read_buf(&mut head).await.unwrap_or(0) == 0 {
                    return;
                }
            }
            if head.starts_with(b"GET /go ") {
                go.send_replace(true);
            } else if signal.wait_for(|go| *go).await.is_ok()
                && stream.write_all(&answer).await.is_ok()
                && connection() == "keep-alive"
            {
                while stream.read_buf(&mut head).await.unwrap_or(0) > 0 {}
            }
        });
    }
}

/// A child process (the api, or the floor's server); it ends when this is dropped (its stdin
/// closes).
struct ApiProcess {
    child: Child,
    base: String,
    port: u16,
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn start_api(database_url: &str, control_url: &str) -> anyhow::Result<ApiProcess> {
    start_child(
        Command::new(std::env::current_exe()?)
            .env(ROLE, "api")
            .env("BERTH_DATABASE_URL", database_url)
            .env("BERTH_CONTROL_URL", control_url),
    )
}

/// Starts this binary again as `command` says; it prints its port first.
fn start_child(command: &mut Command) -> anyhow::Result<ApiProcess> {
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    let port: u16 = line
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("the child printed {line:?}: {e}"))?;
    Ok(ApiProcess {
        child,
        base: format!("http://127.0.0.1:{port}"),
        port,
    })
}

struct Ctx {
    http: reqwest::Client,
    api: ApiProcess,
    control: String,
    control_port: u16,
    key: String,
}

impl Ctx {
    async fn call(&self, request: reqwest::RequestBuilder, status: u16) -> anyhow::Result<Value> {
        let res = request.send().await?;
        let got = res.status().as_u16();
        let text = res.text().await?;
        anyhow::ensure!(got == status, "answered {got}, not {status}: {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn tenant(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.api.base))
            .bearer_auth(&self.key)
    }

    fn deploy(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.control))
            .header("X-DEPLOY-SECRET", DEPLOY)
    }
}

async fn bench() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let control_db = format!(
        "sqlite://{}?mode=rwc",
        tmp.path().join("control.db").display()
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let control_settings = ControlSettings {
        retry: RetryPolicy {
            max_attempts: 3,
            base_ms: 100,
            cap_ms: 1000,
        },
        sweep_interval: Duration::from_millis(500),
        ..ControlSettings::for_tests(&control_db)
    };
    let control_app =
        berth_control::startup::Application::build(control_settings, listener).await?;
    let control_port = control_app.port();
    let control = format!("http://127.0.0.1:{control_port}");
    tokio::spawn(control_app.run(std::future::pending::<()>()));

    let api_db = format!("sqlite://{}?mode=rwc", tmp.path().join("api.db").display());
    let api = start_api(&api_db, &control)?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let max = 1_000_000;
    let tenant = json!({
        "tenantId": "bench", "name": "Bench",
        "quotas": { "maxApps": max, "maxConcurrentDeploys": max, "deploysPerDay": max, "deploysPerMonth": max },
        "rateLimitPerMinute": max,
    });
    let mut ctx = Ctx {
        http,
        api,
        control,
        control_port,
        key: String::new(),
    };
    let admin = |path: &str| {
        ctx.http
            .post(format!("{}{path}", ctx.api.base))
            .header("X-Admin-Token", ADMIN)
    };
    ctx.call(admin("/v1/tenants").json(&tenant), 201).await?;
    let key = ctx
        .call(
            admin("/v1/tenants/bench/keys").json(&json!({"name": "bench"})),
            201,
        )
        .await?;
    ctx.key = key["key"].as_str().unwrap_or_default().to_owned();
    for app in ["bench-read", "bench-watch", "bench-accept"] {
        let spec = json!({ "image": IMAGE, "env": { "A": "1" } });
        ctx.call(
            ctx.tenant(reqwest::Method::PUT, &format!("/v1/apps/{app}"))
                .json(&spec),
            201,
        )
        .await?;
    }
    println!(
        "berth-api bench: api pid {}, control plane on SQLite in this process\n",
        ctx.api.child.id()
    );

    read_history(&ctx).await?;
    let health_rate = throughput(&ctx).await?;
    watchers(&ctx, health_rate).await?;
    accepts(&ctx).await?;
    Ok(())
}

/// `clients` keep-alive connections asking `path` for `secs`: answers per second, and how
/// many were not 200.
async fn load(port: u16, path: &str, auth: Option<&str>, clients: usize, secs: f64) -> (f64, u64) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let path = path.to_owned();
        let auth = auth.map(|k| format!("Bearer {k}"));
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut bad) = (0u64, 0u64);
            let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
                return (0, 1);
            };
            let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            else {
                return (0, 1);
            };
            tokio::spawn(conn);
            while Instant::now() < deadline {
                let mut request = hyper::Request::get(path.as_str()).header("host", "127.0.0.1");
                if let Some(auth) = &auth {
                    request = request.header("authorization", auth.as_str());
                }
                let Ok(request) = request.body(Empty::<Bytes>::new()) else {
                    return (ok, bad + 1);
                };
                match sender.send_request(request).await {
                    Ok(res) => {
                        let fine = res.status() == 200;
                        if res.into_body().collect().await.is_ok() && fine {
                            ok += 1;
                        } else {
                            bad += 1;
                        }
                    }
                    Err(_) => return (ok, bad + 1),
                }
            }
            (ok, bad)
        }));
    }
    let (mut ok, mut bad) = (0, 0);
    for task in tasks {
        let (o, b) = task.await.unwrap_or((0, 1));
        ok += o;
        bad += b;
    }
    (ok as f64 / started.elapsed().as_secs_f64(), bad)
}

/// Gives phase 1's app a newest deployment, as a portal's app has: deployed, cancelled
/// upstream (so no follower stays open for phase 2 to count), and seen `CANCELLED` by the api.
async fn read_history(ctx: &Ctx) -> anyhow::Result<()> {
    let d = ctx
        .call(
            ctx.tenant(reqwest::Method::POST, "/v1/apps/bench-read/deployments"),
            201,
        )
        .await?;
    let id = d["deploymentId"].as_str().unwrap_or_default().to_owned();
    let pending = "/deploy/jobs?appId=bench-read&state=PENDING";
    let jobs = ctx
        .call(ctx.deploy(reqwest::Method::GET, pending), 200)
        .await?;
    let job_id = jobs["items"][0]["jobId"].as_str().unwrap_or_default();
    let cancel = format!("/deploy/jobs/{job_id}/cancel");
    ctx.call(ctx.deploy(reqwest::Method::POST, &cancel), 200)
        .await?;
    let mut seen = d;
    while seen["state"] != "CANCELLED" {
        let path = format!("/v1/deployments/{id}?wait=10&version={}", seen["version"]);
        seen = ctx
            .call(ctx.tenant(reqwest::Method::GET, &path), 200)
            .await?;
    }
    Ok(())
}

/// Phase 1; the health route's rate, the floor phase 2 is set against.
async fn throughput(ctx: &Ctx) -> anyhow::Result<f64> {
    let clients = env_usize("BERTH_BENCH_CLIENTS", 64);
    let secs = env_usize("BERTH_BENCH_SECS", 3) as f64;
    let rounds = env_usize("BERTH_BENCH_ROUNDS", 2);
    let port = ctx.api.port;
    // Warm both paths (the key cache, the pool) before the clock.
    load(port, "/internal/health", None, 8, 0.3).await;
    load(port, "/v1/apps/bench-read", Some(&ctx.key), 8, 0.3).await;
    let (mut health, mut app, mut bad) = (Vec::new(), Vec::new(), 0);
    for _ in 0..rounds {
        let (h, b1) = load(port, "/internal/health", None, clients, secs).await;
        let (a, b2) = load(port, "/v1/apps/bench-read", Some(&ctx.key), clients, secs).await;
        health.push(h);
        app.push(a);
        bad += b1 + b2;
    }
    let (h, a) = (percentile(&mut health, 0.5), percentile(&mut app, 0.5));
    println!(
        "1. requests/s, {clients} keep-alive clients, {rounds} × {secs} s per route (medians)"
    );
    println!("   GET /internal/health (no key)      {h:>10.0} req/s");
    println!("   GET /v1/apps/{{appId}} (with a key)  {a:>10.0} req/s");
    println!(
        "   ratio {:.2}× (goal ≥ 0.5×); answers other than 200: {bad}\n",
        a / h
    );
    Ok(h)
}

/// Resident memory of `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `pid`'s established TCP connections to `remote_port` on this host: its socket inodes
/// (`/proc/{pid}/fd`) matched in `/proc/net/tcp` and `tcp6`.
fn connections_to(pid: u32, remote_port: u16) -> usize {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|target| {
                    let t = target.to_string_lossy().into_owned();
                    Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let port = format!(":{remote_port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.len() > 9
                && cols[2].ends_with(&port)
                && cols[3] == "01"
                && inodes.contains(cols[9])
        })
        .count()
}

/// The api's `berth_api_watchers` gauge.
async fn watching(ctx: &Ctx) -> u64 {
    let text = match ctx
        .http
        .get(format!("{}/metrics", ctx.api.base))
        .send()
        .await
    {
        Ok(res) => res.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    text.lines()
        .find(|l| l.starts_with("berth_api_watchers"))
        .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// One long poll on its own connection: the time its answer was complete, whether it said
/// `CANCELLED`, and the connection. The caller holds it until every answer is in, as a
/// keep-alive client holds it for its next poll: closing each as its answer lands would spend
/// the cores the later answers need on connection teardown.
async fn long_poll(
    port: u16,
    request: Arc<String>,
    connecting: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Option<(Instant, bool, BufReader<TcpStream>)> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await;
    drop(connecting);
    let mut stream = stream.ok()?;
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).await.ok()?;
    // The head, then exactly `content-length` bytes: a kept-alive answer ends there, not at
    // the server's close.
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    let done = Instant::now();
    let fine = status.contains(" 200 ") && String::from_utf8_lossy(&body).contains("CANCELLED");
    Some((done, fine, reader))
}

/// Phase 2, twice: the second round shows whether the first one's memory is reused (the
/// allocator keeping its high-water mark) or held (a leak).
async fn watchers(ctx: &Ctx, health_rate: f64) -> anyhow::Result<()> {
    let n = env_usize("BERTH_BENCH_WATCHERS", 10_000);
    for round in 1..=2 {
        println!("2.{round} {n} concurrent ?wait= watchers of one deployment on one api process");
        watch_round(ctx, n, health_rate).await?;
    }
    Ok(())
}

async fn watch_round(ctx: &Ctx, n: usize, health_rate: f64) -> anyhow::Result<()> {
    let d = ctx
        .call(
            ctx.tenant(reqwest::Method::POST, "/v1/apps/bench-watch/deployments")
                .json(&json!({})),
            201,
        )
        .await?;
    let id = d["deploymentId"].as_str().unwrap_or_default().to_owned();
    let version = d["version"].as_i64().unwrap_or(0);
    let jobs = ctx
        .call(
            ctx.deploy(
                reqwest::Method::GET,
                "/deploy/jobs?appId=bench-watch&state=PENDING",
            ),
            200,
        )
        .await?;
    let job = &jobs["items"][0];
    let job_id = job["jobId"].as_str().unwrap_or_default().to_owned();
    let job_version = job["version"].as_i64().unwrap_or(0);
    // Let the api's follower settle on the job before the memory is read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = ctx.api.child.id();
    let before = rss_kib(pid);
    let conns_before = connections_to(pid, ctx.control_port);

    let request = Arc::new(format!(
        "GET /v1/deployments/{id}?wait=60&version={version} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {}\r\nConnection: {}\r\n\r\n",
        ctx.key,
        connection()
    ));
    let opening = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let mut polls = Vec::with_capacity(n);
    for _ in 0..n {
        let (request, gate, port) = (request.clone(), gate.clone(), ctx.api.port);
        // Connects at most 256 at a time (the listener's backlog), then holds the connection.
        let permit = gate.acquire_owned().await?;
        polls.push(tokio::spawn(long_poll(port, request, Some(permit))));
    }
    let mut waiting = 0;
    while opening.elapsed() < Duration::from_secs(50) {
        waiting = watching(ctx).await;
        if waiting >= n as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opened = opening.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = rss_kib(pid);
    let conns = connections_to(pid, ctx.control_port);

    // The baseline: a long poll on the control plane itself, woken by the same change.
    let direct = Arc::new(format!(
        "GET /deploy/jobs/{job_id}?wait=60&version={job_version} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         X-DEPLOY-SECRET: {DEPLOY}\r\nConnection: {}\r\n\r\n",
        connection()
    ));
    let baseline = tokio::spawn(long_poll(ctx.control_port, direct, None));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pause = env_usize("BERTH_BENCH_CANCEL_PAUSE_MS", 0);
    if pause > 0 {
        // A window to attach a profiler to the api (its pid is printed first) before the cancel.
        println!("   cancelling in {pause} ms (BERTH_BENCH_CANCEL_PAUSE_MS)");
        tokio::time::sleep(Duration::from_millis(pause as u64)).await;
    }

    let changed = Instant::now();
    ctx.call(
        ctx.deploy(
            reqwest::Method::POST,
            &format!("/deploy/jobs/{job_id}/cancel"),
        ),
        200,
    )
    .await?;
    let cancel_ms = changed.elapsed().as_secs_f64() * 1e3;
    let mut latencies = Vec::with_capacity(n);
    let mut open = Vec::with_capacity(n);
    let mut failed = 0;
    for poll in polls {
        match poll.await.ok().flatten() {
            Some((done, true, connection)) => {
                latencies.push((done - changed).as_secs_f64() * 1e3);
                open.push(connection);
            }
            _ => failed += 1,
        }
    }
    drop(open);
    let base_ms = match baseline.await.ok().flatten() {
        Some((done, true, _)) => (done - changed).as_secs_f64() * 1e3,
        _ => f64::NAN,
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    let answered = ctx
        .call(
            ctx.tenant(reqwest::Method::GET, &format!("/v1/deployments/{id}")),
            200,
        )
        .await?;
    let answer_len = serde_json::to_vec(&answered)?.len();
    let per_watcher = (during.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    println!(
        "   {waiting} waiting after {:.1} s of connecting",
        opened.as_secs_f64()
    );
    println!(
        "   api RSS {:.1} MiB idle, {:.1} MiB with the watchers: {:.1} KiB per watcher",
        before as f64 / 1024.0,
        during as f64 / 1024.0,
        per_watcher / 1024.0
    );
    println!(
        "   api RSS once every watcher was answered and its connection closed: {:.1} MiB",
        after as f64 / 1024.0
    );
    println!(
        "   api's TCP connections to the control plane: {conns_before} before, {conns} with the watchers"
    );
    if latencies.is_empty() {
        println!("   no watcher answered; {failed} failed\n");
        return Ok(());
    }
    let first = percentile(&mut latencies, 0.0);
    let p50 = percentile(&mut latencies, 0.5);
    let p99 = percentile(&mut latencies, 0.99);
    let worst = percentile(&mut latencies, 1.0);
    println!(
        "   cancel upstream → every watcher's answer: first {first:.1} ms, p50 {p50:.1} ms, p99 {p99:.1} ms, max {worst:.1} ms (goal p99 ≤ 100 ms); {failed} failed"
    );
    println!(
        "   baseline, the control plane's own long poll woken by the same cancel: {base_ms:.1} ms (the cancel's own answer: {cancel_ms:.1} ms)"
    );
    println!(
        "   floor: {n} answers at this process's /internal/health rate ({health_rate:.0}/s, keep-alive) take {:.0} ms",
        n as f64 / health_rate * 1e3
    );
    let [first, p50, p99, worst] = floor(n, answer_len).await?;
    println!(
        "   floor: a bare tokio server in a child answering {n} held requests like these ({answer_len} bytes, `Connection: {}`), same client: first {first:.1} ms, p50 {p50:.1} ms, p99 {p99:.1} ms, max {worst:.1} ms\n",
        connection()
    );
    Ok(())
}

/// `n` held requests on the floor's server answered at once: the first answer, p50, p99 and
/// max, from the signal.
async fn floor(n: usize, answer_len: usize) -> anyhow::Result<[f64; 4]> {
    let server = start_child(
        Command::new(std::env::current_exe()?)
            .env(ROLE, "floor")
            .env("BERTH_FLOOR_BYTES", answer_len.to_string()),
    )?;
    let request = Arc::new("GET /held HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_owned());
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let mut polls = Vec::with_capacity(n);
    for _ in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        polls.push(tokio::spawn(long_poll(
            server.port,
            request.clone(),
            Some(permit),
        )));
    }
    let _all = gate.acquire_many(256).await?;
    // Every connection is open; let the server read each request before the signal.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut go = TcpStream::connect(("127.0.0.1", server.port)).await?;
    let changed = Instant::now();
    go.write_all(b"GET /go HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut latencies = Vec::with_capacity(n);
    let mut open = Vec::with_capacity(n);
    for poll in polls {
        if let Some((done, _, connection)) = poll.await.ok().flatten() {
            latencies.push((done - changed).as_secs_f64() * 1e3);
            open.push(connection);
        }
    }
    drop(open);
    anyhow::ensure!(latencies.len() == n, "the floor's server lost requests");
    Ok([0.0, 0.5, 0.99, 1.0].map(|p| percentile(&mut latencies, p)))
}

async fn accepts(ctx: &Ctx) -> anyhow::Result<()> {
    let samples = env_usize("BERTH_BENCH_ACCEPTS", 200);
    let (mut through_api, mut direct) = (Vec::new(), Vec::new());
    for i in 0..samples + 10 {
        let started = Instant::now();
        ctx.call(
            ctx.tenant(reqwest::Method::POST, "/v1/apps/bench-accept/deployments")
                .json(&json!({})),
            201,
        )
        .await?;
        let api_ms = started.elapsed().as_secs_f64() * 1e3;
        let started = Instant::now();
        ctx.call(
            ctx.deploy(reqwest::Method::POST, "/deploy/jobs")
                .json(&json!({ "appId": "bench-direct", "image": IMAGE, "env": { "A": "1" } })),
            201,
        )
        .await?;
        let direct_ms = started.elapsed().as_secs_f64() * 1e3;
        // The first ten warm both paths.
        if i >= 10 {
            through_api.push(api_ms);
            direct.push(direct_ms);
        }
    }
    let (a50, a99) = (
        percentile(&mut through_api, 0.5),
        percentile(&mut through_api, 0.99),
    );
    let (d50, d99) = (percentile(&mut direct, 0.5), percentile(&mut direct, 0.99));
    println!("3. accept latency of a deployment, {samples} each, alternating (no runner: the job stays PENDING)");
    println!("   POST /v1/apps/{{appId}}/deployments (api → control plane)  p50 {a50:>6.2} ms  p99 {a99:>6.2} ms");
    println!("   POST /deploy/jobs (control plane)                        p50 {d50:>6.2} ms  p99 {d99:>6.2} ms");
    println!(
        "   ratio p50 {:.2}×, p99 {:.2}×; the api adds {:.2} ms at p50 to a deployment",
        a50 / d50,
        a99 / d99,
        a50 - d50
    );
    Ok(())
}
