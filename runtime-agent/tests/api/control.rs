//! Heartbeats to the control plane's node registry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use berth_shared::grant::{Grant, GrantSigner};
use berth_shared::sealed::SealingKeys;
use berth_shared::wire::NodeHeartbeat;
use serde_json::json;

use crate::helpers::*;

const JOIN_TOKEN: &str = "node-join-token-for-agent-tests";

/// What the stand-in registry saw: heartbeats, joins, and the credentials it issued (in
/// order; the last rotation's is last).
#[derive(Default)]
struct Registry {
    beats: Vec<NodeHeartbeat>,
    joins: usize,
    issued: Vec<String>,
    /// The credential each heartbeat carried.
    used: Vec<String>,
    /// The grant keys heartbeat answers carry.
    grant_keys: Vec<String>,
}

type Seen = Arc<Mutex<Registry>>;

fn header(headers: &HeaderMap, name: &str) -> String {
    let value = headers.get(name).and_then(|v| v.to_str().ok());
    value.unwrap_or_default().to_owned()
}

async fn record(
    State(seen): State<Seen>,
    headers: HeaderMap,
    Json(body): Json<NodeHeartbeat>,
) -> (StatusCode, Json<serde_json::Value>) {
    let mut seen = seen.lock().unwrap();
    let token = header(&headers, "x-rt-node-token");
    if !seen.issued.contains(&token) {
        return (StatusCode::UNAUTHORIZED, Json(json!({})));
    }
    let answer = json!({
        "nodeId": body.node_id, "scheduling": "ACTIVE", "schedulable": true,
        "grantKeys": seen.grant_keys,
    });
    seen.used.push(token);
    seen.beats.push(body);
    (StatusCode::OK, Json(answer))
}

/// Issues a credential to a join (with the join token) or a rotation (with an issued one).
async fn issue(
    State(seen): State<Seen>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> (StatusCode, Json<serde_json::Value>) {
    let mut seen = seen.lock().unwrap();
    let joining = header(&headers, "x-rt-join-token") == JOIN_TOKEN;
    let rotating = seen.issued.contains(&header(&headers, "x-rt-node-token"));
    if !joining && !rotating {
        return (StatusCode::UNAUTHORIZED, Json(json!({})));
    }
    seen.joins += usize::from(joining);
    let credential = format!("credential-{}", seen.issued.len());
    seen.issued.push(credential.clone());
    let answer = json!({ "nodeId": body["nodeId"], "credential": credential });
    (StatusCode::CREATED, Json(answer))
}

/// A stand-in node registry on `listener`.
async fn fake_control(listener: tokio::net::TcpListener) -> Seen {
    let seen = Seen::default();
    let app = Router::new()
        .route("/internal/runtime-nodes/heartbeat", post(record))
        .route("/internal/runtime-nodes/join", post(issue))
        .route("/internal/runtime-nodes/rotate", post(issue))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    seen
}

/// Waits until the registry saw `n` heartbeats.
async fn until_beats(seen: &Seen, n: usize) {
    for _ in 0..100 {
        if seen.lock().unwrap().beats.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} heartbeats arrived");
}

#[tokio::test]
async fn the_agent_joins_once_keeps_its_credential_private_and_survives_a_restart() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control = format!("http://{}", listener.local_addr().unwrap());
    let seen = fake_control(listener).await;
    let mut options = Options::fresh();
    options.control = Some((control, JOIN_TOKEN.into()));
    let agent = spawn_agent_with(options).await;
    until_beats(&seen, 2).await;
    let file = agent
        .options
        .state_dir
        .join(berth_agent::credential::CREDENTIAL_FILE);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o600,
        "the credential file is the owner's only"
    );
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("credential-0"));

    // Restarted without the join token: it heartbeats with the kept credential.
    let mut options = agent.kill().await;
    options.control = options.control.map(|(url, _)| (url, String::new()));
    let before = seen.lock().unwrap().beats.len();
    let agent = spawn_agent_with(options).await;
    until_beats(&seen, before + 2).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.joins, 1, "no second join");
    assert!(seen.used.iter().all(|c| c == "credential-0"));
    drop(agent);
}

