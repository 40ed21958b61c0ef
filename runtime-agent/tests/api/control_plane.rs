//! Against the real control plane (`berth_control::startup`, SQLite): the node registers,
//! is `ONLINE`, and lists the app it runs.

use std::time::Duration;

use berth_control::config::test_secrets::{
    ADMIN_TOKEN, DEPLOY_SECRET, NODE_JOIN_TOKEN as JOIN_TOKEN, RUNNER_TOKEN,
};
use berth_control::config::Settings;
use berth_control::startup::Application as ControlApp;
use serde_json::{json, Value};

use crate::helpers::*;

/// The real control plane on SQLite, on port 0.
struct Control {
    url: String,
    db_dir: std::path::PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    client: reqwest::Client,
}

impl Control {
    async fn spawn() -> Self {
        let db_dir =
            std::env::temp_dir().join(format!("berth-agent-control-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&db_dir).unwrap();
        let database_url = format!("sqlite://{}?mode=rwc", db_dir.join("berth.db").display());
        let settings = Settings {
            sweep_interval: Duration::from_millis(200),
            ..Settings::for_tests(&database_url)
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let control = ControlApp::build(settings, listener)
            .await
            .expect("the control plane starts");
        let url = format!("http://127.0.0.1:{}", control.port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(control.run(async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        Self {
            url,
            db_dir,
            stop,
            server,
            client,
        }
    }

    /// `POST {path}` with `header: secret` and a JSON `body`; the answer's status and body.
    async fn post(&self, path: &str, header: &str, secret: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .header(header, secret)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Node `node_id` as the admin list shows it (`Null` before its first heartbeat).
    async fn node(&self, node_id: &str) -> Value {
        let list: Value = self
            .client
            .get(format!("{}/admin/runtime-nodes/list", self.url))
            .header("x-admin-token", ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["nodeId"] == node_id)
            .cloned()
            .unwrap_or(Value::Null)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
        let _ = std::fs::remove_dir_all(self.db_dir);
    }
}

#[tokio::test]
async fn the_real_control_plane_lists_the_node_online_with_its_app() {
    let control = Control::spawn().await;
    let control_url = control.url.clone();
    let mut options = Options::fresh();
    options.control = Some((control_url.clone(), JOIN_TOKEN.into()));
    let agent = spawn_agent_with(options).await;
    let app = app_id("ctl");
    agent.deploy_ok(&deploy_body(&app, json!({}))).await;

    let mut node = Value::Null;
    for _ in 0..50 {
        node = control.node(&agent.options.node_id).await;
        let reports_app = node["reportedApps"]
            .as_array()
            .is_some_and(|apps| apps.iter().any(|a| a["appId"] == app.as_str()));
        if reports_app {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(node["state"], "ONLINE", "{node}");
    assert_eq!(node["gatewayBaseUrl"], format!("http://{}", agent.gateway));
    assert_eq!(node["agentBaseUrl"], format!("http://{}", agent.agent));
    let reported = node["reportedApps"].as_array().expect("reportedApps");
    let entry = reported
        .iter()
        .find(|a| a["appId"] == app.as_str())
        .expect("the app is reported");
    assert_eq!(entry["state"], "running");

    drop(agent);
    control.stop().await;
}

/// SPEC §8, one version per app: an agent that restarts after its app was deployed on another
/// node adopts the old container, and the first heartbeat's answer has it removed: unrouted,
/// gone from the engine and from its heartbeats, its volume kept.
#[tokio::test]
async fn a_restarted_agent_removes_its_container_of_an_app_now_running_elsewhere() {
    let control = Control::spawn().await;
    let mut options = Options::fresh();
    options.control = Some((control.url.clone(), JOIN_TOKEN.into()));
    let agent = spawn_agent_with(options).await;
    let node_id = agent.options.node_id.clone();
    let app = app_id("moved");
    let mut body = deploy_body(&app, json!({}));
    body["volumes"] = json!([{"name": "data", "mountPath": "/data"}]);
    agent.deploy_ok(&body).await;
    let volumes = volumes_of(&app);
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    for _ in 0..50 {
        if control.node(&node_id).await["state"] == "ONLINE" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The agent goes down; meanwhile the app is deployed on another node, which succeeds.
    let options = agent.kill().await;
    let (status, _) = control
        .post(
            &format!("/admin/runtime-nodes/{node_id}/cordon"),
            "x-admin-token",
            ADMIN_TOKEN,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let other = format!("other-{}", uuid::Uuid::new_v4().simple());
    let (status, joined) = control
        .post(
            "/internal/runtime-nodes/join",
            "x-rt-join-token",
            JOIN_TOKEN,
            json!({"nodeId": other}),
        )
        .await;
    assert_eq!(status, 201, "{joined}");
    let credential = joined["credential"].as_str().unwrap().to_owned();
    let heartbeat = json!({
        "nodeId": other, "name": other,
        "agentBaseUrl": "http://127.0.0.1:9", "gatewayBaseUrl": "http://127.0.0.1:9",
        "capacity": {"cpus": 4.0, "memoryMb": 4096, "maxApps": 10}, "version": "test",
    });
    let (status, answer) = control
        .post(
            "/internal/runtime-nodes/heartbeat",
            "x-rt-node-token",
            &credential,
            heartbeat,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, job) = control
        .post(
            "/deploy/jobs",
            "x-deploy-secret",
            DEPLOY_SECRET,
            json!({"appId": app, "image": IMAGE}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let (status, claim) = control
        .post(
            "/runner/jobs/claim",
            "x-runner-token",
            RUNNER_TOKEN,
            json!({"runnerId": "r1", "wait": 5}),
        )
        .await;
    assert_eq!(status, 200, "{claim}");
    assert_eq!(claim["node"]["nodeId"], other.as_str(), "{claim}");
    let job_id = claim["job"]["jobId"].as_str().unwrap().to_owned();
    let report = json!({
        "runnerId": "r1", "leaseToken": claim["lease"]["token"], "outcome": "SUCCEEDED",
        "result": {"containerId": "c-other", "url": "http://127.0.0.1:9/apps/x/", "image": IMAGE},
    });
    let (status, done) = control
        .post(
            &format!("/runner/jobs/{job_id}/report"),
            "x-runner-token",
            RUNNER_TOKEN,
            report,
        )
        .await;
    assert_eq!(status, 200, "{done}");

    // The agent comes back: it adopts the old container, and its first answer settles it.
    let agent = spawn_agent_with(options).await;
    let mut left = agent.containers(&app);
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = agent.containers(&app);
    }
    assert!(left.is_empty(), "the old version still runs: {left:?}");
    let (status, text) = agent.via_path(&app, "/").await;
    assert_eq!(status, 404, "the app is no longer routed here: {text}");
    assert_eq!(volumes_of(&app), volumes, "the node's data stays");
    assert!(
        agent
            .metrics()
            .await
            .contains("berth_agent_displaced_total 1"),
        "counted"
    );
    let mut reported = Value::Null;
    for _ in 0..50 {
        reported = control.node(&node_id).await["reportedApps"].clone();
        if reported.as_array().is_some_and(|apps| apps.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reported, json!([]), "its heartbeats no longer list the app");

    drop(agent);
    for volume in volumes {
        docker_ok(None, &["volume", "rm", "-f", &volume]);
    }
    control.stop().await;
}
