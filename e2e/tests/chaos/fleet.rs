//! The fleet the faults are injected into, every piece a process of its own: `berth-control`
//! on the suite's private PostgreSQL with its private RabbitMQ, two `berth-agent`s (node `a` on
//! this host, node `b` inside the suite's network namespace) on the one Docker engine, two
//! `berth-runner`s; plus what watches them: `docker events` (which container each job
//! started) and a durable queue on `berth.events` (which events arrived).
//!
//! Dropping the fleet kills every process, removes every container of its nodes (by the
//! `berth.node` label), the namespace and the services' data, even when the test fails — and
//! then prints the end of each log.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_e2e::{
    binary, ensure_docker, free_port, print_logs, random_sealing_key, random_secret,
    remove_containers, ControlApi, Proc, DOCKER, TEST_IMAGE,
};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::netns::Namespace;
use crate::services::{Postgres, Rabbit};

/// The control plane's node TTL.
pub const NODE_TTL_SECS: u64 = 3;
/// A node `OFFLINE` this long is lost (its stateless apps are redeployed elsewhere).
pub const NODE_LOST_SECS: u64 = 5;
/// Job leases: short, so a job whose runner died comes back within seconds.
const LEASE_SECS: u64 = 3;
/// Claims a job may have before it fails.
const MAX_ATTEMPTS: u32 = 6;
/// The queue the suite reads `berth.events` through (durable: it outlives a broker restart).
const EVENTS_QUEUE: &str = "berth-chaos-events";

/// One `berth-agent`.
pub struct Agent {
    /// Its node id.
    pub node_id: String,
    /// Its address (127.0.0.1, or the namespace's end of the link).
    ip: String,
    agent_port: u16,
    gateway_port: u16,
    state_dir: PathBuf,
    in_namespace: bool,
    starts: u32,
    /// The process, while it runs.
    pub proc: Option<Proc>,
}

/// One `berth-runner`.
pub struct Runner {
    id: String,
    starts: u32,
    /// The process, while it runs.
    pub proc: Option<Proc>,
}

/// An event that arrived through RabbitMQ.
#[derive(Debug, Clone)]
pub struct Event {
    /// `job.created`, `job.succeeded`, `node.offline`, ….
    pub kind: String,
    /// The job's id, for a job event.
    pub job_id: Option<String>,
}

/// The fleet; see the module's comment.
pub struct Fleet {
    /// A short random tag in every name the fleet makes.
    pub tag: String,
    control_port: u16,
    control_starts: u32,
    deploy_secret: String,
    runner_token: String,
    node_join: String,
    admin_token: String,
    sealing_key: String,
    /// The control plane, while it runs.
    pub control: Option<Proc>,
    /// Node `a` (this host) and node `b` (in the namespace).
    pub agents: Vec<Agent>,
    /// The two runners.
    pub runners: Vec<Runner>,
    /// The apps of the fleet.
    pub apps: Vec<String>,
    /// Every event that arrived, in order.
    pub events: Arc<Mutex<Vec<Event>>>,
    events_task: tokio::task::JoinHandle<()>,
    docker_events: Option<Proc>,
    docker_events_log: PathBuf,
    /// The control plane's API.
    pub api: ControlApi,
    /// The namespace node `b` lives in (dropped after the processes).
    pub ns: Namespace,
    /// The private PostgreSQL.
    pub pg: Postgres,
    /// The private RabbitMQ.
    pub rabbit: Rabbit,
    /// Logs and data (removed last).
    dir: tempfile::TempDir,
}

/// A random number below `n` (from a v4 UUID).
pub fn random_below(n: u64) -> u64 {
    (uuid::Uuid::new_v4().as_u128() % u128::from(n.max(1))) as u64
}

