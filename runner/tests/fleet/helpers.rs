//! The real pieces, in-process on port 0: a control plane on a fresh PostgreSQL database, runtime
//! agents on the real Docker engine, and runners — plus typed helpers to drive and watch them.
//!
//! Nothing here skips: a missing service fails the test with the script that brings it up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use berth_control::config::test_secrets::RUNNER_TOKEN;
use berth_control::config::test_secrets::{ADMIN_TOKEN, DEPLOY_SECRET, NODE_JOIN_TOKEN};
use berth_control::config::Settings as ControlSettings;
use berth_control::queue::retry::RetryPolicy as JobRetry;
use berth_runner::build::git::RepoPolicy;
use berth_runner::config::Settings as RunnerSettings;
use berth_runner::retry::RetryPolicy;
use berth_shared::secret::Secret;
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Debian's Docker client.
pub const DOCKER: &str = "/usr/bin/docker";
/// The test image (static busybox httpd answering `$MSG` on 8080), built by scripts/test-images.
pub const IMAGE: &str = "berth-test/app:latest";
/// The local registry of `scripts/ensure-registry.sh`.
pub const REGISTRY: &str = "127.0.0.1:5000";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Fails (never skips) unless Docker, the test images, the registry and git are there.
pub fn ensure_services() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        match Command::new(DOCKER).arg("info").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "the Docker engine does not answer ({DOCKER} info: {}); run scripts/ensure-docker.sh",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!("{DOCKER} is missing ({e}); run scripts/ensure-docker.sh"),
        }
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/test-images/build.sh"))
            .output()
            .expect("running scripts/test-images/build.sh");
        assert!(out.status.success(), "building the test images failed: {}", String::from_utf8_lossy(&out.stderr));
        let registry = Command::new("curl").args(["-fsS", "-m", "3", &format!("http://{REGISTRY}/v2/")]).output();
        assert!(
            matches!(&registry, Ok(out) if out.status.success()),
            "no Docker registry answers on http://{REGISTRY}/v2/; run scripts/ensure-registry.sh"
        );
        let git = Command::new("git").arg("--version").output();
        assert!(matches!(&git, Ok(out) if out.status.success()), "git is missing; install Debian's git");
    });
}

