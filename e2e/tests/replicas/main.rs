//! Several control planes on one database: three real `berth-control` replicas on a fresh
//! PostgreSQL database behind a real nginx that includes `deploy/nginx/berth-control-proxy.conf`,
//! as docker-compose.yml runs them. Everything else talks to nginx only: 4 simulated nodes
//! heartbeat, 8 simulated runners claim and report, 4 creators post 1,000 deploy jobs over
//! 100 apps with `Idempotency-Key`. In the middle of the batch one replica, chosen at random, is
//! killed with SIGKILL. Then:
//! - every job the creators were promised exists once and ended `SUCCEEDED` (nothing accepted
//!   was lost, no retry made a second job);
//! - no job was run twice: each was reported by exactly one runner, and a job handed out a
//!   second time (its claim's answer died with the replica) was never reported by the first;
//! - the surviving replicas and nginx are still up.
//!
//! The runners and nodes are simulated (they answer at once, no containers) so that the control
//! planes are what is under test; the cluster test runs the real runner and agent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_e2e::{
    binary, create_database, drop_database, free_port, random_sealing_key, random_secret,
    repo_root, Proc,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Connection;

const REPLICAS: usize = 3;
const NODES: usize = 4;
const RUNNERS: usize = 8;
const CREATORS: usize = 4;
const APPS: usize = 100;
const JOBS: usize = 1_000;
/// Short leases: a job whose claim answer died with the replica comes back within seconds.
const LEASE_SECS: u64 = 3;
/// How long the whole batch may take before the test fails.
const BATCH_LIMIT: Duration = Duration::from_secs(180);

/// A random number (from a v4 UUID; the e2e crate needs no random-number crate for this).
fn random_below(n: u64) -> u64 {
    (uuid::Uuid::new_v4().as_u128() % u128::from(n)) as u64
}

/// The replicas, nginx in front of them and their database; dropping it kills them all.
struct Fleet {
    dir: tempfile::TempDir,
    db_name: String,
    db_url: String,
    replicas: Vec<Proc>,
    nginx: Proc,
    /// nginx's address: the one control-plane URL.
    base: String,
    deploy: String,
    runner: String,
    node_join: String,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.replicas.clear();
        drop_database(self.db_name.clone());
    }
}

impl Fleet {
    /// Starts the replicas (all at once, as compose does, so they race for the migrations)
    /// and nginx; returns once nginx answers `/internal/health` through every replica.
    async fn start(http: &reqwest::Client) -> Fleet {
        let (db_name, db_url) = create_database().await;
        let dir = tempfile::tempdir().expect("a temporary folder");
        let (deploy, runner, node_join, admin) = (
            random_secret("deploy"),
            random_secret("runner"),
            random_secret("node-join"),
            random_secret("admin"),
        );
        let sealing_key = random_sealing_key();
        let ports: Vec<u16> = (0..REPLICAS).map(|_| free_port()).collect();
        let replicas = ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                Proc::spawn(
                    &format!("berth-control replica {i}"),
                    &binary("berth-control"),
                    &[
                        ("BERTH_DATABASE_URL", db_url.clone()),
                        ("BERTH_CONTROL_ADDR", format!("127.0.0.1:{port}")),
                        ("BERTH_DEPLOY_SECRET", deploy.clone()),
                        ("BERTH_RUNNER_TOKEN", runner.clone()),
                        ("BERTH_NODE_JOIN_TOKEN", node_join.clone()),
                        ("BERTH_ADMIN_TOKEN", admin.clone()),
                        ("BERTH_SECRET_KEY", sealing_key.clone()),
                        ("BERTH_NODE_TTL_SECS", "5".into()),
                        ("BERTH_JOB_LEASE_SECS", LEASE_SECS.to_string()),
                        ("BERTH_JOB_MAX_ATTEMPTS", "5".into()),
                        ("BERTH_JOB_BACKOFF_SECS", "1".into()),
                        ("BERTH_JOB_BACKOFF_MAX_SECS", "2".into()),
                    ],
                    dir.path().join(format!("control-{i}.log")),
                )
            })
            .collect();
        let mut fleet_replicas: Vec<Proc> = replicas;
        for (i, port) in ports.iter().enumerate() {
            wait_healthy(
                http,
                &format!("http://127.0.0.1:{port}"),
                &mut fleet_replicas[i],
            )
            .await;
        }
        let nginx_port = free_port();
        let nginx = start_nginx(dir.path(), nginx_port, &ports);
        let base = format!("http://127.0.0.1:{nginx_port}");
        let mut fleet = Fleet {
            dir,
            db_name,
            db_url,
            replicas: fleet_replicas,
            nginx,
            base,
            deploy,
            runner,
            node_join,
        };
        let base = fleet.base.clone();
        wait_healthy(http, &base, &mut fleet.nginx).await;
        fleet
    }
}