impl Fleet {
    /// Starts the services, the control plane, both agents and both runners; returns once both
    /// nodes are `ONLINE` and the events queue is bound.
    pub async fn start(apps: usize) -> Fleet {
        ensure_docker();
        let tag = format!("{:06x}", random_below(0xff_ffff));
        let dir = tempfile::tempdir().expect("a temporary folder");
        let started = Instant::now();
        let pg = Postgres::start(dir.path());
        let pg_up = started.elapsed();
        let rabbit = Rabbit::start(dir.path(), &tag);
        eprintln!(
            "private PostgreSQL up in {pg_up:?}, RabbitMQ in {:?}",
            started.elapsed() - pg_up
        );
        let ns = Namespace::create(&tag, 1 + random_below(250) as u8);
        let events = Arc::new(Mutex::new(Vec::new()));
        let events_task = tokio::spawn(collect_events(rabbit.url(), Arc::clone(&events)));
        let docker_events_log = dir.path().join("docker-events.txt");
        let control_port = free_port();
        let (deploy_secret, admin_token) = (random_secret("deploy"), random_secret("admin"));
        let mut fleet = Fleet {
            control_port,
            control_starts: 0,
            deploy_secret: deploy_secret.clone(),
            runner_token: random_secret("runner"),
            node_join: random_secret("node-join"),
            admin_token: admin_token.clone(),
            sealing_key: random_sealing_key(),
            control: None,
            agents: Vec::new(),
            runners: Vec::new(),
            apps: (0..apps).map(|i| format!("chaos-{tag}-{i:02}")).collect(),
            events,
            events_task,
            docker_events: None,
            docker_events_log,
            api: ControlApi::new(control_port, &deploy_secret, &admin_token),
            ns,
            pg,
            rabbit,
            dir,
            tag,
        };
        fleet.docker_events = Some(Proc::spawn_args(
            "docker events",
            std::path::Path::new(DOCKER),
            &[
                "events",
                "--filter",
                "type=container",
                "--filter",
                "event=start",
                "--filter",
                "event=die",
                "--filter",
                "event=destroy",
                "--filter",
                "label=berth.app",
                "--format",
                "{{.Action}} {{index .Actor.Attributes \"berth.job\"}} {{index .Actor.Attributes \"berth.node\"}} {{.Actor.ID}}",
            ],
            &[],
            fleet.docker_events_log.clone(),
        ));
        fleet.start_control().await;
        for (suffix, in_namespace) in [("a", false), ("b", true)] {
            let state_dir = fleet.dir.path().join(format!("agent-{suffix}"));
            std::fs::create_dir_all(&state_dir).expect("an agent state folder");
            fleet.agents.push(Agent {
                node_id: format!("chaos-{}-node-{suffix}", fleet.tag),
                ip: if in_namespace {
                    fleet.ns.ns_ip.clone()
                } else {
                    "127.0.0.1".into()
                },
                agent_port: free_port(),
                gateway_port: free_port(),
                state_dir,
                in_namespace,
                starts: 0,
                proc: None,
            });
            fleet.start_agent(fleet.agents.len() - 1);
        }
        for i in 1..=2 {
            fleet.runners.push(Runner {
                id: format!("chaos-{}-runner-{i}", fleet.tag),
                starts: 0,
                proc: None,
            });
            fleet.start_runner(i - 1);
        }
        for agent in 0..2 {
            fleet
                .wait_node_state(agent, "ONLINE", Duration::from_secs(30))
                .await;
        }
        eprintln!("fleet up in {:?}", started.elapsed());
        fleet
    }

    fn control_url(&self) -> String {
        self.api.base.clone()
    }

