//! The cluster the scenarios run on: the real `berth-control` on a fresh PostgreSQL database,
//! two `berth-agent`s as two hosts (distinct node ids, ports and state folders, one Docker
//! engine) and two `berth-runner`s, all on 127.0.0.1, driven through their HTTP APIs.
//!
//! The binaries are taken from the folder the test executable's `deps/` sits in (run
//! `cargo build --workspace --bins` first). Nothing skips: a missing service fails the test
//! with the command that brings it up. Containers are removed by their `berth.node` and
//! `berth.app` labels when the cluster is dropped, even when the test fails.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub use berth_e2e::is_final;
use berth_e2e::{
    binary, create_database, drop_database, ensure_docker, free_port, print_logs,
    random_sealing_key, random_secret, remove_containers, ControlApi, Proc, DOCKER, TEST_IMAGE,
};
use serde_json::{json, Value};

/// Apps in the cluster.
pub const APPS: usize = 20;
/// The control plane's node TTL.
pub const NODE_TTL: Duration = Duration::from_secs(3);
/// Job leases: short, so a job whose runner lost its report to the restart comes back soon.
const LEASE_SECS: u64 = 3;

// ---------------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------------

struct Secrets {
    deploy: String,
    runner: String,
    node_join: String,
    admin: String,
    /// `BERTH_SECRET_KEY`: kept across restarts of the control plane, or its sealed secrets
    /// would not open.
    sealing_key: String,
}

pub struct Agent {
    pub node_id: String,
    agent_port: u16,
    gateway_port: u16,
    state_dir: PathBuf,
    pub proc: Option<Proc>,
}

/// The whole cluster; dropping it kills every process, removes the containers and the database.
pub struct Cluster {
    tag: String,
    dir: tempfile::TempDir,
    db_name: String,
    db_url: String,
    control_port: u16,
    control_starts: u32,
    secrets: Secrets,
    pub control: Option<Proc>,
    pub agents: Vec<Agent>,
    runners: Vec<Proc>,
    pub apps: Vec<String>,
    /// The metrics port of each runner.
    runner_metrics: Vec<u16>,
    api: ControlApi,
}

/// One cluster at a time: three clusters of 20 apps at once overload a 2-core machine, and
/// the lost-host scenario times the node's `OFFLINE` against the TTL.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running cluster whose both nodes are `ONLINE`, held alone until dropped.
pub struct Running {
    /// The cluster (dropped before the lock, so the next scenario starts on a clean engine).
    pub cluster: Cluster,
    _alone: tokio::sync::MutexGuard<'static, ()>,
}

impl std::ops::Deref for Running {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.cluster
    }
}

impl Cluster {
    /// Waits for its turn, starts a cluster and waits until both nodes are `ONLINE`.
    pub async fn up() -> Running {
        let alone = ONE_AT_A_TIME.lock().await;
        let started = Instant::now();
        let mut cluster = Cluster::start().await;
        for agent in 0..2 {
            let node = cluster.agents[agent].node_id.clone();
            cluster
                .wait_node_state(&node, "ONLINE", Duration::from_secs(30))
                .await;
        }
        cluster.assert_all_alive();
        eprintln!("cluster up in {:?}", started.elapsed());
        Running {
            cluster,
            _alone: alone,
        }
    }

    /// Deploys `v1 {app}` to every app of the cluster; where each app was placed.
    pub async fn deploy_first(&mut self) -> BTreeMap<String, String> {
        let v1: Vec<(String, String)> = self
            .apps
            .iter()
            .map(|a| (a.clone(), format!("v1 {a}")))
            .collect();
        self.deploy_all(&v1, Duration::from_secs(90)).await;
        self.placements().await
    }

