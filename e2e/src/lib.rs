//! End-to-end tests of Berth across separate processes; the scenarios live in `tests/`, and
//! this library holds what they share: the workspace's binaries, fresh PostgreSQL databases,
//! free ports, role secrets and child processes that log to files.
//!
//! - `tests/cluster/` starts the real `berth-control` (on a fresh PostgreSQL database), two
//!   `berth-agent`s as two hosts and two `berth-runner`s, and drives them through the HTTP APIs.
//! - `tests/replicas/` runs three `berth-control` replicas on one database behind nginx and kills
//!   one in the middle of a batch.
//! - `tests/chaos/` injects faults (kills, a PostgreSQL and a RabbitMQ outage of its own
//!   services, a host cut off in a network namespace) in the middle of batches and checks the
//!   fleet heals.
//!
//! The binaries must be built first: `cargo build --workspace --bins`. Nothing skips: a missing
//! service or binary fails the test with the command that brings it up.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection;

/// Debian's Docker client (the one that builds with the daemon's builder).
pub const DOCKER: &str = "/usr/bin/docker";
/// The test image: static busybox httpd on 8080 answering `$MSG`
/// (`scripts/test-images/build.sh`).
pub const TEST_IMAGE: &str = "berth-test/app:latest";

/// Fails (never skips) unless the Docker engine answers; builds the test image.
pub fn ensure_docker() {
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
    assert!(
        out.status.success(),
        "building the test image failed (scripts/test-images/build.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes (with their anonymous volumes) the containers carrying a `berth.app` label for
/// which `ours(labels)` holds, `labels` being the container's `berth.node` and `berth.app`.
pub fn remove_containers(ours: impl Fn(&[&str]) -> bool) {
    let listing = Command::new(DOCKER)
        .args([
            "ps",
            "-a",
            "--filter",
            "label=berth.app",
            "--format",
            "{{.ID}} {{.Label \"berth.node\"}} {{.Label \"berth.app\"}}",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let ids: Vec<&str> = listing
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (id, labels) = fields.split_first()?;
            ours(labels).then_some(*id)
        })
        .collect();
    if !ids.is_empty() {
        let _ = Command::new(DOCKER)
            .args(["rm", "-f", "-v"])
            .args(&ids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Prints the last 40 lines of every `*.log` file in `dir` (when a test failed).
pub fn print_logs(dir: &Path) {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
    logs.sort();
    for log in logs {
        eprintln!("==== {} (last 40 lines)\n{}", log.display(), tail(&log, 40));
    }
}

/// Whether a job (as the deploy API shows it) is in a final state.
pub fn is_final(job: &Value) -> bool {
    matches!(
        job["state"].as_str(),
        Some("SUCCEEDED" | "FAILED" | "CANCELLED")
    )
}

/// The workspace's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/debug/`: the parent of the `deps/` folder the running test executable is in.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the test executable's folder");
    deps.parent().unwrap_or(deps).to_path_buf()
}

/// The path of one of the workspace's binaries; fails saying how to build it.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: the end-to-end tests run the real binaries; build them first with \
         `cargo build --workspace --bins` (same profile and CARGO_TARGET_DIR as `cargo test`)",
        path.display()
    );
    path
}

/// The PostgreSQL URL tests create their databases through (`BERTH_TEST_POSTGRES_URL`).
fn postgres_admin() -> String {
    std::env::var("BERTH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates an empty PostgreSQL database; its name and URL.
pub async fn create_database() -> (String, String) {
    let admin = postgres_admin();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {admin} ({e}); run scripts/ensure-services.sh \
                 (or scripts/test, which starts it)"
            )
        });
    let name = format!("berth_e2e_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    (name.clone(), format!("{base}/{name}"))
}

/// Drops the database, from a thread of its own (so it can be called from `Drop` inside a
/// runtime).
pub fn drop_database(name: String) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin()).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        });
    })
    .join();
}

/// A port on 127.0.0.1 nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// A fresh secret for `role`, long enough for every service's minimum.
pub fn random_secret(role: &str) -> String {
    format!("{role}-{}", uuid::Uuid::new_v4().simple())
}

/// A fresh `BERTH_SECRET_KEY` (32 random bytes in base64).
pub fn random_sealing_key() -> String {
    berth_shared::sealed::SealingKeys::generate_text()
}