    /// Starts `berth-control`; returns once it answers its health check.
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
                ("BERTH_DATABASE_URL", self.pg.url()),
                ("BERTH_AMQP_URL", self.rabbit.url()),
                (
                    "BERTH_CONTROL_ADDR",
                    format!("127.0.0.1:{}", self.control_port),
                ),
                ("BERTH_DEPLOY_SECRET", self.deploy_secret.clone()),
                ("BERTH_RUNNER_TOKEN", self.runner_token.clone()),
                ("BERTH_NODE_JOIN_TOKEN", self.node_join.clone()),
                ("BERTH_ADMIN_TOKEN", self.admin_token.clone()),
                ("BERTH_SECRET_KEY", self.sealing_key.clone()),
                ("BERTH_NODE_TTL_SECS", NODE_TTL_SECS.to_string()),
                ("BERTH_NODE_LOST_SECS", NODE_LOST_SECS.to_string()),
                ("BERTH_JOB_LEASE_SECS", LEASE_SECS.to_string()),
                ("BERTH_JOB_MAX_ATTEMPTS", MAX_ATTEMPTS.to_string()),
                ("BERTH_JOB_BACKOFF_SECS", "1".into()),
                ("BERTH_JOB_BACKOFF_MAX_SECS", "2".into()),
            ],
            log,
        );
        self.api.wait_healthy(self.control.insert(proc)).await;
    }

    /// Starts agent `i` (node `b` inside the namespace) on its state folder.
    pub fn start_agent(&mut self, i: usize) {
        let control = if self.agents[i].in_namespace {
            format!("http://{}:{}", self.ns.host_ip, self.control_port)
        } else {
            self.control_url()
        };
        let prefix = self.ns.exec_prefix();
        let agent = &mut self.agents[i];
        agent.starts += 1;
        let env = [
            (
                "BERTH_AGENT_ADDR",
                format!("{}:{}", agent.ip, agent.agent_port),
            ),
            (
                "BERTH_GATEWAY_ADDR",
                format!("{}:{}", agent.ip, agent.gateway_port),
            ),
            (
                "BERTH_AGENT_PUBLIC_URL",
                format!("http://{}:{}", agent.ip, agent.agent_port),
            ),
            (
                "BERTH_GATEWAY_PUBLIC_URL",
                format!("http://{}:{}", agent.ip, agent.gateway_port),
            ),
            ("BERTH_NODE_ID", agent.node_id.clone()),
            ("BERTH_NODE_NAME", agent.node_id.clone()),
            (
                "BERTH_AGENT_STATE_DIR",
                agent.state_dir.display().to_string(),
            ),
            ("BERTH_CONTROL_URL", control),
            ("BERTH_NODE_JOIN_TOKEN", self.node_join.clone()),
            ("BERTH_AGENT_HEARTBEAT_SECS", "1".into()),
            ("BERTH_AGENT_STOP_GRACE_SECS", "1".into()),
            ("BERTH_AGENT_READY_TIMEOUT_SECS", "30".into()),
            // Node `a` (same engine, same apps' network) keeps the host's firewall rule;
            // inside the namespace iptables would only see the namespace's own tables.
            (
                "BERTH_AGENT_HOST_FIREWALL",
                (!agent.in_namespace).to_string(),
            ),
        ];
        let name = format!("berth-agent {} (start {})", agent.node_id, agent.starts);
        let log = self
            .dir
            .path()
            .join(format!("{}-{}.log", agent.node_id, agent.starts));
        let bin = binary("berth-agent");
        agent.proc = Some(if agent.in_namespace {
            let mut args: Vec<&str> = prefix.iter().map(String::as_str).collect();
            let bin_text = bin.display().to_string();
            args.push(&bin_text);
            Proc::spawn_args(
                &name,
                std::path::Path::new("/usr/sbin/ip"),
                &args,
                &env,
                log,
            )
        } else {
            Proc::spawn(&name, &bin, &env, log)
        });
    }

    /// Starts runner `i`.
    pub fn start_runner(&mut self, i: usize) {
        let work_dir = self.dir.path().join(format!("runner-{i}"));
        std::fs::create_dir_all(&work_dir).expect("a runner work folder");
        let control = self.control_url();
        let runner = &mut self.runners[i];
        runner.starts += 1;
        runner.proc = Some(Proc::spawn(
            &format!("berth-runner {} (start {})", runner.id, runner.starts),
            &binary("berth-runner"),
            &[
                ("BERTH_CONTROL_URL", control),
                ("BERTH_RUNNER_TOKEN", self.runner_token.clone()),
                ("BERTH_RUNNER_ID", runner.id.clone()),
                ("BERTH_RUNNER_CONCURRENCY", "4".into()),
                ("BERTH_RUNNER_CLAIM_WAIT_SECS", "5".into()),
                // A call's retries (≈ 12 s against a control plane answering 503 after 2 s)
                // run out well within the 30 s database outage, so the suite sees whether a
                // runner whose report got no answer keeps its claim.
                ("BERTH_RUNNER_RETRY_MIN_MS", "100".into()),
                ("BERTH_RUNNER_RETRY_MAX_MS", "1000".into()),
                ("BERTH_RUNNER_RETRY_TIMES", "4".into()),
                ("BERTH_RUNNER_WORK_DIR", work_dir.display().to_string()),
                (
                    "BERTH_RUNNER_METRICS_ADDR",
                    format!("127.0.0.1:{}", free_port()),
                ),
            ],
            self.dir
                .path()
                .join(format!("{}-{}.log", runner.id, runner.starts)),
        ));
    }

    /// Fails when a process that should run has exited.
    pub fn assert_all_alive(&mut self) {
        let procs = self
            .control
            .iter_mut()
            .chain(self.agents.iter_mut().filter_map(|a| a.proc.as_mut()))
            .chain(self.runners.iter_mut().filter_map(|r| r.proc.as_mut()));
        for proc in procs {
            proc.assert_alive();
        }
    }

    // -- APIs ---------------------------------------------------------------------------------

    /// `POST /deploy/jobs` of `app` with `MSG=msg` under `Idempotency-Key: key`, retried until
    /// the control plane answers (it may be down, or its database); the job id.
    pub async fn deploy(&self, app: &str, msg: &str, key: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let res = self
                .api
                .http
                .post(format!("{}/deploy/jobs", self.control_url()))
                .header("X-DEPLOY-SECRET", &self.deploy_secret)
                .header("Idempotency-Key", key)
                .json(&json!({ "appId": app, "image": TEST_IMAGE, "env": { "MSG": msg } }))
                .send()
                .await;
            let last = match res {
                Ok(res) if res.status().as_u16() == 201 || res.status().as_u16() == 200 => {
                    let job: Value = res.json().await.expect("a job as JSON");
                    return job["jobId"].as_str().expect("a jobId").to_owned();
                }
                Ok(res) if res.status().is_client_error() => {
                    panic!(
                        "creating a deploy job for {app} was refused: {} {}",
                        res.status(),
                        res.text().await.unwrap_or_default()
                    )
                }
                Ok(res) => format!("{}", res.status()),
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "the control plane did not take a deploy of {app} within 90 s: {last}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every job (the suite makes fewer than 500), by id; `None` while the control plane does
    /// not answer.
    pub async fn jobs(&self) -> Option<HashMap<String, Value>> {
        let jobs = self.api.jobs().await?;
        assert!(jobs.len() < 500, "the suite made 500 jobs or more");
        Some(jobs)
    }

    /// The status `GET /deploy/jobs` answers with and its `Retry-After`, or why it did not
    /// answer.
    pub async fn jobs_status(&self) -> Result<String, String> {
        let res = self
            .api
            .http
            .get(format!("{}/deploy/jobs?limit=1", self.control_url()))
            .header("X-DEPLOY-SECRET", &self.deploy_secret)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        Ok(format!(
            "{} (Retry-After: {retry_after})",
            res.status().as_u16()
        ))
    }

    /// Waits until agent `i`'s node shows `state`; how long it took.
    pub async fn wait_node_state(&self, i: usize, state: &str, limit: Duration) -> Duration {
        self.api
            .wait_node_state(&self.agents[i].node_id, state, limit)
            .await
    }

    /// The gateway address of `node_id`.
    pub fn gateway(&self, node_id: &str) -> Option<String> {
        self.agents
            .iter()
            .find(|a| a.node_id == node_id)
            .map(|a| format!("http://{}:{}", a.ip, a.gateway_port))
    }

    /// What the app's route on `node_id`'s gateway answers: `Ok(body)` for a 200.
    pub async fn through_gateway(&self, node_id: &str, app: &str) -> Result<String, String> {
        let gateway = self
            .gateway(node_id)
            .ok_or_else(|| format!("{node_id} is not a node of the fleet"))?;
        let res = self
            .api
            .http
            .get(format!("{gateway}/apps/{app}/"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        if status == 200 {
            Ok(body)
        } else {
            Err(format!("{status}: {}", body.trim()))
        }
    }

    /// Every container of the fleet's nodes.
    pub fn containers(&self) -> Vec<Container> {
        let out = Command::new(DOCKER)
            .args([
                "ps",
                "-a",
                "--filter",
                "label=berth.app",
                "--format",
                "{{.Label \"berth.app\"}} {{.Label \"berth.job\"}} {{.Label \"berth.node\"}} {{.State}}",
            ])
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let [app, job, node, state] = f[..] else {
                    return None;
                };
                self.agents
                    .iter()
                    .any(|a| a.node_id == node)
                    .then(|| Container {
                        app: app.to_owned(),
                        job: job.to_owned(),
                        node: node.to_owned(),
                        state: state.to_owned(),
                    })
            })
            .collect()
    }

    /// What `docker events` saw of each job's containers: how many it started, and the most
    /// that ran at one time.
    pub fn containers_per_job(&self) -> HashMap<String, JobContainers> {
        let text = std::fs::read_to_string(&self.docker_events_log).unwrap_or_default();
        let mut live: HashMap<String, HashSet<String>> = HashMap::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut per_job: HashMap<String, JobContainers> = HashMap::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [action, job, node, container] = f[..] else {
                continue;
            };
            if !self.agents.iter().any(|a| a.node_id == node) {
                continue;
            }
            let running = live.entry(job.to_owned()).or_default();
            let entry = per_job.entry(job.to_owned()).or_default();
            match action {
                "start" => {
                    // A container started again (a restart, a wake) is still one container.
                    if seen.insert(container.to_owned()) {
                        entry.started += 1;
                    }
                    running.insert(container.to_owned());
                    entry.most_at_once = entry.most_at_once.max(running.len());
                }
                _ => {
                    running.remove(container);
                }
            }
        }
        per_job
    }
}

