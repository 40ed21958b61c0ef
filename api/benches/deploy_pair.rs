//! A whole deployment through the api beside the same deployment through `POST /deploy/jobs`
//! (not a test: it only prints). Real pieces in this process: the control plane on PostgreSQL,
//! a runner, a runtime agent on the Docker engine (the fleet of the runner's own test helpers,
//! used as they are) and berth-api on SQLite in front of it.
//!
//! ```sh
//! nice cargo bench -p berth-api --bench deploy_pair
//! # knobs: BERTH_BENCH_DEPLOYS=30 (measured of each kind) BERTH_BENCH_WARMUPS=3
//! ```
//!
//! Each round deploys a fresh app of the test image twice, alternating which path goes first:
//! once as a portal would (`POST /v1/apps/{appId}/deployments`, then `GET
//! /v1/deployments/{id}?wait=&version=` until `SUCCEEDED`), once straight to the control plane
//! (`POST /deploy/jobs`, then `GET /deploy/jobs/{id}?wait=&version=` until `SUCCEEDED`). Each
//! is timed from sending the request that asks for it to the answer that shows it `SUCCEEDED`:
//! accepted, claimed by the runner, the container started by the agent and ready. The apps are
//! stopped between rounds (untimed), so every round starts from the same number of containers.
//! Prints p50/p99 of each path and their ratio (goal ≤ 1.2×).

#[allow(dead_code)]
#[path = "../../runner/tests/fleet/helpers.rs"]
mod helpers;
mod support;

use std::time::{Duration, Instant};

use berth_api::config::Settings;
use berth_api::startup::Application;
use berth_shared::secret::Secret;
use helpers::{runner_settings, spawn_agent, spawn_control, spawn_runner, Control, IMAGE};
use reqwest::Method;
use serde_json::{json, Value};
use support::{env_usize, percentile};

use berth_api::config::test_secrets::ADMIN_TOKEN as ADMIN;
use berth_control::config::test_secrets::DEPLOY_SECRET;

/// A tenant's view of the api.
struct Portal {
    base: String,
    http: reqwest::Client,
    key: String,
}

impl Portal {
    async fn send(&self, method: Method, path: &str, body: Option<Value>, status: u16) -> Value {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("the api answers");
        let got = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(got, status, "{path}: {body}");
        body
    }

    /// Deploys `app` (its spec already written) and waits for `SUCCEEDED`; milliseconds taken.
    async fn deploy(&self, app: &str) -> f64 {
        let started = Instant::now();
        let path = format!("/v1/apps/{app}/deployments");
        let d = self.send(Method::POST, &path, None, 201).await;
        self.succeeded(d).await;
        started.elapsed().as_secs_f64() * 1000.0
    }

    /// Follows deployment `d` by long polls until it is `SUCCEEDED` (any other end fails).
    async fn succeeded(&self, mut d: Value) {
        let id = d["deploymentId"]
            .as_str()
            .expect("a deployment id")
            .to_owned();
        while d["state"] != "SUCCEEDED" {
            assert!(
                !matches!(d["state"].as_str(), Some("FAILED" | "CANCELLED")),
                "the api's deployment failed: {d}"
            );
            let path = format!("/v1/deployments/{id}?wait=10&version={}", d["version"]);
            d = self.send(Method::GET, &path, None, 200).await;
        }
    }
}

/// Deploys `app` by `POST /deploy/jobs` and waits for `SUCCEEDED`; milliseconds taken.
async fn deploy_direct(control: &Control, app: &str, msg: &str) -> f64 {
    let started = Instant::now();
    let job = control
        .create_job(json!({ "appId": app, "image": IMAGE, "env": { "MSG": msg } }))
        .await;
    let id = job["jobId"].as_str().expect("a job id");
    let job = control.wait_final(id, Duration::from_secs(60)).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(
        job["state"], "SUCCEEDED",
        "the direct deployment failed: {job}"
    );
    ms
}

