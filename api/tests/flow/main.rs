//! A portal's whole flow on real components: berth-api in front of the control plane on
//! PostgreSQL, a runner, a runtime agent and the Docker engine — template, instance, its URL
//! answering by host name through the gateway, a config change restarting it with the new env,
//! rollback, stop (volume kept), delete (container and volume gone, id reusable) — and no secret
//! value in any answer, event stream, job log or log line any of the services wrote.
//!
//! The fleet is started by the runner's own test helpers, used as they are. Every service runs
//! in this process, so one tracing subscriber captures all their log lines.

#[allow(dead_code)]
#[path = "../../../runner/tests/fleet/helpers.rs"]
mod helpers;

use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_api::config::Settings;
use berth_api::startup::Application;
use berth_shared::secret::Secret;
use helpers::{
    docker_lines, eventually, runner_settings, spawn_agent, spawn_control, spawn_runner, DOCKER,
    IMAGE,
};
use reqwest::Method;
use serde_json::{json, Value};

use berth_api::config::test_secrets::ADMIN_TOKEN as ADMIN;
use berth_control::config::test_secrets::DEPLOY_SECRET;
/// The template's secret value; nothing but the container may ever see it.
const SECRET: &str = "flow-secret-value-5f1d2c";

/// Every log line the services in this process write, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Installs the capture as this process's subscriber: every level of Berth's own crates,
    /// `info` (the services' default) of the libraries. (bollard's `debug` prints the engine's
    /// answers, which hold a container's environment: docs/security.md.)
    fn install() -> Self {
        let captured = Self::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_env_filter(
                "info,berth_api=trace,berth_control=trace,berth_runner=trace,berth_agent=trace,berth_shared=trace",
            )
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        captured
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

/// The Docker volumes labelled for `app`.
fn volumes_of(app: &str) -> Vec<String> {
    docker_lines(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=berth.app={app}"),
    ])
}