    async fn start() -> Cluster {
        ensure_docker();
        let (db_name, db_url) = create_database().await;
        let tag = format!("{:06x}", rand_u32() & 0xff_ffff);
        let control_port = free_port();
        let secrets = Secrets {
            deploy: random_secret("deploy"),
            runner: random_secret("runner"),
            node_join: random_secret("node-join"),
            admin: random_secret("admin"),
            sealing_key: random_sealing_key(),
        };
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("a temporary folder"),
            db_name,
            db_url,
            control_port,
            control_starts: 0,
            api: ControlApi::new(control_port, &secrets.deploy, &secrets.admin),
            secrets,
            control: None,
            agents: Vec::new(),
            runners: Vec::new(),
            runner_metrics: Vec::new(),
            apps: (0..APPS).map(|i| format!("e2e-{tag}-{i:02}")).collect(),
            tag,
        };
        cluster.start_control().await;
        for suffix in ["a", "b"] {
            let node_id = format!("e2e-{}-node-{suffix}", cluster.tag);
            let state_dir = cluster.dir.path().join(format!("agent-{suffix}"));
            std::fs::create_dir_all(&state_dir).expect("an agent state folder");
            let mut agent = Agent {
                node_id,
                agent_port: free_port(),
                gateway_port: free_port(),
                state_dir,
                proc: None,
            };
            agent.proc = Some(cluster.spawn_agent(&agent));
            cluster.agents.push(agent);
        }
        for i in 1..=2 {
            let port = free_port();
            let proc = cluster.spawn_runner(i, port);
            cluster.runners.push(proc);
            cluster.runner_metrics.push(port);
        }
        cluster
    }

    fn control_url(&self) -> String {
        self.api.base.clone()
    }

    /// Starts `berth-control` on the cluster's database and port; returns once it answers.
    pub async fn start_control(&mut self) {
        self.control_starts += 1;
        let log = self
            .dir
            .path()
            .join(format!("control-{}.log", self.control_starts));
        let proc = Proc::spawn(
            &format!("berth-control (start {})", self.control_starts),
            &binary("berth-control"),
            &[
                ("BERTH_DATABASE_URL", self.db_url.clone()),
                (
                    "BERTH_CONTROL_ADDR",
                    format!("127.0.0.1:{}", self.control_port),
                ),
                ("BERTH_DEPLOY_SECRET", self.secrets.deploy.clone()),
                ("BERTH_RUNNER_TOKEN", self.secrets.runner.clone()),
                ("BERTH_NODE_JOIN_TOKEN", self.secrets.node_join.clone()),
                ("BERTH_ADMIN_TOKEN", self.secrets.admin.clone()),
                ("BERTH_SECRET_KEY", self.secrets.sealing_key.clone()),
                ("BERTH_NODE_TTL_SECS", NODE_TTL.as_secs().to_string()),
                ("BERTH_JOB_LEASE_SECS", LEASE_SECS.to_string()),
                ("BERTH_JOB_MAX_ATTEMPTS", "5".into()),
                ("BERTH_JOB_BACKOFF_SECS", "1".into()),
                ("BERTH_JOB_BACKOFF_MAX_SECS", "2".into()),
            ],
            log,
        );
        self.api.wait_healthy(self.control.insert(proc)).await;
    }

    fn spawn_agent(&self, agent: &Agent) -> Proc {
        Proc::spawn(
            &format!("berth-agent {}", agent.node_id),
            &binary("berth-agent"),
            &[
                (
                    "BERTH_AGENT_ADDR",
                    format!("127.0.0.1:{}", agent.agent_port),
                ),
                (
                    "BERTH_GATEWAY_ADDR",
                    format!("127.0.0.1:{}", agent.gateway_port),
                ),
                ("BERTH_NODE_ID", agent.node_id.clone()),
                ("BERTH_NODE_NAME", agent.node_id.clone()),
                (
                    "BERTH_AGENT_STATE_DIR",
                    agent.state_dir.display().to_string(),
                ),
                ("BERTH_CONTROL_URL", self.control_url()),
                ("BERTH_NODE_JOIN_TOKEN", self.secrets.node_join.clone()),
                ("BERTH_AGENT_HEARTBEAT_SECS", "1".into()),
                ("BERTH_AGENT_STOP_GRACE_SECS", "1".into()),
                ("BERTH_AGENT_READY_TIMEOUT_SECS", "30".into()),
            ],
            self.dir.path().join(format!("{}.log", agent.node_id)),
        )
    }

    /// Starts agent `i` again (after it was killed) on its node id, ports and state folder.
    pub fn restart_agent(&mut self, i: usize) {
        let proc = self.spawn_agent(&self.agents[i]);
        self.agents[i].proc = Some(proc);
    }

    /// Starts runner `i`, its metrics on `metrics_port`.
    fn spawn_runner(&self, i: u32, metrics_port: u16) -> Proc {
        let runner_id = format!("e2e-{}-runner-{i}", self.tag);
        let work_dir = self.dir.path().join(format!("runner-{i}"));
        std::fs::create_dir_all(&work_dir).expect("a runner work folder");
        Proc::spawn(
            &format!("berth-runner {runner_id}"),
            &binary("berth-runner"),
            &[
                ("BERTH_CONTROL_URL", self.control_url()),
                ("BERTH_RUNNER_TOKEN", self.secrets.runner.clone()),
                ("BERTH_RUNNER_ID", runner_id.clone()),
                ("BERTH_RUNNER_CONCURRENCY", "4".into()),
                ("BERTH_RUNNER_CLAIM_WAIT_SECS", "5".into()),
                ("BERTH_RUNNER_RETRY_MIN_MS", "50".into()),
                ("BERTH_RUNNER_RETRY_MAX_MS", "500".into()),
                ("BERTH_RUNNER_WORK_DIR", work_dir.display().to_string()),
                (
                    "BERTH_RUNNER_METRICS_ADDR",
                    format!("127.0.0.1:{metrics_port}"),
                ),
            ],
            self.dir.path().join(format!("{runner_id}.log")),
        )
    }

    /// The sum over both runners of one sample of their `/metrics` (`name{labels}` as written).
    pub async fn runner_metric(&self, sample: &str) -> f64 {
        let mut sum = 0.0;
        for port in &self.runner_metrics {
            let url = format!("http://127.0.0.1:{port}/metrics");
            let text = self
                .api
                .http
                .get(&url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .unwrap_or_else(|e| panic!("{url} does not answer: {e}"))
                .text()
                .await
                .expect("the metrics text");
            sum += text
                .lines()
                .find_map(|l| l.strip_prefix(sample)?.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {sample} in {url}:\n{text}"));
        }
        sum
    }

    /// Fails when a process that should run has exited.
    pub fn assert_all_alive(&mut self) {
        if let Some(control) = self.control.as_mut() {
            control.assert_alive();
        }
        for agent in &mut self.agents {
            if let Some(proc) = agent.proc.as_mut() {
                proc.assert_alive();
            }
        }
        for runner in &mut self.runners {
            runner.assert_alive();
        }
    }

    // -- APIs ---------------------------------------------------------------------------------

    /// `POST /deploy/jobs` of `app` with `MSG=msg`; the job id.
    pub async fn deploy(&self, app: &str, msg: &str) -> String {
        let res = self
            .api
            .http
            .post(format!("{}/deploy/jobs", self.control_url()))
            .header("X-DEPLOY-SECRET", &self.secrets.deploy)
            .json(&json!({ "appId": app, "image": TEST_IMAGE, "env": { "MSG": msg } }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /deploy/jobs for {app}: {e}"));
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        assert_eq!(
            status, 201,
            "creating a deploy job for {app} failed: {text}"
        );
        let job: Value = serde_json::from_str(&text).expect("a job as JSON");
        job["jobId"].as_str().expect("a jobId").to_owned()
    }

    /// Every job of the cluster, by id (`None` while the control plane does not answer).
    pub async fn jobs(&self) -> Option<HashMap<String, Value>> {
        self.api.jobs().await
    }

    /// Waits until every job in `ids` is final; the jobs.
    pub async fn wait_final(&mut self, ids: &[String], limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            self.assert_all_alive();
            if let Some(jobs) = self.jobs().await {
                let found: Vec<Option<&Value>> = ids.iter().map(|id| jobs.get(id)).collect();
                if found.iter().all(|j| j.is_some_and(is_final)) {
                    return found.into_iter().map(|j| j.unwrap().clone()).collect();
                }
                if Instant::now() >= deadline {
                    let open: Vec<String> = ids
                        .iter()
                        .zip(&found)
                        .filter(|(_, j)| !j.is_some_and(is_final))
                        .map(|(id, j)| match j {
                            Some(j) => format!(
                                "{id} ({}, {}, attempt {}, waiting: {})",
                                j["appId"], j["state"], j["attempt"], j["waitingReason"]
                            ),
                            None => format!("{id} (not listed)"),
                        })
                        .collect();
                    panic!(
                        "{} of {} jobs not final after {limit:?}: {open:#?}",
                        open.len(),
                        ids.len()
                    );
                }
            } else {
                assert!(
                    Instant::now() < deadline,
                    "the control plane did not list the jobs within {limit:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Deploys each app with its message and waits until every job is final; asserts each
    /// `SUCCEEDED`. The jobs, in the order of `deploys`.
    pub async fn deploy_all(
        &mut self,
        deploys: &[(String, String)],
        limit: Duration,
    ) -> Vec<Value> {
        let mut ids = Vec::new();
        for (app, msg) in deploys {
            ids.push(self.deploy(app, msg).await);
        }
        let jobs = self.wait_final(&ids, limit).await;
        assert_all_succeeded(&jobs);
        jobs
    }

    /// `GET /admin/runtime-nodes/list`: the nodes by id.
    pub async fn nodes(&self) -> Option<BTreeMap<String, Value>> {
        self.api.nodes().await
    }

    /// Waits until `node_id` shows `state`; how long it took.
    pub async fn wait_node_state(&self, node_id: &str, state: &str, limit: Duration) -> Duration {
        self.api.wait_node_state(node_id, state, limit).await
    }

    /// `GET /deploy/apps/{app}`.
    pub async fn app_run(&self, app: &str) -> Value {
        self.api
            .app_run(app)
            .await
            .unwrap_or_else(|| panic!("GET /deploy/apps/{app} did not answer 200 with JSON"))
    }

    /// The node each app runs on, by the deploy API's app record (and the app is `RUNNING`).
    pub async fn placements(&self) -> BTreeMap<String, String> {
        let mut placements = BTreeMap::new();
        for app in &self.apps {
            let run = self.app_run(app).await;
            assert_eq!(run["state"], "RUNNING", "app {app}: {run:#}");
            let node = run["nodeId"]
                .as_str()
                .unwrap_or_else(|| panic!("app {app} has no nodeId: {run:#}"));
            placements.insert(app.clone(), node.to_owned());
        }
        placements
    }

    fn agent(&self, node_id: &str) -> &Agent {
        self.agents
            .iter()
            .find(|a| a.node_id == node_id)
            .unwrap_or_else(|| panic!("{node_id} is not one of the cluster's nodes"))
    }

    /// The status `GET {gateway of node}/apps/{app}/` answers (0 when the gateway does not).
    pub async fn gateway_status(&self, node_id: &str, app: &str) -> u16 {
        let url = format!(
            "http://127.0.0.1:{}/apps/{app}/",
            self.agent(node_id).gateway_port
        );
        match self.api.http.get(&url).send().await {
            Ok(res) => res.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Asserts `GET {gateway of node}/apps/{app}/` answers 200 with `msg` (polling briefly: the
    /// gateway may learn a route a moment after the job ends).
    pub async fn assert_serves(&self, node_id: &str, app: &str, msg: &str) {
        let url = format!(
            "http://127.0.0.1:{}/apps/{app}/",
            self.agent(node_id).gateway_port
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last: String;
        loop {
            match self.api.http.get(&url).send().await {
                Ok(res) => {
                    let status = res.status();
                    let body = res.text().await.unwrap_or_default();
                    if status == 200 && body.contains(msg) {
                        return;
                    }
                    last = format!("{status}: {}", body.trim());
                }
                Err(e) => last = e.to_string(),
            }
            assert!(
                Instant::now() < deadline,
                "{url} did not answer 200 with {msg:?} within 10 s; last answer: {last}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Every container of `app` in any state, on any node: `(container id, berth.node)`.
pub fn containers_of(app: &str) -> Vec<(String, String)> {
    let out = Command::new(DOCKER)
        .args(["ps", "-a", "--filter"])
        .arg(format!("label=berth.app={app}"))
        .args(["--format", "{{.ID}} {{.Label \"berth.node\"}}"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (id, node) = line.split_once(' ')?;
            Some((id.to_owned(), node.to_owned()))
        })
        .collect()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        for runner in &mut self.runners {
            drop(runner.child.take().map(|mut c| (c.kill(), c.wait())));
        }
        if let Some(mut control) = self.control.take() {
            drop(control.child.take().map(|mut c| (c.kill(), c.wait())));
        }
        for agent in &mut self.agents {
            if let Some(mut proc) = agent.proc.take() {
                drop(proc.child.take().map(|mut c| (c.kill(), c.wait())));
            }
        }
        if failed {
            print_logs(self.dir.path());
        }
        // Every container carrying one of the cluster's node ids or app ids.
        remove_containers(|labels| {
            labels.iter().any(|label| {
                self.agents.iter().any(|a| a.node_id == *label)
                    || self.apps.iter().any(|app| app == label)
            })
        });
        drop_database(std::mem::take(&mut self.db_name));
    }
}

fn rand_u32() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32
}

pub fn assert_all_succeeded(jobs: &[Value]) {
    let bad: Vec<String> = jobs
        .iter()
        .filter(|j| j["state"] != "SUCCEEDED")
        .map(|j| {
            format!(
                "{} {}: {} after {} attempt(s): {}",
                j["jobId"], j["appId"], j["state"], j["attempt"], j["error"]
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} jobs did not succeed:\n{}",
        bad.len(),
        jobs.len(),
        bad.join("\n")
    );
}

pub fn count_by_node(placements: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for node in placements.values() {
        *counts.entry(node.clone()).or_default() += 1;
    }
    counts
}
