//! Against the real control plane (`berth_control::startup`, SQLite): the node registers,
//! is `ONLINE`, and lists the app it runs.

use std::time::Duration;

use berth_control::config::{Secrets, Settings};
use berth_control::queue::retry::RetryPolicy;
use berth_control::startup::Application as Control;
use berth_shared::secret::Secret;
use serde_json::{json, Value};

use crate::helpers::*;

const JOIN_TOKEN: &str = "node-join-token-for-agent-tests";
const ADMIN_TOKEN: &str = "admin-token-for-agent-tests";

#[tokio::test]
async fn the_real_control_plane_lists_the_node_online_with_its_app() {
    let db_dir = std::env::temp_dir().join(format!("berth-agent-control-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&db_dir).unwrap();
    let settings = Settings {
        database_url: format!("sqlite://{}?mode=rwc", db_dir.join("berth.db").display()),
        secrets: Secrets {
            deploy: Secret::new("deploy-secret-for-agent-tests"),
            runner: Secret::new("runner-token-for-agent-tests"),
            node_join: Secret::new(JOIN_TOKEN),
            admin: Secret::new(ADMIN_TOKEN),
            secret_key: std::sync::Arc::new(berth_shared::sealed::SealingKeys::generate()),
        },
        lease: Duration::from_secs(30),
        retry: RetryPolicy {
            max_attempts: 3,
            base_ms: 1000,
            cap_ms: 10_000,
        },
        node_ttl: Duration::from_secs(15),
        node_lost: Duration::from_secs(30),
        sweep_interval: Duration::from_millis(200),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control = Control::build(settings, listener)
        .await
        .expect("the control plane starts");
    let control_url = format!("http://127.0.0.1:{}", control.port());
    let (stop_control, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(control.run(async {
        let _ = stopped.await;
    }));

    let mut options = Options::fresh();
    options.control = Some((control_url.clone(), JOIN_TOKEN.into()));
    let agent = spawn_agent_with(options).await;
    let app = app_id("ctl");
    agent.deploy_ok(&deploy_body(&app, json!({}))).await;

    let mut node = Value::Null;
    for _ in 0..50 {
        let list: Value = agent
            .client
            .get(format!("{control_url}/admin/runtime-nodes/list"))
            .header("x-admin-token", ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        node = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["nodeId"] == agent.options.node_id.as_str())
            .cloned()
            .unwrap_or(Value::Null);
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
    let _ = stop_control.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(db_dir);
}
