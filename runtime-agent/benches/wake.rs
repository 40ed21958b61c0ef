//! Wake benchmark (not a test): how long the first request of a sleeping app waits, beside the
//! engine doing the same by itself, in one run.
//!
//! ```sh
//! scripts/ensure-docker.sh
//! cargo bench -p berth-agent --bench wake    # BERTH_BENCH_ROUNDS=10 BERTH_BENCH_INSTANCES=1000
//! ```
//!
//! The agent runs in this process (its gateway on its own worker threads), on the real engine,
//! with the busybox test image (`scripts/test-images/build.sh`).
//! 1. Stop mode, rounds alternating: the baseline is `docker start` of the sleeping app's stopped
//!    container (the engine API) plus a client retrying `GET /` on its new port every 2 ms until
//!    it answers; the agent's figure is one `GET` through the gateway to the sleeping app, until
//!    its answer. Medians and their ratio (goal ≤ 1.2×).
//! 2. Pause mode, the same against `docker unpause`.
//! 3. 50 concurrent first requests to one sleeping app: failures and wakes (goal 0 and 1).
//! 4. `BERTH_BENCH_INSTANCES` apps (100 by default), all asleep, then 100 of them woken one after
//!    the other in random order: host memory in use (MemTotal − MemAvailable) and this process's
//!    RSS before deploying, all asleep, and after the wakes; p50/p99 wake; failures.

use std::process::Command;
use std::time::{Duration, Instant};

use berth_agent::config::Config;
use berth_agent::startup::Application;
use berth_shared::grant::{Grant, GrantSigner};
use berth_shared::sealed::SealingKeys;
use bollard::query_parameters::{StartContainerOptions, StopContainerOptions};
use rand::seq::SliceRandom;
use serde_json::{json, Value};

const IMAGE: &str = "berth-test/app:latest";

struct Bench {
    /// Signs the bench's grants; the agent is pinned to its key.
    signer: GrantSigner,
    node: String,
    agent: String,
    gateway: String,
    client: reqwest::Client,
    docker: bollard::Docker,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() as f64) * p).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// Host memory in use and this process's resident set, in MiB.
