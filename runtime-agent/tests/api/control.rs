//! Heartbeats to the control plane's node registry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use berth_shared::wire::NodeHeartbeat;
use serde_json::json;

use crate::helpers::*;

type Seen = Arc<Mutex<Vec<NodeHeartbeat>>>;

async fn record(
    State(seen): State<Seen>,
    headers: HeaderMap,
    Json(body): Json<NodeHeartbeat>,
) -> StatusCode {
    if headers.get("x-rt-node-token").and_then(|v| v.to_str().ok())
        != Some("node-token-for-agent-tests")
    {
        return StatusCode::UNAUTHORIZED;
    }
    seen.lock().unwrap().push(body);
    StatusCode::NO_CONTENT
}

/// A stand-in node registry on `listener`.
async fn fake_control(listener: tokio::net::TcpListener) -> Seen {
    let seen = Seen::default();
    let app = Router::new()
        .route("/internal/runtime-nodes/heartbeat", post(record))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    seen
}

#[tokio::test]
async fn heartbeats_announce_the_node_and_its_apps_and_survive_an_absent_control_plane() {
    // Reserve a port, leave it closed: the control plane is "away" when the agent starts.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let control_addr = reserved.local_addr().unwrap();
    drop(reserved);

    let mut options = Options::fresh();
    options.control = Some((
        format!("http://{control_addr}"),
        "node-token-for-agent-tests".into(),
    ));
    let agent = spawn_agent_with(options).await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    let seen = fake_control(tokio::net::TcpListener::bind(control_addr).await.unwrap()).await;
    let app = app_id("beat");
    agent.deploy_ok(&deploy_body(&app, json!({}))).await;

    let mut found = None;
    for _ in 0..50 {
        found = seen
            .lock()
            .unwrap()
            .iter()
            .find(|h| h.apps.iter().any(|a| a.app_id == app))
            .cloned();
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let beat = found.expect("a heartbeat lists the deployed app once the control plane is back");
    assert_eq!(beat.node_id, agent.options.node_id);
    assert_eq!(beat.gateway_base_url, format!("http://{}", agent.gateway));
    assert_eq!(beat.agent_base_url, format!("http://{}", agent.agent));
    assert!(beat.capacity.cpus >= 1.0 && beat.capacity.memory_mb > 0);
    let entry = beat.apps.iter().find(|a| a.app_id == app).unwrap();
    assert_eq!(entry.state, berth_shared::wire::agent::AppState::Running);
    assert_eq!(entry.image, IMAGE);
}

#[tokio::test]
async fn heartbeats_say_when_an_app_sleeps_and_when_it_woke() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control_addr = listener.local_addr().unwrap();
    let seen = fake_control(listener).await;
    let mut options = Options::fresh();
    options.control = Some((
        format!("http://{control_addr}"),
        "node-token-for-agent-tests".into(),
    ));
    let agent = spawn_agent_with(options).await;
    let app = app_id("beat-sleep");
    let mut body = deploy_body(&app, json!({}));
    body["sleepAfterSecs"] = json!(1);
    agent.deploy_ok(&body).await;

    // The state of the app in the heartbeats from the `from`-th on, newest first.
    let states_since = |from: usize| -> Vec<String> {
        let seen = seen.lock().unwrap();
        seen.iter()
            .skip(from)
            .rev()
            .filter_map(|h| h.apps.iter().find(|a| a.app_id == app))
            .map(|a| a.state.as_str().to_owned())
            .collect()
    };
    let mut asleep = false;
    for _ in 0..100 {
        asleep = states_since(0).first().map(String::as_str) == Some("sleeping");
        if asleep {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(asleep, "a heartbeat says sleeping: {:?}", states_since(0));
    let before_wake = seen.lock().unwrap().len();
    assert_eq!(agent.via_path(&app, "/").await.0, 200);
    let mut woke = false;
    for _ in 0..50 {
        woke = states_since(before_wake).iter().any(|s| s == "running");
        if woke {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(woke, "a heartbeat after the wake says running");
}