/// The status call of `app` with `grant`: its HTTP status.
async fn status_with(agent: &TestAgent, app: &str, grant: String) -> u16 {
    let response = agent
        .client
        .get(agent.agent_url(&format!("/agent/apps/{app}/status")))
        .header(GRANT, grant)
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

#[tokio::test]
async fn the_agent_takes_its_control_planes_grant_keys_keeps_them_and_follows_a_rotation() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control = format!("http://{}", listener.local_addr().unwrap());
    let seen = fake_control(listener).await;
    let (old, new) = (SealingKeys::generate_text(), SealingKeys::generate_text());
    let control_key = GrantSigner::new(&SealingKeys::parse(&old).unwrap());
    seen.lock().unwrap().grant_keys = control_key.public_keys().to_vec();
    let mut options = Options::fresh();
    options.control = Some((control.clone(), JOIN_TOKEN.into()));
    options.pin_grant_keys = false;
    let agent = spawn_agent_with(options).await;
    until_beats(&seen, 2).await;
    let (app, node) = (app_id("keys"), agent.options.node_id.clone());
    let signed_by = |signer: &GrantSigner| {
        signer.sign(&Grant::new(
            uuid::Uuid::new_v4(),
            &app,
            &node,
            Duration::from_secs(60),
        ))
    };
    assert_eq!(
        status_with(&agent, &app, signed_by(&control_key)).await,
        200
    );
    // A key the control plane never named opens nothing.
    assert_eq!(status_with(&agent, &app, signed_by(signer())).await, 403);
    let file = agent.options.state_dir.join("grant-keys");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // Restarted while the control plane is away: the kept keys still verify.
    let mut options = agent.kill().await;
    options.control = Some(("http://127.0.0.1:9".into(), String::new()));
    let agent = spawn_agent_with(options).await;
    assert_eq!(
        status_with(&agent, &app, signed_by(&control_key)).await,
        200
    );
    let mut options = agent.kill().await;

    // BERTH_SECRET_KEY rotated to NEW,OLD: the new key signs, grants of both open.
    let rotated = GrantSigner::new(&SealingKeys::parse(&format!("{new},{old}")).unwrap());
    seen.lock().unwrap().grant_keys = rotated.public_keys().to_vec();
    options.control = Some((control, String::new()));
    let before = seen.lock().unwrap().beats.len();
    let agent = spawn_agent_with(options).await;
    until_beats(&seen, before + 2).await;
    assert_eq!(status_with(&agent, &app, signed_by(&rotated)).await, 200);
    assert_eq!(
        status_with(&agent, &app, signed_by(&control_key)).await,
        200
    );
}

#[tokio::test]
async fn the_agent_saves_a_rotated_credential_before_it_uses_it() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control = format!("http://{}", listener.local_addr().unwrap());
    let seen = fake_control(listener).await;
    let mut options = Options::fresh();
    options.control = Some((control, JOIN_TOKEN.into()));
    options.rotate_secs = 0;
    let agent = spawn_agent_with(options).await;
    until_beats(&seen, 3).await;
    let kept = std::fs::read_to_string(agent.options.state_dir.join("node-credential")).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.joins, 1);
    assert!(
        seen.issued.len() >= 3,
        "rotated after each heartbeat: {:?}",
        seen.issued
    );
    assert!(
        seen.used.windows(2).all(|w| w[0] != w[1]),
        "each heartbeat used the newest: {:?}",
        seen.used
    );
    let newest = seen.issued.last().unwrap();
    assert!(
        kept.contains(&format!("\"{newest}\"")),
        "the newest is kept: {kept}"
    );
}

#[tokio::test]
async fn heartbeats_announce_the_node_and_its_apps_and_survive_an_absent_control_plane() {
    // Reserve a port, leave it closed: the control plane is "away" when the agent starts.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let control_addr = reserved.local_addr().unwrap();
    drop(reserved);

    let mut options = Options::fresh();
    options.control = Some((format!("http://{control_addr}"), JOIN_TOKEN.into()));
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
            .beats
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
    options.control = Some((format!("http://{control_addr}"), JOIN_TOKEN.into()));
    let agent = spawn_agent_with(options).await;
    let app = app_id("beat-sleep");
    let mut body = deploy_body(&app, json!({}));
    body["sleepAfterSecs"] = json!(1);
    agent.deploy_ok(&body).await;

    // The state of the app in the heartbeats from the `from`-th on, newest first.
    let states_since = |from: usize| -> Vec<String> {
        let seen = seen.lock().unwrap();
        seen.beats
            .iter()
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
    let before_wake = seen.lock().unwrap().beats.len();
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