/// Starts the api in this process in front of `control`; its base URL.
async fn start_api(control: &Control, db: &std::path::Path) -> String {
    let settings = Settings::for_tests(
        &format!("sqlite://{}?mode=rwc", db.display()),
        &control.base,
        Secret::new(DEPLOY_SECRET),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app = Application::build(settings, listener)
        .await
        .expect("the api starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run(std::future::pending()));
    base
}

/// A tenant with room for every deployment of the run, and its key.
async fn portal(base: &str, http: &reqwest::Client) -> Portal {
    let admin = |path: &str| {
        http.post(format!("{base}{path}"))
            .header("X-Admin-Token", ADMIN)
    };
    let limit = 1_000_000;
    let res = admin("/v1/tenants")
        .json(&json!({
            "tenantId": "bench", "name": "Bench", "rateLimitPerMinute": limit,
            "quotas": { "maxApps": limit, "maxConcurrentDeploys": limit,
                        "deploysPerDay": limit, "deploysPerMonth": limit },
        }))
        .send()
        .await
        .expect("the api answers");
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let key: Value = admin("/v1/tenants/bench/keys")
        .json(&json!({ "name": "bench" }))
        .send()
        .await
        .expect("the api answers")
        .json()
        .await
        .expect("a key");
    Portal {
        base: base.to_owned(),
        http: http.clone(),
        key: key["key"].as_str().expect("a key").to_owned(),
    }
}

fn summary(name: &str, values: &mut [f64]) -> (f64, f64) {
    let (p50, p99) = (percentile(values, 0.50), percentile(values, 0.99));
    println!("  {name:<28} p50 {p50:7.1} ms   p99 {p99:7.1} ms");
    (p50, p99)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let deploys = env_usize("BERTH_BENCH_DEPLOYS", 30);
    let warmups = env_usize("BERTH_BENCH_WARMUPS", 3);
    let control = spawn_control(Duration::from_secs(30), 3).await;
    let agent = spawn_agent(&control).await;
    let mut settings = runner_settings(&control, "bench-runner");
    settings.claim_wait = Duration::from_secs(20);
    let runner = spawn_runner(settings);
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client");
    let portal = portal(
        &start_api(&control, &tmp.path().join("api.db")).await,
        &http,
    )
    .await;
    let run = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);

    let (mut api, mut direct) = (Vec::new(), Vec::new());
    for round in 0..warmups + deploys {
        let msg = format!("pair-{run}-{round}");
        let (via_api, via_control) = (format!("pa-{run}-{round}"), format!("pd-{run}-{round}"));
        let spec = json!({ "image": IMAGE, "env": { "MSG": msg } });
        let path = format!("/v1/apps/{via_api}");
        portal.send(Method::PUT, &path, Some(spec), 201).await;
        // Alternate which path goes first, so neither always finds the other's container fresh.
        let (a, d) = if round % 2 == 0 {
            let a = portal.deploy(&via_api).await;
            (a, deploy_direct(&control, &via_control, &msg).await)
        } else {
            let d = deploy_direct(&control, &via_control, &msg).await;
            (portal.deploy(&via_api).await, d)
        };
        eprintln!("round {round:2}: api {a:7.1} ms   POST /deploy/jobs {d:7.1} ms");
        if round >= warmups {
            api.push(a);
            direct.push(d);
        }
        control.stop_app(&via_control).await;
        let stop = format!("/v1/apps/{via_api}/stop");
        let stopping = portal.send(Method::POST, &stop, None, 202).await;
        portal.succeeded(stopping).await;
    }

    println!(
        "whole deployment (request → SUCCEEDED: accepted, claimed, container started on Docker), \
         {deploys} of each after {warmups} warm-ups, alternating"
    );
    let (a50, a99) = summary("through the api", &mut api);
    let (d50, d99) = summary("POST /deploy/jobs", &mut direct);
    println!(
        "  ratio api / direct:          p50 {:.2}x   p99 {:.2}x   (goal ≤ 1.2x)",
        a50 / d50,
        a99 / d99
    );

    runner.stop().await.expect("the runner stops");
    drop(agent);
    control.stop().await;
}