/// `API_TOKEN=…` as the container of `app` got it.
fn container_env(containers: &[String]) -> String {
    let out = Command::new(DOCKER)
        .args(["inspect", "-f", "{{json .Config.Env}}"])
        .args(containers)
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Portal {
    base: String,
    http: reqwest::Client,
    key: String,
}

impl Portal {
    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    /// The deployment's whole event stream (it ends after the final state), as text.
    async fn events(&self, d: &Value) -> String {
        let id = d["deploymentId"].as_str().unwrap();
        let res = self
            .req(Method::GET, &format!("/v1/deployments/{id}/events"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        tokio::time::timeout(Duration::from_secs(30), res.text())
            .await
            .expect("the event stream ends after the final state")
            .unwrap()
    }

    async fn text(&self, path: &str) -> String {
        self.req(Method::GET, path)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn send(&self, method: Method, path: &str, body: Value, status: u16) -> Value {
        let res = self.req(method, path).json(&body).send().await.unwrap();
        let got = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(got, status, "{path}: {body}");
        body
    }

    /// Waits until the deployment ends; it must succeed.
    async fn succeeded(&self, d: &Value) -> Value {
        let id = d["deploymentId"].as_str().unwrap();
        let mut version = -1;
        for _ in 0..60 {
            let res = self
                .req(
                    Method::GET,
                    &format!("/v1/deployments/{id}?wait=5&version={version}"),
                )
                .send()
                .await
                .unwrap();
            let now: Value = res.json().await.unwrap();
            match now["state"].as_str().unwrap() {
                "SUCCEEDED" => return now,
                "FAILED" | "CANCELLED" => {
                    let logs = self
                        .req(Method::GET, &format!("/v1/deployments/{id}/logs"))
                        .send()
                        .await
                        .unwrap()
                        .text()
                        .await
                        .unwrap();
                    panic!("deployment failed: {now}\n{logs}");
                }
                _ => version = now["version"].as_i64().unwrap(),
            }
        }
        panic!("deployment {id} never ended");
    }
}

/// Asks for a change that deploys, waits for it to succeed, and for `slug` to answer `text`.
async fn change(
    portal: &Portal,
    gateway: &str,
    slug: &str,
    call: (Method, &str, Value, u16),
    text: &str,
) -> Value {
    let (method, path, body, status) = call;
    let d = portal.send(method, path, body, status).await;
    portal.succeeded(&d).await;
    answers(gateway, slug, text).await;
    d
}

/// `GET /` of `slug` through the gateway by host name: status and body.
async fn by_host(gateway: &str, slug: &str) -> (u16, String) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    match client
        .get(format!("{gateway}/"))
        .header("Host", format!("{slug}.localhost"))
        .send()
        .await
    {
        Ok(res) => (res.status().as_u16(), res.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

async fn answers(gateway: &str, slug: &str, text: &str) {
    eventually(
        Duration::from_secs(20),
        &format!("{slug} to answer {text}"),
        || async {
            let (status, body) = by_host(gateway, slug).await;
            (status == 200 && body.contains(text)).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_portal_signs_a_user_up_and_tears_it_down() {
    let logs = Captured::install();
    let control = spawn_control(Duration::from_secs(30), 2).await;
    let agent = spawn_agent(&control).await;
    let runner = spawn_runner(runner_settings(&control, "flow-runner"));
    let gateway_port: u16 = agent.gateway.rsplit(':').next().unwrap().parse().unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}?mode=rwc", tmp.path().join("api.db").display());
    let settings = Settings {
        gateway_port,
        ..Settings::for_tests(&database_url, &control.base, Secret::new(DEPLOY_SECRET))
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = Application::build(settings, listener).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    // The operator signs the portal up.
    let res = http
        .post(format!("{base}/v1/tenants"))
        .header("X-Admin-Token", ADMIN)
        .json(&json!({ "tenantId": "beaver", "name": "Beaver" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let key: Value = http
        .post(format!("{base}/v1/tenants/beaver/keys"))
        .header("X-Admin-Token", ADMIN)
        .json(&json!({ "name": "portal" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let portal = Portal {
        base: base.clone(),
        http: http.clone(),
        key: key["key"].as_str().unwrap().to_owned(),
    };

    // A template, and a user's instance of it, reachable by its host name.
    let template = json!({
        "image": IMAGE,
        "env": { "MSG": "hello-from-template" },
        "secretEnv": { "API_TOKEN": SECRET },
        "volumes": [{ "name": "data", "mountPath": "/data" }],
    });
    let mut seen = Vec::new();
    seen.push(
        portal
            .send(Method::PUT, "/v1/templates/site", template, 201)
            .await
            .to_string(),
    );
    let slug = format!("u{:06x}", rand::random::<u32>() & 0xff_ffff);
    let instance = portal
        .send(
            Method::POST,
            "/v1/instances",
            json!({ "template": "site", "slug": slug }),
            201,
        )
        .await;
    assert_eq!(
        instance["url"],
        format!("http://{slug}.localhost:{gateway_port}/")
    );
    let first = portal.succeeded(&instance).await;
    answers(&agent.gateway, &slug, "hello-from-template").await;
    let volume = format!("berth-{slug}_data");
    assert_eq!(volumes_of(&slug), vec![volume.clone()]);
    assert!(
        container_env(&agent.containers(&slug)).contains(&format!("API_TOKEN={SECRET}")),
        "the container gets the secret, so its absence everywhere else means something"
    );
    seen.push(portal.events(&instance).await);
    seen.push(instance.to_string());
    let again = portal
        .send(
            Method::POST,
            "/v1/instances",
            json!({ "template": "site", "slug": slug }),
            200,
        )
        .await;
    assert_eq!(again["deploymentId"], instance["deploymentId"]);
    assert_eq!(again["state"], "RUNNING");

    // Configure: the app restarts with the new env.
    let config = format!("/v1/apps/{slug}/config");
    let body = json!({ "env": { "MSG": "configured" } });
    change(
        &portal,
        &agent.gateway,
        &slug,
        (Method::PATCH, &config, body, 201),
        "configured",
    )
    .await;

    // Rollback to the first deployment's image and spec.
    let rollback = format!("/v1/apps/{slug}/rollback");
    let body = json!({ "deploymentId": first["deploymentId"] });
    change(
        &portal,
        &agent.gateway,
        &slug,
        (Method::POST, &rollback, body, 201),
        "hello-from-template",
    )
    .await;

    // Stop: the container goes, the spec stays.
    let stop_d = portal
        .send(
            Method::POST,
            &format!("/v1/apps/{slug}/stop"),
            Value::Null,
            202,
        )
        .await;
    portal.succeeded(&stop_d).await;
    assert!(agent.containers(&slug).is_empty(), "the container is gone");
    assert_eq!(
        volumes_of(&slug),
        vec![volume.clone()],
        "a stop keeps the volume"
    );
    assert_ne!(by_host(&agent.gateway, &slug).await.0, 200);
    let app_view = portal
        .send(Method::GET, &format!("/v1/apps/{slug}"), Value::Null, 200)
        .await;
    assert_eq!(app_view["status"]["state"], "STOPPED");

    // Delete: the id is free again, for a new instance.
    let started = portal
        .send(
            Method::POST,
            &format!("/v1/apps/{slug}/deployments"),
            json!({}),
            201,
        )
        .await;
    portal.succeeded(&started).await;
    let delete = portal
        .send(
            Method::DELETE,
            &format!("/v1/apps/{slug}"),
            Value::Null,
            202,
        )
        .await;
    portal.succeeded(&delete).await;
    seen.push(portal.events(&delete).await);
    assert!(agent.containers(&slug).is_empty(), "the container is gone");
    assert!(volumes_of(&slug).is_empty(), "the volume is gone");
    eventually(Duration::from_secs(5), "the app to be gone", || async {
        (portal
            .req(Method::GET, &format!("/v1/apps/{slug}"))
            .send()
            .await
            .unwrap()
            .status()
            == 404)
            .then_some(())
    })
    .await;
    let reborn = portal
        .send(
            Method::POST,
            "/v1/instances",
            json!({ "template": "site", "slug": slug, "env": { "MSG": "reborn" } }),
            201,
        )
        .await;
    portal.succeeded(&reborn).await;
    answers(&agent.gateway, &slug, "reborn").await;
    assert_eq!(
        volumes_of(&slug),
        vec![volume.clone()],
        "a new volume, empty"
    );

    // No secret value in any answer the portal got, any event stream, any deployment's job
    // log, nor in any line the api, control plane, runner or agent logged.
    seen.push(portal.events(&reborn).await);
    seen.push(portal.text("/v1/usage?limit=200").await);
    seen.push(portal.text(&format!("/v1/apps/{slug}")).await);
    seen.push(portal.text("/v1/apps").await);
    seen.push(portal.text("/v1/templates/site").await);
    seen.push(portal.text(&format!("/v1/instances/{slug}")).await);
    let history: Value = serde_json::from_str(
        &portal
            .text(&format!("/v1/apps/{slug}/deployments?limit=100"))
            .await,
    )
    .unwrap();
    for d in [first.clone(), delete.clone(), reborn.clone()] {
        let id = d["deploymentId"].as_str().unwrap();
        seen.push(portal.text(&format!("/v1/deployments/{id}")).await);
        seen.push(portal.text(&format!("/v1/deployments/{id}/logs")).await);
    }
    seen.push(history.to_string());
    let deployed = seen.iter().filter(|t| t.contains("deploying")).count();
    assert!(deployed >= 2, "the job logs were read: {seen:?}");
    for text in &seen {
        assert!(
            !text.contains(SECRET),
            "a secret value in an answer: {text}"
        );
    }
    let lines = logs.text();
    assert!(
        lines.contains("deployment queued") && lines.contains("app stopped"),
        "the capture holds every service's lines"
    );
    if let Some(line) = lines.lines().find(|l| l.contains(SECRET)) {
        panic!("a secret value in a log line: {line}");
    }

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    runner.stop().await.unwrap();
    drop(agent);
    // The reborn instance's volume, once its container is gone with the agent.
    let _ = Command::new(DOCKER)
        .args(["volume", "rm", "-f", &volume])
        .output();
    control.stop().await;
}