/// Writes an nginx configuration for `ports` that includes the project's proxy rules, and
/// runs nginx in the foreground as one process (no master), logging into `dir`.
fn start_nginx(dir: &std::path::Path, port: u16, ports: &[u16]) -> Proc {
    let nginx = std::path::Path::new("/usr/sbin/nginx");
    assert!(
        nginx.is_file(),
        "/usr/sbin/nginx is missing: run scripts/ensure-nginx.sh (scripts/test does)"
    );
    let proxy_rules = repo_root().join("deploy/nginx/berth-control-proxy.conf");
    let servers: String = ports
        .iter()
        .map(|p| format!("        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n"))
        .collect();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/nginx-error.log warn;\nevents {{ worker_connections 1024; }}\n\
         http {{\n    access_log off;\n    client_body_temp_path {d}/nginx-body;\n\
         \x20   proxy_temp_path {d}/nginx-proxy;\n\
         \x20   upstream berth_control {{\n{servers}        keepalive 64;\n    }}\n\
         \x20   server {{\n        listen 127.0.0.1:{port};\n        include {};\n    }}\n}}\n",
        proxy_rules.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("writing nginx.conf");
    Proc::spawn_args(
        "nginx",
        nginx,
        &[
            "-e",
            &format!("{d}/nginx-error.log"),
            "-p",
            &d.to_string(),
            "-c",
            &path.display().to_string(),
        ],
        &[],
        dir.join("nginx.log"),
    )
}

