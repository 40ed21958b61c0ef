//! Sleeping apps (SPEC §8): idle apps sleep, the first request wakes them, once.

use std::process::Command;
use std::time::{Duration, Instant};

use berth_shared::wire::agent::{AgentDeployResponse, AppState};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// A deploy of the test image that sleeps after one idle second.
fn sleepy(app: &str, env: Value, extra: Value) -> Value {
    let mut body = deploy_body(app, env);
    body["sleepAfterSecs"] = json!(1);
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            body[k] = v;
        }
    }
    body
}

impl TestAgent {
    /// Polls the app's status until it is `state`, at most `max`.
    async fn until_state(&self, app: &str, state: AppState, max: Duration) {
        let deadline = Instant::now() + max;
        loop {
            let status = self.status(app).await;
            if status.state == state {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "app {app} is still {:?} after {max:?}, not {state:?}",
                status.state
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Deploys `body` and waits until the app has slept in (its idle second, then the stop).
    async fn deploy_asleep(&self, body: &Value) -> AgentDeployResponse {
        let deployed = self.deploy_ok(body).await;
        let app = body["appId"].as_str().unwrap();
        self.until_state(app, AppState::Sleeping, Duration::from_secs(15))
            .await;
        deployed
    }

    /// Polls until a metric has `value` (a doze settles just after the engine stopped the
    /// container), at most 5 s.
    async fn until_metric(&self, line: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.metric(line).await != value {
            assert!(Instant::now() < deadline, "{line} is not {value}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of one metric line (`name{labels}`), 0 when absent.
    async fn metric(&self, line: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// The engine's view of a container: `running`, `exited`, `paused`, ….
fn docker_state(id: &str) -> String {
    inspect(id)["State"]["Status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

const WAKES_OK: &str = "berth_agent_wakes_total{outcome=\"ok\"}";

#[tokio::test]
async fn an_idle_app_sleeps_but_not_while_a_websocket_is_open() {
    let agent = spawn_agent().await;
    let app = app_id("idle-ws");
    let deployed = agent
        .deploy_asleep(&sleepy(&app, json!({"WS": "1"}), json!({})))
        .await;

    // The upgrade wakes the app, and its open socket keeps it awake.
    let mut socket = TcpStream::connect(agent.gateway).await.unwrap();
    let request = format!(
        "GET /apps/{app}/socket HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        agent.gateway
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    socket.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");

    // Three idle times with the socket open and silent: still awake, still echoing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(agent.status(&app).await.state, AppState::Running);
    assert_eq!(docker_state(&deployed.container_id), "running");
    let mut rest = vec![0u8; 256];
    let _ = tokio::time::timeout(Duration::from_millis(200), socket.read(&mut rest)).await;
    socket.write_all(b"still here\n").await.unwrap();
    let mut echoed = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut echoed))
        .await
        .expect("the echo arrives")
        .unwrap();
    assert_eq!(&echoed, b"still here\n");

    let slept = agent.metric("berth_agent_sleeps_total").await;
    drop(socket);
    agent
        .until_state(&app, AppState::Sleeping, Duration::from_secs(15))
        .await;
    assert_eq!(docker_state(&deployed.container_id), "exited");
    assert_eq!(
        agent.containers(&app),
        vec![deployed.container_id.clone()],
        "the container is kept, stopped"
    );
    agent
        .until_metric("berth_agent_sleeps_total", slept + 1.0)
        .await;
}

#[tokio::test]
async fn the_first_request_of_a_sleeping_app_gets_the_apps_own_answer() {
    let agent = spawn_agent().await;
    let app = app_id("wake");
    agent
        .deploy_asleep(&sleepy(&app, json!({"MSG": "good morning"}), json!({})))
        .await;

    assert_eq!(
        agent.via_path(&app, "/").await,
        (200, "good morning\n".into())
    );
    let status = agent.status(&app).await;
    assert_eq!(status.state, AppState::Running);
    assert_eq!(status.error, None);
    assert_eq!(agent.metric(WAKES_OK).await, 1.0);
    assert!(
        agent
            .metric("berth_agent_wake_seconds_count")
            .await
            .eq(&1.0),
        "the wake is timed"
    );
    // Awake again, it sleeps again after its idle time.
    agent
        .until_state(&app, AppState::Sleeping, Duration::from_secs(15))
        .await;
}

#[tokio::test]
async fn fifty_concurrent_first_requests_start_the_app_once() {
    let agent = spawn_agent().await;
    let app = app_id("herd");
    agent
        .deploy_asleep(&sleepy(&app, json!({"MSG": "one"}), json!({})))
        .await;

    let url = agent.gateway_url(&format!("/apps/{app}/"));
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let (client, url) = (agent.client.clone(), url.clone());
            tokio::spawn(async move {
                let response = client.get(&url).send().await.unwrap();
                (response.status().as_u16(), response.text().await.unwrap())
            })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), (200, "one\n".into()));
    }
    assert_eq!(
        agent.metric(WAKES_OK).await,
        1.0,
        "one wake for 50 requests"
    );
    assert_eq!(
        agent
            .metric("berth_agent_wakes_total{outcome=\"failed\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_sleeping_app_that_no_longer_starts_answers_503_saying_why() {
    let agent = spawn_agent().await;
    let app = app_id("broken");
    let deployed = agent
        .deploy_asleep(&sleepy(&app, json!({}), json!({})))
        .await;
    // Its entry point now fails at once, as a broken image would.
    let script = std::env::temp_dir().join(format!("berth-broken-{app}.sh"));
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'fatal: the database is gone'\nexit 3\n",
    )
    .unwrap();
    let copied = Command::new(DOCKER)
        .arg("cp")
        .arg(&script)
        .arg(format!("{}:/app/start.sh", deployed.container_id))
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );

    let started = Instant::now();
    let response = agent
        .client
        .get(agent.gateway_url(&format!("/apps/{app}/")))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let body = response.text().await.unwrap();
    assert!(body.contains("could not wake"), "{body}");
    assert!(body.contains("exited during start-up"), "{body}");
    assert!(body.contains("fatal: the database is gone"), "{body}");
    assert!(
        waited < Duration::from_secs(30),
        "answered within the wake timeout ({waited:?})"
    );

    let status = agent.status(&app).await;
    assert_eq!(status.state, AppState::Sleeping, "it stays asleep");
    let error = status.error.expect("the status shows why");
    assert!(error.contains("fatal: the database is gone"), "{error}");
    assert_eq!(
        agent
            .metric("berth_agent_wakes_total{outcome=\"failed\"}")
            .await,
        1.0
    );
    let _ = std::fs::remove_file(script);
}

#[tokio::test]
async fn a_sleeping_app_stays_asleep_and_routed_across_an_agent_restart() {
    let agent = spawn_agent().await;
    let app = app_id("restart");
    let deployed = agent
        .deploy_asleep(&sleepy(&app, json!({"MSG": "still me"}), json!({})))
        .await;

    let options = agent.kill().await;
    let agent = spawn_agent_with(options).await;
    assert_eq!(agent.status(&app).await.state, AppState::Sleeping);
    assert_eq!(docker_state(&deployed.container_id), "exited");
    assert_eq!(agent.via_path(&app, "/").await, (200, "still me\n".into()));
    assert_eq!(
        agent.status(&app).await.container_id,
        Some(deployed.container_id)
    );
}

#[tokio::test]
async fn a_sleeping_app_can_be_redeployed_and_stopped() {
    let agent = spawn_agent().await;
    let app = app_id("redeploy");
    let first = agent
        .deploy_asleep(&sleepy(&app, json!({"MSG": "v1"}), json!({})))
        .await;

    let second = agent
        .deploy_ok(&deploy_body(&app, json!({"MSG": "v2"})))
        .await;
    assert_ne!(first.container_id, second.container_id);
    assert_eq!(agent.containers(&app), vec![second.container_id.clone()]);
    assert_eq!(agent.via_path(&app, "/").await, (200, "v2\n".into()));
    // Deployed without sleepAfterSecs, it now stays awake.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(agent.status(&app).await.state, AppState::Running);

    let third = agent
        .deploy_asleep(&sleepy(&app, json!({"MSG": "v3"}), json!({})))
        .await;
    assert_eq!(agent.stop(&app).await.status(), 200);
    assert!(agent.containers(&app).is_empty(), "{third:?} is gone");
    assert_eq!(agent.status(&app).await.state, AppState::Missing);
    assert_eq!(agent.via_path(&app, "/").await.0, 404);
}

#[tokio::test]
async fn in_pause_mode_the_container_is_paused_and_thawed() {
    let agent = spawn_agent().await;
    let app = app_id("pause");
    let deployed = agent
        .deploy_asleep(&sleepy(
            &app,
            json!({"MSG": "thawed"}),
            json!({"sleepMode": "pause"}),
        ))
        .await;
    assert_eq!(docker_state(&deployed.container_id), "paused");
    assert_eq!(agent.via_path(&app, "/").await, (200, "thawed\n".into()));
    assert_eq!(docker_state(&deployed.container_id), "running");
    assert_eq!(agent.metric(WAKES_OK).await, 1.0);
}

#[tokio::test]
async fn a_browser_gets_the_waiting_page_when_the_app_asks_for_it() {
    let agent = spawn_agent().await;
    let app = app_id("page");
    agent
        .deploy_asleep(&sleepy(
            &app,
            json!({"MSG": "page", "START_DELAY": "1"}),
            json!({"sleepWaitingPage": true}),
        ))
        .await;

    let url = agent.gateway_url(&format!("/apps/{app}/"));
    let page = agent
        .client
        .get(&url)
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 503);
    assert_eq!(page.headers()["retry-after"], "1");
    let html = page.text().await.unwrap();
    assert!(html.contains("http-equiv=\"refresh\""), "{html}");
    assert!(html.contains("is waking up"), "{html}");
    // The page started the wake; a client that does not ask for HTML is held until it is done.
    let (status, body) = agent.via_path(&app, "/").await;
    assert_eq!((status, body.as_str()), (200, "page\n"));
    assert_eq!(agent.metric(WAKES_OK).await, 1.0);
}

#[tokio::test]
async fn bad_sleep_fields_are_refused() {
    let agent = spawn_agent().await;
    let app = app_id("badsleep");
    let mut zero = deploy_body(&app, json!({}));
    zero["sleepAfterSecs"] = json!(0);
    let detail = problem(agent.deploy(&zero).await, 400).await;
    assert!(detail.contains("sleepAfterSecs"), "{detail}");
    let mut alone = deploy_body(&app, json!({}));
    alone["sleepMode"] = json!("pause");
    let detail = problem(agent.deploy(&alone).await, 400).await;
    assert!(detail.contains("need sleepAfterSecs"), "{detail}");
    let mut unknown = deploy_body(&app, json!({}));
    unknown["sleepAfterSecs"] = json!(5);
    unknown["sleepMode"] = json!("hibernate");
    let detail = problem(agent.deploy(&unknown).await, 400).await;
    assert!(detail.contains("hibernate"), "{detail}");
    assert!(agent.containers(&app).is_empty());
}