/// A job's containers, from `docker events`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobContainers {
    /// How many containers it started.
    pub started: usize,
    /// The most that ran at one time.
    pub most_at_once: usize,
}

/// One container of the fleet, from `docker ps -a`.
#[derive(Debug, Clone)]
pub struct Container {
    /// Its `berth.app` label.
    pub app: String,
    /// Its `berth.job` label.
    pub job: String,
    /// Its `berth.node` label.
    pub node: String,
    /// `running`, `exited`, ….
    pub state: String,
}

/// Reads `berth.events` through a durable queue of the suite's own, reconnecting after the
/// broker goes away; every event that arrived goes into `events` (acknowledged after).
async fn collect_events(url: String, events: Arc<Mutex<Vec<Event>>>) {
    let mut last = String::new();
    loop {
        if let Err(e) = consume_events(&url, &events).await {
            // Once per kind of failure: the broker may be away for a while.
            let now = e.to_string();
            if now != last {
                eprintln!("events consumer: {now}; reconnecting");
                last = now;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn consume_events(url: &str, events: &Mutex<Vec<Event>>) -> Result<(), lapin::Error> {
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions,
        QueueDeclareOptions,
    };
    use lapin::types::FieldTable;
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel
        .exchange_declare(
            "berth.events",
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            EVENTS_QUEUE,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            EVENTS_QUEUE,
            "berth.events",
            "#",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut consumer = channel
        .basic_consume(
            EVENTS_QUEUE,
            "berth-chaos",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let body: Value = serde_json::from_slice(&delivery.data).unwrap_or(Value::Null);
        events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Event {
                kind: body["type"].as_str().unwrap_or_default().to_owned(),
                job_id: body["jobId"].as_str().map(str::to_owned),
            });
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.events_task.abort();
        let failed = std::thread::panicking();
        let procs = self
            .runners
            .iter_mut()
            .filter_map(|r| r.proc.take())
            .chain(self.control.take())
            .chain(self.agents.iter_mut().filter_map(|a| a.proc.take()))
            .chain(self.docker_events.take());
        drop(procs.collect::<Vec<_>>());
        if failed {
            print_logs(self.dir.path());
        }
        remove_containers(|labels| {
            labels
                .first()
                .is_some_and(|node| self.agents.iter().any(|a| a.node_id == *node))
        });
    }
}