/// A child process whose stdout and stderr go to a log file; killed when dropped.
pub struct Proc {
    name: String,
    /// The process, until it is killed.
    pub child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `bin` with `env` (and no `BERTH_*` variable of the test's own environment).
    pub fn spawn(name: &str, bin: &Path, env: &[(&str, String)], log: PathBuf) -> Proc {
        Proc::spawn_args(name, bin, &[], env, log)
    }

    /// Starts `bin` with `args` and `env` (and no `BERTH_*` variable of the test's own
    /// environment), logging at `info`.
    pub fn spawn_args(
        name: &str,
        bin: &Path,
        args: &[&str],
        env: &[(&str, String)],
        log: PathBuf,
    ) -> Proc {
        let file = File::create(&log).expect("a log file");
        let mut cmd = Command::new(bin);
        // Nothing from the test's own environment decides how a piece runs.
        for (key, _) in std::env::vars() {
            if key.starts_with("BERTH_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a log file handle"))
            .stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name} ({}) does not start: {e}", bin.display()));
        Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// SIGKILL, then reap; the exit status.
    pub fn kill(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the process runs");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaping the child")
    }

    /// Fails when the process has already exited (it would not come back by itself).
    pub fn assert_alive(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} exited unexpectedly with {status}; its log ends:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
        }
    }

    /// The last `lines` lines of the process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last `lines` lines of the file at `path`.
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(file) = File::open(path) else {
        return String::from("(no log)");
    };
    let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One control plane's HTTP API as the tests call it, with the deploy secret and admin token.
/// Reads answer `None` while the control plane does not answer 2xx JSON (it may be restarting,
/// or its database away).
pub struct ControlApi {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The client (no proxy, bounded timeouts).
    pub http: reqwest::Client,
    /// `X-DEPLOY-SECRET`.
    pub deploy_secret: String,
    /// `X-Admin-Token`.
    pub admin_token: String,
}

impl ControlApi {
    /// The API of the control plane on `127.0.0.1:port`.
    pub fn new(port: u16, deploy_secret: &str, admin_token: &str) -> ControlApi {
        ControlApi {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("an HTTP client"),
            deploy_secret: deploy_secret.to_owned(),
            admin_token: admin_token.to_owned(),
        }
    }

    /// Waits until `GET /internal/health` answers 2xx, failing if `proc` exits or 30 s pass.
    pub async fn wait_healthy(&self, proc: &mut Proc) {
        let url = format!("{}/internal/health", self.base);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            proc.assert_alive();
            if let Ok(res) = self.http.get(&url).send().await {
                if res.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "berth-control did not answer {url} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET {path}` with one header; the JSON answer.
    pub async fn get_json(&self, path: &str, header: (&str, &str)) -> Option<Value> {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .header(header.0, header.1)
            .send()
            .await
            .ok()?;
        if !res.status().is_success() {
            return None;
        }
        res.json().await.ok()
    }

    /// The newest 500 jobs, by id.
    pub async fn jobs(&self) -> Option<HashMap<String, Value>> {
        let page = self
            .get_json(
                "/deploy/jobs?limit=500",
                ("X-DEPLOY-SECRET", &self.deploy_secret),
            )
            .await?;
        Some(
            by_id(page["items"].as_array()?, "jobId")
                .into_iter()
                .collect(),
        )
    }

    /// `GET /admin/runtime-nodes/list`: the nodes by id.
    pub async fn nodes(&self) -> Option<BTreeMap<String, Value>> {
        let list = self
            .get_json(
                "/admin/runtime-nodes/list",
                ("X-Admin-Token", &self.admin_token),
            )
            .await?;
        Some(
            by_id(list["items"].as_array()?, "nodeId")
                .into_iter()
                .collect(),
        )
    }

    /// Waits until `node_id` shows `state`; how long it took.
    pub async fn wait_node_state(&self, node_id: &str, state: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let seen = self
                .nodes()
                .await
                .and_then(|nodes| nodes.get(node_id).cloned());
            if seen.as_ref().is_some_and(|n| n["state"] == state) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "node {node_id} is not {state} after {limit:?}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /deploy/apps/{app}`: the app's last known run.
    pub async fn app_run(&self, app: &str) -> Option<Value> {
        self.get_json(
            &format!("/deploy/apps/{app}"),
            ("X-DEPLOY-SECRET", &self.deploy_secret),
        )
        .await
    }
}

/// `(item[key], item)` for each item.
fn by_id(items: &[Value], key: &str) -> Vec<(String, Value)> {
    items
        .iter()
        .map(|item| {
            (
                item[key].as_str().unwrap_or_default().to_owned(),
                item.clone(),
            )
        })
        .collect()
}