/// Waits until `base/internal/health` answers 200 (30 s at most), failing if `proc` exits.
async fn wait_healthy(http: &reqwest::Client, base: &str, proc: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        proc.assert_alive();
        if let Ok(res) = http.get(format!("{base}/internal/health")).send().await {
            if res.status().is_success() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{base}/internal/health did not answer within 30 s; log:\n{}",
            proc.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether an answer means "try again": nginx could not reach a replica, or the request died
/// with one.
fn worth_retrying(result: &Result<reqwest::Response, reqwest::Error>) -> bool {
    match result {
        Err(_) => true,
        Ok(res) => matches!(
            res.status(),
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ),
    }
}

/// What the clients saw, for the checks at the end.
#[derive(Default)]
struct Seen {
    /// Idempotency key → the job id the api answered (every answer, replays included).
    created: HashMap<String, Vec<String>>,
    /// Job id → the runners it was handed to, in order.
    claimed: HashMap<String, Vec<String>>,
    /// Job id → the runners whose report landed.
    reported: HashMap<String, Vec<String>>,
    /// When each landed report was answered.
    report_times: Vec<Instant>,
    /// Requests sent again after an error or a 502/503/504.
    retries: usize,
}

type Shared = Arc<Mutex<Seen>>;

fn seen(shared: &Shared) -> std::sync::MutexGuard<'_, Seen> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Posts job `i` until an answer lands, with the same `Idempotency-Key` every time.
async fn create(http: &reqwest::Client, fleet: &FleetRef, i: usize, shared: &Shared) {
    let key = format!("batch-job-{i}");
    let body = json!({
        "appId": format!("replica-app-{:03}", i % APPS),
        "image": format!("berth-test/app:v{i}"),
    });
    loop {
        let res = http
            .post(format!("{}/deploy/jobs", fleet.base))
            .header("X-DEPLOY-SECRET", &fleet.deploy)
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
            .await;
        if worth_retrying(&res) {
            seen(shared).retries += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let res = res.expect("checked above");
        let status = res.status();
        let answer: Value = res.json().await.unwrap_or_default();
        assert_eq!(status, 201, "creating job {i}: {answer}");
        let id = answer["jobId"].as_str().expect("a jobId").to_owned();
        seen(shared).created.entry(key).or_default().push(id);
        return;
    }
}

/// A runner: claims, "runs" for a few milliseconds, reports success until the batch is done.
async fn run(http: reqwest::Client, fleet: FleetRef, runner_id: String, shared: Shared) {
    while !fleet.done.load(Ordering::Relaxed) {
        let res = http
            .post(format!("{}/runner/jobs/claim", fleet.base))
            .header("X-Runner-Token", &fleet.runner)
            .json(&json!({ "runnerId": runner_id, "wait": 1 }))
            .send()
            .await;
        if worth_retrying(&res) {
            seen(&shared).retries += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let res = res.expect("checked above");
        if res.status() == StatusCode::NO_CONTENT {
            continue;
        }
        let status = res.status();
        let claim: Value = res.json().await.unwrap_or_default();
        assert_eq!(status, 200, "claim: {claim}");
        let job_id = claim["job"]["jobId"].as_str().expect("a jobId").to_owned();
        let lease = claim["lease"]["token"]
            .as_str()
            .expect("a lease")
            .to_owned();
        seen(&shared)
            .claimed
            .entry(job_id.clone())
            .or_default()
            .push(runner_id.clone());
        tokio::time::sleep(Duration::from_millis(random_below(5))).await;
        report(&http, &fleet, &runner_id, &job_id, &lease, &shared).await;
    }
}

/// Reports success until it lands: a `409` after an unanswered try means the first try did
/// land (the lease is no longer current because the job is done), as `berth-runner` reads it.
async fn report(
    http: &reqwest::Client,
    fleet: &FleetRef,
    runner_id: &str,
    job_id: &str,
    lease: &str,
    shared: &Shared,
) {
    let body = json!({
        "runnerId": runner_id, "leaseToken": lease, "outcome": "SUCCEEDED",
        "result": { "containerId": format!("sim-{job_id}"), "url": null, "image": null },
    });
    let mut unanswered = false;
    loop {
        let res = http
            .post(format!("{}/runner/jobs/{job_id}/report", fleet.base))
            .header("X-Runner-Token", &fleet.runner)
            .json(&body)
            .send()
            .await;
        if worth_retrying(&res) {
            unanswered = true;
            seen(shared).retries += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let status = res.expect("checked above").status();
        let landed = status == StatusCode::OK || (status == StatusCode::CONFLICT && unanswered);
        assert!(
            landed || status == StatusCode::CONFLICT,
            "report of {job_id}: {status}"
        );
        if landed {
            let mut seen = seen(shared);
            seen.reported
                .entry(job_id.to_owned())
                .or_default()
                .push(runner_id.to_owned());
            seen.report_times.push(Instant::now());
        }
        return;
    }
}

/// A node: joins with the join token, then heartbeats every second with its own credential and
/// room for every app, until the batch is done.
async fn heartbeat(http: reqwest::Client, fleet: FleetRef, n: usize) {
    let node_id = format!("replica-node-{n}");
    let res = http
        .post(format!("{}/internal/runtime-nodes/join", fleet.base))
        .header("X-RT-Join-Token", &fleet.node_join)
        .json(&json!({ "nodeId": node_id }))
        .send()
        .await
        .expect("joining");
    assert_eq!(res.status(), 201, "join of {node_id}");
    let joined: Value = res.json().await.expect("the join answer");
    let credential = joined["credential"]
        .as_str()
        .expect("a credential")
        .to_owned();
    let mut seen_once = false;
    while !fleet.done.load(Ordering::Relaxed) {
        let res = http
            .post(format!("{}/internal/runtime-nodes/heartbeat", fleet.base))
            .header("X-RT-Node-Token", &credential)
            .json(&json!({
                "nodeId": node_id, "name": node_id,
                "agentBaseUrl": "http://127.0.0.1:1", "gatewayBaseUrl": "http://127.0.0.1:2",
                "labels": {}, "capacity": { "cpus": 64.0, "memoryMb": 1_000_000, "maxApps": 1_000 },
                "apps": [], "version": "replicas-test"
            }))
            .send()
            .await;
        let landed = matches!(&res, Ok(r) if r.status() == StatusCode::OK);
        if landed && !seen_once {
            seen_once = true;
            fleet.nodes_up.fetch_add(1, Ordering::Relaxed);
        }
        let pause = if landed { 1_000 } else { 200 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// What the client tasks need of the fleet.
#[derive(Clone)]
struct FleetRef {
    base: String,
    deploy: String,
    runner: String,
    node_join: String,
    done: Arc<AtomicBool>,
    /// Nodes whose first heartbeat was answered `200`.
    nodes_up: Arc<AtomicUsize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_in_a_batch_behind_nginx_loses_nothing_and_runs_nothing_twice() {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("an HTTP client");
    let mut fleet = Fleet::start(&http).await;
    let clients = FleetRef {
        base: fleet.base.clone(),
        deploy: fleet.deploy.clone(),
        runner: fleet.runner.clone(),
        node_join: fleet.node_join.clone(),
        done: Arc::new(AtomicBool::new(false)),
        nodes_up: Arc::new(AtomicUsize::new(0)),
    };
    let shared = Shared::default();
    let mut tasks = Vec::new();
    for n in 0..NODES {
        tasks.push(tokio::spawn(heartbeat(http.clone(), clients.clone(), n)));
    }
    // Let every node be seen before the first job needs one.
    let deadline = Instant::now() + Duration::from_secs(30);
    while clients.nodes_up.load(Ordering::Relaxed) < NODES {
        assert!(
            Instant::now() < deadline,
            "the nodes were not all seen within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for r in 0..RUNNERS {
        let runner_id = format!("replica-runner-{r}");
        tasks.push(tokio::spawn(run(
            http.clone(),
            clients.clone(),
            runner_id,
            shared.clone(),
        )));
    }
    let next = Arc::new(AtomicUsize::new(0));
    let mut creators = Vec::new();
    for _ in 0..CREATORS {
        let (http, clients, shared, next) =
            (http.clone(), clients.clone(), shared.clone(), next.clone());
        creators.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= JOBS {
                    return;
                }
                create(&http, &clients, i, &shared).await;
            }
        }));
    }

    let started = Instant::now();
    let kill_after = JOBS * (20 + random_below(41) as usize) / 100;
    let victim = random_below(REPLICAS as u64) as usize;
    let (mut killed_at, mut finished_at_kill) = (None, 0);
    loop {
        let finished = seen(&shared).reported.len();
        if killed_at.is_none() && finished >= kill_after {
            fleet.replicas[victim].kill();
            killed_at = Some(Instant::now());
            finished_at_kill = finished;
        }
        if finished >= JOBS {
            break;
        }
        for (i, replica) in fleet.replicas.iter_mut().enumerate() {
            if i != victim || killed_at.is_none() {
                replica.assert_alive();
            }
        }
        fleet.nginx.assert_alive();
        assert!(
            started.elapsed() < BATCH_LIMIT,
            "only {finished} of {JOBS} jobs finished within {BATCH_LIMIT:?}; logs in {}",
            fleet.dir.path().display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    clients.done.store(true, Ordering::Relaxed);
    for task in creators.into_iter().chain(tasks) {
        task.await.expect("a client task panicked");
    }

    let mut conn = sqlx::PgConnection::connect(&fleet.db_url)
        .await
        .expect("connecting to the test database");
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM deploy_job GROUP BY state")
            .fetch_all(&mut conn)
            .await
            .expect("counting jobs");
    assert_eq!(
        states,
        vec![("SUCCEEDED".to_owned(), JOBS as i64)],
        "every job SUCCEEDED, once"
    );
    let (second_attempts,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM deploy_job WHERE attempt > 1")
            .fetch_one(&mut conn)
            .await
            .expect("counting retried jobs");
    let seen = seen(&shared);
    // Nothing accepted was lost, no retry made a second job.
    assert_eq!(seen.created.len(), JOBS, "a job was never created");
    for (key, ids) in &seen.created {
        assert_eq!(ids.len(), 1, "{key} answered twice");
    }
    // No job ran twice.
    for ids in seen.created.values() {
        let reporters = seen.reported.get(&ids[0]).map_or(0, Vec::len);
        assert_eq!(
            reporters, 1,
            "job {} was reported {reporters} times",
            ids[0]
        );
    }
    let handed_twice = seen.claimed.values().filter(|r| r.len() > 1).count();

    let killed_at = killed_at.expect("the replica was killed");
    let mut after: Vec<Instant> = seen
        .report_times
        .iter()
        .copied()
        .filter(|t| *t > killed_at)
        .collect();
    after.sort_unstable();
    let longest_gap = after
        .iter()
        .scan(killed_at, |last, t| {
            let gap = t.duration_since(*last);
            *last = *t;
            Some(gap)
        })
        .max()
        .unwrap_or_default();
    eprintln!(
        "replicas: {JOBS} jobs over {APPS} apps, {RUNNERS} runners, {NODES} nodes, \
         {REPLICAS} replicas behind nginx; replica {victim} killed after {finished_at_kill} finished; \
         all SUCCEEDED at {:.1} s; {second_attempts} second attempts; {handed_twice} jobs handed \
         out twice; longest gap between reports after the kill {} ms; {} client retries",
        elapsed.as_secs_f64(),
        longest_gap.as_millis(),
        seen.retries
    );
}