/// A unique app id.
pub fn app_id(name: &str) -> String {
    format!("r-{name}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// `GET url` as JSON (`Null` when it does not answer JSON).
pub async fn get_json(url: &str) -> Value {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    match client.get(url).send().await {
        Ok(res) => res.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Polls `check` until it returns `Some`, or fails with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn postgres_admin() -> String {
    std::env::var("BERTH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A control plane on a fresh PostgreSQL database.
pub struct Control {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// A plain client.
    pub http: reqwest::Client,
    db_name: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Starts a control plane; `lease` is the job lease, `max_attempts` the claims per job.
pub async fn spawn_control(lease: Duration, max_attempts: i32) -> Control {
    ensure_services();
    let admin = postgres_admin();
    let db_name = format!("berth_runner_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL is not reachable at {admin} ({e}); run scripts/ensure-services.sh")
        });
    sqlx::query(&format!("CREATE DATABASE {db_name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let url = format!(
        "{}/{db_name}",
        admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b)
    );
    let settings = ControlSettings {
        lease,
        retry: JobRetry {
            max_attempts,
            base_ms: 100,
            cap_ms: 1000,
        },
        ..ControlSettings::for_tests(&url)
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = berth_control::startup::Application::build(settings, listener)
        .await
        .expect("the control plane starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    Control {
        base,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        db_name,
        stop: Some(tx),
        server: Some(server),
    }
}

impl Control {
    /// `POST /deploy/jobs`; the created job.
    pub async fn create_job(&self, body: Value) -> Value {
        let res = self
            .http
            .post(format!("{}/deploy/jobs", self.base))
            .header("X-DEPLOY-SECRET", DEPLOY_SECRET)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        assert_eq!(status, 201, "creating a job failed: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// `GET /deploy/jobs/{id}` (with `?wait=&version=` when `version` is given).
    pub async fn job(&self, job_id: &str, version: Option<i64>) -> Value {
        let query = version
            .map(|v| format!("?wait=2&version={v}"))
            .unwrap_or_default();
        let res = self
            .http
            .get(format!("{}/deploy/jobs/{job_id}{query}", self.base))
            .header("X-DEPLOY-SECRET", DEPLOY_SECRET)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    /// Waits until the job is final and returns it.
    pub async fn wait_final(&self, job_id: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        let mut job = self.job(job_id, None).await;
        while !matches!(
            job["state"].as_str(),
            Some("SUCCEEDED" | "FAILED" | "CANCELLED")
        ) {
            assert!(
                Instant::now() < deadline,
                "job {job_id} not final after {limit:?}: {job:#}"
            );
            job = self.job(job_id, job["version"].as_i64()).await;
        }
        job
    }

    /// Creates a job and waits for its end.
    pub async fn run_job(&self, body: Value, limit: Duration) -> Value {
        let job = self.create_job(body).await;
        self.wait_final(job["jobId"].as_str().unwrap(), limit).await
    }

    /// Runs a `STOP` of `app` and checks that it succeeded; returns the job.
    pub async fn stop_app(&self, app: &str) -> Value {
        let body = json!({ "appId": app, "kind": "STOP" });
        let stop = self.run_job(body, Duration::from_secs(30)).await;
        assert_eq!(stop["state"], "SUCCEEDED", "{stop:#}");
        stop
    }

    /// The job's log as text.
    pub async fn logs(&self, job_id: &str) -> String {
        self.http
            .get(format!("{}/deploy/jobs/{job_id}/logs", self.base))
            .header("X-DEPLOY-SECRET", DEPLOY_SECRET)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `GET path` with the `header: secret` credential, as JSON (`None` when it does not answer).
    async fn get_as(&self, path: &str, (header, secret): (&str, &str)) -> Option<Value> {
        let url = format!("{}{path}", self.base);
        let res = self.http.get(url).header(header, secret).send().await;
        res.ok()?.json().await.ok()
    }

    /// Every job (up to 500), newest first.
    pub async fn all_jobs(&self) -> Vec<Value> {
        let deploy = ("X-DEPLOY-SECRET", DEPLOY_SECRET);
        let page = self.get_as("/deploy/jobs?limit=500", deploy).await;
        page.and_then(|p| p["items"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Joins a node whose agent is at `agent_url` (nothing need answer there) and sends its
    /// first heartbeat.
    pub async fn fake_node(&self, node_id: &str, agent_url: &str) {
        let join = self
            .http
            .post(format!("{}/internal/runtime-nodes/join", self.base))
            .header("X-RT-Join-Token", NODE_JOIN_TOKEN)
            .json(&json!({ "nodeId": node_id }));
        let joined = join.send().await.expect("join request");
        assert_eq!(joined.status(), 201, "join {node_id}");
        let joined: Value = joined.json().await.expect("join answer");
        let credential = joined["credential"].as_str().expect("joined").to_owned();
        let res = self
            .http
            .post(format!("{}/internal/runtime-nodes/heartbeat", self.base))
            .header("X-RT-Node-Token", credential)
            .json(&json!({
                "nodeId": node_id, "name": node_id, "agentBaseUrl": agent_url,
                "gatewayBaseUrl": "http://127.0.0.1:9", "labels": {},
                "capacity": { "cpus": 4.0, "memoryMb": 8192, "maxApps": 500 },
                "apps": [], "version": "test"
            }))
            .send()
            .await
            .unwrap();
        assert!(
            res.status().is_success(),
            "node heartbeat: {}",
            res.status()
        );
    }

    /// `GET /deploy/apps/{app}`: the app's last-known run (`Null` before its first job ran).
    pub async fn app_run(&self, app: &str) -> Value {
        let deploy = ("X-DEPLOY-SECRET", DEPLOY_SECRET);
        let run = self.get_as(&format!("/deploy/apps/{app}"), deploy).await;
        run.unwrap_or(Value::Null)
    }

    /// The node `node_id` as `GET /admin/runtime-nodes/list` shows it (`Null` when absent).
    pub async fn node(&self, node_id: &str) -> Value {
        let admin = ("X-Admin-Token", ADMIN_TOKEN);
        let list = self.get_as("/admin/runtime-nodes/list", admin).await;
        let nodes = list.and_then(|l| l["items"].as_array().cloned());
        let found = nodes.and_then(|n| n.into_iter().find(|n| n["nodeId"] == node_id));
        found.unwrap_or(Value::Null)
    }

    /// Waits until `node_id` is ONLINE in the registry.
    pub async fn wait_node(&self, node_id: &str) {
        eventually(
            Duration::from_secs(15),
            "the agent's node to be ONLINE",
            || async { (self.node(node_id).await["state"] == "ONLINE").then_some(()) },
        )
        .await;
    }

    /// Stops the server and drops its database.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
        if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin()).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.db_name
            ))
            .execute(&mut conn)
            .await;
        }
    }
}

/// The lines the Docker CLI prints for `args` (ids, names).
pub fn docker_lines(args: &[&str]) -> Vec<String> {
    let out = Command::new(DOCKER).args(args).output().expect("docker");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A runtime agent and its gateway, heartbeating to a control plane.
pub struct Agent {
    /// The node id.
    pub node_id: String,
    /// `http://127.0.0.1:PORT` of the gateway.
    pub gateway: String,
    state_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
}

/// Starts an agent for `control` and waits until its node is ONLINE.
pub async fn spawn_agent(control: &Control) -> Agent {
    let node_id = format!("rn-{}", uuid::Uuid::new_v4().simple());
    let state_dir = std::env::temp_dir().join(format!("berth-runner-test-{node_id}"));
    let mut config = berth_agent::config::Config::for_tests(state_dir.clone());
    config.node_id = Some(berth_shared::ids::NodeId::parse(&node_id).unwrap());
    config.ready_timeout_secs = 15.0;
    // The test app (busybox httpd as PID 1) ignores SIGTERM; replaced containers go at once.
    config.stop_grace_secs = 0;
    config.heartbeat_secs = 0.5;
    config.max_apps = 500;
    config.control_url = Some(control.base.clone());
    config.node_join_token = Some(Secret::new(NODE_JOIN_TOKEN));
    let settings = config.validate().expect("agent settings");
    let agent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = berth_agent::startup::Application::build(settings, agent, gateway)
        .await
        .expect("the agent starts (is the Docker engine running? scripts/ensure-docker.sh)");
    let gateway = format!("http://{}", app.gateway_addr());
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    control.wait_node(&node_id).await;
    Agent {
        node_id,
        gateway,
        state_dir,
        stop: Some(tx),
    }
}

impl Agent {
    /// This node's containers of `app` (any state).
    pub fn containers(&self, app: &str) -> Vec<String> {
        docker_lines(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=berth.node={}", self.node_id),
            "--filter",
            &format!("label=berth.app={app}"),
        ])
    }

    /// `GET /apps/{app}/` through the gateway: status and body.
    pub async fn get(&self, app: &str) -> (u16, String) {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        match client
            .get(format!("{}/apps/{app}/", self.gateway))
            .send()
            .await
        {
            Ok(res) => (res.status().as_u16(), res.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let out = Command::new(DOCKER)
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=berth.node={}", self.node_id),
            ])
            .output();
        if let Ok(out) = out {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new(DOCKER).args(["rm", "-f"]).args(&ids).output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// Runner settings for tests: short claims, fast retries.
pub fn runner_settings(control: &Control, runner_id: &str) -> RunnerSettings {
    let mut settings =
        RunnerSettings::new(&control.base, RUNNER_TOKEN, runner_id).expect("runner settings");
    settings.claim_wait = Duration::from_secs(2);
    // Test repositories are local folders.
    settings.repo_policy = RepoPolicy::parse("https://, file://").unwrap();
    settings.shutdown_grace = Duration::from_secs(20);
    settings.retry = RetryPolicy {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_times: 4,
    };
    settings
}

/// A runner running in-process.
pub struct Runner {
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Starts a runner in this process.
pub fn spawn_runner(settings: RunnerSettings) -> Runner {
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(berth_runner::run(settings, async {
        let _ = rx.await;
    }));
    Runner {
        stop: Some(tx),
        handle: Some(handle),
    }
}

impl Runner {
    /// Asks it to stop (like SIGTERM) and waits until it has.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(Duration::from_secs(60), handle)
            .await
            .expect("the runner stops")
            .expect("runner task")
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A git repository in a temporary folder, served by `file://` URL.
pub struct Repo {
    /// The folder.
    pub dir: tempfile::TempDir,
}

impl Repo {
    /// An empty repository on branch `main`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = Self { dir };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    /// `file://…`.
    pub fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(self.dir.path())
            .args([
                "-c",
                "user.name=Berth Test",
                "-c",
                "user.email=test@berth.invalid",
            ])
            .args(args)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Commits a symlink `path -> target`; returns the commit's sha.
    pub fn commit_symlink(&self, path: &str, target: &str, message: &str) -> String {
        std::os::unix::fs::symlink(target, self.dir.path().join(path)).unwrap();
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// Writes `files` and commits them; returns the commit's sha.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, content) in files {
            let path = self.dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }
}