fn memory() -> (f64, f64) {
    let read = |path: &str, key: &str| -> f64 {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().split(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let host = read("/proc/meminfo", "MemTotal:") - read("/proc/meminfo", "MemAvailable:");
    (host / 1024.0, read("/proc/self/status", "VmRSS:") / 1024.0)
}

impl Bench {
    fn grant(&self, app: &str, job: uuid::Uuid) -> String {
        let grant = Grant::new(job, app, &self.node, Duration::from_secs(3600));
        self.signer.sign(&grant)
    }

    async fn deploy(&self, app: &str, mode: &str) -> String {
        let job = uuid::Uuid::new_v4();
        let body = json!({
            "jobId": job.to_string(), "appId": app, "image": IMAGE,
            "env": {"MSG": app}, "sleepAfterSecs": 1, "sleepMode": mode,
        });
        let response = self
            .client
            .post(format!("{}/agent/apps/deploy", self.agent))
            .header("x-runtime-grant", self.grant(app, job))
            .json(&body)
            .send()
            .await
            .expect("the agent answers");
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON answer");
        assert_eq!(status, 200, "deploy of {app} failed: {body}");
        body["containerId"].as_str().unwrap().to_owned()
    }

    async fn state(&self, app: &str) -> String {
        let body: Value = self
            .client
            .get(format!("{}/agent/apps/{app}/status", self.agent))
            .header("x-runtime-grant", self.grant(app, uuid::Uuid::new_v4()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["state"].as_str().unwrap_or_default().to_owned()
    }

    async fn until_asleep(&self, app: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.state(app).await != "sleeping" {
            assert!(Instant::now() < deadline, "{app} does not fall asleep");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metric(&self, line: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.agent))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// One request through the gateway: seconds until the answer, or what went wrong.
    async fn wake(&self, app: &str) -> Result<f64, String> {
        let started = Instant::now();
        let response = self
            .client
            .get(format!("{}/apps/{app}/", self.gateway))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.text().await.map_err(|e| e.to_string())?;
        let seconds = started.elapsed().as_secs_f64();
        if status == 200 && body.trim() == app {
            Ok(seconds)
        } else {
            Err(format!("{status}: {body}"))
        }
    }

    /// The engine alone: start (or unpause) the container, retry `GET /` every 2 ms until it
    /// answers; then put it back as the agent left it.
    async fn baseline(&self, container: &str, pause: bool) -> f64 {
        let started = Instant::now();
        if pause {
            self.docker.unpause_container(container).await.unwrap();
        } else {
            self.docker
                .start_container(container, None::<StartContainerOptions>)
                .await
                .unwrap();
        }
        let port = self
            .docker
            .inspect_container(
                container,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .unwrap()
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|p| p.into_values().flatten().flatten().next())
            .and_then(|b| b.host_port?.parse::<u16>().ok())
            .expect("a published port");
        let url = format!("http://127.0.0.1:{port}/");
        while self.client.get(&url).send().await.is_err() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        if pause {
            self.docker.pause_container(container).await.unwrap();
        } else {
            let options = StopContainerOptions {
                t: Some(10),
                ..Default::default()
            };
            self.docker
                .stop_container(container, Some(options))
                .await
                .unwrap();
        }
        seconds
    }

    /// Alternating rounds of the baseline and the agent's wake on one app; medians in ms.
    async fn rounds(&self, mode: &str, rounds: usize) -> (f64, f64) {
        let app = format!("bench-wake-{mode}");
        let container = self.deploy(&app, mode).await;
        let (mut engine, mut agent) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            self.until_asleep(&app).await;
            engine.push(self.baseline(&container, mode == "pause").await * 1000.0);
            agent.push(self.wake(&app).await.expect("the wake answers") * 1000.0);
        }
        (median(&mut engine), median(&mut agent))
    }
}

#[tokio::main]
async fn main() {
    let rounds = env_usize("BERTH_BENCH_ROUNDS", 10);
    let instances = env_usize("BERTH_BENCH_INSTANCES", 100);
    let built = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/test-images/build.sh"
        ))
        .status()
        .is_ok_and(|s| s.success());
    assert!(built, "building the test image failed");

    let node = format!("bench-wake-{}", uuid::Uuid::new_v4().simple());
    let state_dir = std::env::temp_dir().join(&node);
    let signer = GrantSigner::new(&SealingKeys::generate());
    let mut config = Config::for_tests(state_dir.clone());
    config.grant_keys = Some(signer.public_keys().to_vec());
    config.node_id = Some(berth_shared::ids::NodeId::parse(&node).unwrap());
    config.stop_grace_secs = 2;
    let settings = config.validate().unwrap();
    let agent_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mem_before = memory();
    let app = Application::build(settings, agent_listener, gateway_listener)
        .await
        .expect("the agent builds (is the Docker engine running?)");
    let bench = Bench {
        signer,
        node: node.clone(),
        agent: format!("http://{}", app.agent_addr()),
        gateway: format!("http://{}", app.gateway_addr()),
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        docker: bollard::Docker::connect_with_unix_defaults()
            .unwrap()
            .negotiate_version()
            .await
            .unwrap(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));

    let (engine, woken) = bench.rounds("stop", rounds).await;
    println!(
        "stop mode, {rounds} rounds: docker start + first answer {engine:.1} ms, wake through the gateway {woken:.1} ms, ratio {:.2}x",
        woken / engine
    );
    let (engine, woken) = bench.rounds("pause", rounds).await;
    println!(
        "pause mode, {rounds} rounds: docker unpause + first answer {engine:.1} ms, wake through the gateway {woken:.1} ms, ratio {:.2}x",
        woken / engine
    );

    let herd = "bench-wake-stop";
    bench.until_asleep(herd).await;
    let wakes = bench
        .metric("berth_agent_wakes_total{outcome=\"ok\"}")
        .await;
    let started = Instant::now();
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let (client, url) = (
                bench.client.clone(),
                format!("{}/apps/{herd}/", bench.gateway),
            );
            tokio::spawn(async move {
                matches!(client.get(&url).send().await, Ok(r) if r.status() == 200)
            })
        })
        .collect();
    let mut failed = 0;
    for request in requests {
        if !request.await.unwrap_or(false) {
            failed += 1;
        }
    }
    let starts = bench
        .metric("berth_agent_wakes_total{outcome=\"ok\"}")
        .await
        - wakes;
    println!(
        "50 concurrent first requests: {failed} failed, {starts} start(s), all answered in {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );

    // Many instances: deployed a few at a time, all asleep, then 100 woken in random order.
    let apps: Vec<String> = (0..instances).map(|i| format!("bench-many-{i}")).collect();
    let deploy_started = Instant::now();
    for chunk in apps.chunks(4) {
        let deploys = chunk.iter().map(|a| bench.deploy(a, "stop"));
        futures::future::join_all(deploys).await;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while bench.metric("berth_agent_apps_sleeping").await < instances as f64 {
        assert!(Instant::now() < deadline, "not every instance fell asleep");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mem_asleep = memory();
    let mut order = apps.clone();
    order.shuffle(&mut rand::thread_rng());
    let (mut latencies, mut failures) = (Vec::new(), 0);
    for app in order.iter().take(100) {
        match bench.wake(app).await {
            Ok(seconds) => latencies.push(seconds * 1000.0),
            Err(e) => {
                failures += 1;
                eprintln!("wake of {app} failed: {e}");
            }
        }
    }
    let mem_after = memory();
    println!(
        "{instances} instances deployed in {:.0} s, all asleep; {} woken in random order: p50 {:.1} ms, p99 {:.1} ms, {failures} failed",
        deploy_started.elapsed().as_secs_f64(),
        latencies.len(),
        median(&mut latencies.clone()),
        percentile(&mut latencies, 0.99)
    );
    for (when, (host, rss)) in [
        ("before deploying", mem_before),
        ("all asleep", mem_asleep),
        ("after the wakes", mem_after),
    ] {
        println!("memory {when}: host in use {host:.0} MiB, agent process RSS {rss:.0} MiB");
    }

    let _ = stop.send(());
    let _ = agent.await;
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=berth.node={node}")])
        .output()
        .unwrap();
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .output();
    }
    let _ = std::fs::remove_dir_all(state_dir);
}
