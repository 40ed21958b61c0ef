//! Deploys: routed by path and host, locked down, idempotent; failures leave nothing behind.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn deploy_is_served_by_path_and_by_host_from_a_locked_down_container() {
    let agent = spawn_agent().await;
    let app = app_id("basic");
    let deployed = agent
        .deploy_ok(&deploy_body(&app, json!({"MSG": "hello from v1"})))
        .await;
    assert_eq!(deployed.app_id, app);
    assert!(
        deployed.url.ends_with(&format!("/apps/{app}/")),
        "{}",
        deployed.url
    );

    // By path, with and without the trailing slash.
    assert_eq!(
        agent.via_path(&app, "/").await,
        (200, "hello from v1\n".into())
    );
    assert_eq!(
        agent.via_path(&app, "").await,
        (200, "hello from v1\n".into())
    );
    // By host.
    let response = agent
        .client
        .get(agent.gateway_url("/"))
        .header("host", format!("{app}.localhost:8088"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "hello from v1\n");

    // The app sees the stripped path and the forwarding headers.
    let (status, seen) = agent.via_path(&app, "/cgi-bin/headers?x=1").await;
    assert_eq!(status, 200, "{seen}");
    assert!(seen.contains("uri=/cgi-bin/headers?x=1"), "{seen}");
    assert!(seen.contains("xff=127.0.0.1"), "{seen}");
    assert!(seen.contains("xfproto=http"), "{seen}");
    assert!(
        seen.contains(&format!("xfhost={}", agent.gateway)),
        "{seen}"
    );
    assert!(seen.contains(&format!("xfprefix=/apps/{app}")), "{seen}");

    // Bodies pass through.
    let body = "x".repeat(100_000);
    let echoed = agent
        .client
        .post(agent.gateway_url(&format!("/apps/{app}/cgi-bin/echo")))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.status(), 200);
    assert_eq!(echoed.text().await.unwrap(), body);

    // The container: labelled, published on loopback only, without privileges.
    let c = inspect(&deployed.container_id);
    assert_eq!(c["Config"]["Labels"]["berth.app"], app.as_str());
    assert_eq!(
        c["Config"]["Labels"]["berth.node"],
        agent.options.node_id.as_str()
    );
    assert!(c["Config"]["Labels"]["berth.job"].is_string());
    let bindings = c["HostConfig"]["PortBindings"]["8080/tcp"]
        .as_array()
        .unwrap();
    assert!(
        bindings.iter().all(|b| b["HostIp"] == "127.0.0.1"),
        "{bindings:?}"
    );
    let published = c["NetworkSettings"]["Ports"]["8080/tcp"]
        .as_array()
        .unwrap();
    assert!(!published.is_empty());
    assert!(
        published.iter().all(|b| b["HostIp"] == "127.0.0.1"),
        "{published:?}"
    );
    assert_eq!(c["HostConfig"]["Privileged"], false);
    assert_eq!(c["HostConfig"]["CapDrop"], json!(["ALL"]));
    assert!(c["HostConfig"]["SecurityOpt"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o.as_str().unwrap().starts_with("no-new-privileges")));
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");

    // Status and logs.
    let status = agent.status(&app).await;
    assert_eq!(status.state.as_str(), "running");
    assert_eq!(
        status.container_id.as_deref(),
        Some(deployed.container_id.as_str())
    );
    assert_eq!(status.host_port, Some(deployed.host_port));
    assert_eq!(status.health, berth_shared::wire::agent::Health::Healthy);
    let logs = agent
        .client
        .get(agent.agent_url(&format!("/agent/apps/{app}/logs?tail=5")))
        .header(GRANT, agent.grant(&app))
        .send()
        .await
        .unwrap();
    assert_eq!(logs.status(), 200);
    assert!(logs
        .text()
        .await
        .unwrap()
        .contains("test app starting: hello from v1"));
}

#[tokio::test]
async fn limits_volumes_and_health_check_are_applied() {
    let agent = spawn_agent().await;
    let app = app_id("limits");
    let mut body = deploy_body(&app, json!({}));
    body["resources"] = json!({"memoryMb": 64, "cpus": 0.5});
    body["volumes"] = json!([{"name": "data", "mountPath": "/data"}]);
    body["healthCheckPath"] = json!("/health");
    let deployed = agent.deploy_ok(&body).await;
    let c = inspect(&deployed.container_id);
    assert_eq!(c["HostConfig"]["Memory"], 64 * 1024 * 1024);
    assert_eq!(c["HostConfig"]["NanoCpus"], 500_000_000);
    let mounts = c["Mounts"].as_array().unwrap();
    assert!(mounts
        .iter()
        .any(|m| m["Name"] == format!("berth-{app}_data") && m["Destination"] == "/data"));
    agent.stop(&app).await;
    let _ = std::process::Command::new(DOCKER)
        .args(["volume", "rm", &format!("berth-{app}_data")])
        .output();
}

#[tokio::test]
async fn a_repeated_job_is_answered_without_a_second_container() {
    let agent = spawn_agent().await;
    let app = app_id("idem");
    let body = deploy_body(&app, json!({}));
    let first = agent.deploy_ok(&body).await;
    let second = agent.deploy_ok(&body).await;
    assert_eq!(first, second);
    assert_eq!(agent.containers(&app).len(), 1);
}

#[tokio::test]
async fn an_app_that_crashes_at_start_fails_with_its_log_lines_and_leaves_nothing() {
    let agent = spawn_agent().await;
    let app = app_id("crash");
    let response = agent
        .deploy(&deploy_body(
            &app,
            json!({"CRASH": "DATABASE_URL is not set"}),
        ))
        .await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = response.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("exited during start-up"), "{detail}");
    assert!(
        detail.contains("fatal: DATABASE_URL is not set"),
        "{detail}"
    );
    assert!(
        detail.contains("test app giving up"),
        "stderr too: {detail}"
    );
    assert!(agent.containers(&app).is_empty(), "nothing is left");
    assert_eq!(agent.via_path(&app, "/").await.0, 404);
}

#[tokio::test]
async fn an_app_that_never_becomes_ready_fails_after_the_timeout_and_leaves_nothing() {
    let mut options = Options::fresh();
    options.ready_timeout_secs = 3.0;
    let agent = spawn_agent_with(options).await;

    // Listens, but its health check never answers 2xx.
    let app = app_id("unhealthy");
    let mut body = deploy_body(&app, json!({}));
    body["healthCheckPath"] = json!("/not-there");
    let started = std::time::Instant::now();
    let response = agent.deploy(&body).await;
    assert_eq!(response.status(), 422);
    let problem: serde_json::Value = response.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("did not become ready within 3s"),
        "{detail}"
    );
    assert!(detail.contains("404"), "says what it saw: {detail}");
    assert!(started.elapsed().as_secs_f64() >= 3.0);
    assert!(agent.containers(&app).is_empty());

    // Runs but never listens: a TCP connect through Docker's proxy is not enough.
    let app = app_id("silent");
    let response = agent
        .deploy(&deploy_body(&app, json!({"NEVER_LISTEN": "1"})))
        .await;
    assert_eq!(response.status(), 422);
    let problem: serde_json::Value = response.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("did not become ready"), "{detail}");
    assert!(
        detail.contains("test app starting"),
        "quotes its logs: {detail}"
    );
    assert!(agent.containers(&app).is_empty());
}

#[tokio::test]
async fn an_image_that_is_not_on_the_node_and_cannot_be_pulled_fails_clearly() {
    let agent = spawn_agent().await;
    let app = app_id("noimage");
    let mut body = deploy_body(&app, json!({}));
    body["image"] = json!("127.0.0.1:1/berth/none:v1");
    let response = agent.deploy(&body).await;
    assert_eq!(response.status(), 422);
    let problem: serde_json::Value = response.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("could not be pulled"), "{detail}");
    assert!(agent.containers(&app).is_empty());
}

#[tokio::test]
async fn an_image_missing_on_the_node_is_pulled_from_its_registry() {
    let agent = spawn_agent().await;
    let registry = ensure_registry();
    let image = format!("{registry}/berth-test/pulled:{}", app_id("tag"));
    for args in [
        ["tag", IMAGE, image.as_str()].as_slice(),
        &["push", image.as_str()],
        &["rmi", image.as_str()],
    ] {
        docker_ok(None, args);
    }
    let app = app_id("pull");
    let mut body = deploy_body(&app, json!({"MSG": "pulled"}));
    body["image"] = json!(image);
    body["registryAuth"] = json!({"username": "berth", "password": "not-checked-here"});
    agent.deploy_ok(&body).await;
    assert_eq!(agent.via_path(&app, "/").await, (200, "pulled\n".into()));
    agent.stop(&app).await;
    let _ = std::process::Command::new(DOCKER)
        .args(["rmi", &image])
        .output();
}

/// This node's containers of one app, straight from the engine's API (by the `berth.app` and
/// `berth.node` labels), with the job each came from.
async fn engine_containers(agent: &TestAgent, app: &str) -> Vec<(String, String)> {
    let docker = bollard::Docker::connect_with_unix_defaults().unwrap();
    let options = bollard::query_parameters::ListContainersOptions {
        all: true,
        filters: Some(std::collections::HashMap::from([(
            "label".to_owned(),
            vec![
                format!("berth.app={app}"),
                format!("berth.node={}", agent.options.node_id),
            ],
        )])),
        ..Default::default()
    };
    docker
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .map(|c| {
            let job = c
                .labels
                .and_then(|l| l.get("berth.job").cloned())
                .unwrap_or_default();
            (c.id.unwrap(), job)
        })
        .collect()
}

/// Waits until the app has `n` containers on the node and returns them.
async fn until_containers(agent: &TestAgent, app: &str, n: usize) -> Vec<(String, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let found = engine_containers(agent, app).await;
        if found.len() == n || std::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_deploy_whose_caller_went_away_keeps_going_and_its_retry_joins_it() {
    let agent = spawn_agent().await;
    let app = app_id("dropped");
    let body = deploy_body(&app, json!({"START_DELAY": "4"}));
    let job = body["jobId"].as_str().unwrap().to_owned();

    // The caller goes away while the app is still starting (like a runner killed mid-deploy).
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_millis(1500))
        .build()
        .unwrap();
    let dropped = impatient
        .post(agent.agent_url("/agent/apps/deploy"))
        .header(GRANT, agent.grant_for(&body))
        .json(&body)
        .send()
        .await;
    assert!(
        dropped.as_ref().is_err_and(|e| e.is_timeout()),
        "the first call should have timed out mid-deploy: {dropped:?}"
    );
    let started = until_containers(&agent, &app, 1).await;
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0].1, job);

    // The retry joins the deploy under way: same container, no second one.
    let retried = agent.deploy_ok(&body).await;
    assert_eq!(retried.container_id, started[0].0);
    assert_eq!(engine_containers(&agent, &app).await, started);
    assert_eq!(agent.via_path(&app, "/").await, (200, "hello\n".into()));

    // Once finished, the same job still answers with the same container.
    let again = agent.deploy_ok(&body).await;
    assert_eq!(again, retried);
    assert_eq!(engine_containers(&agent, &app).await, started);
}

#[tokio::test]
async fn a_dropped_deploy_finishes_before_the_next_job_of_the_app_starts() {
    let agent = spawn_agent().await;
    let app = app_id("serial");
    let first = deploy_body(&app, json!({"START_DELAY": "3", "MSG": "one"}));
    let second = deploy_body(&app, json!({"MSG": "two"}));

    // The first job's caller gives up at once; its deploy carries on in the agent.
    let dropped =
        tokio::time::timeout(std::time::Duration::from_millis(800), agent.deploy(&first)).await;
    assert!(dropped.is_err(), "the first deploy cannot be ready yet");
    let started = until_containers(&agent, &app, 1).await;
    assert_eq!(started.len(), 1, "{started:?}");

    // A second job of the same app waits for the first to finish, then replaces it.
    let before = std::time::Instant::now();
    let deployed = agent.deploy_ok(&second).await;
    assert!(
        before.elapsed() >= std::time::Duration::from_secs(1),
        "the second job should have waited for the first ({:?})",
        before.elapsed()
    );
    assert_ne!(deployed.container_id, started[0].0);
    let left = engine_containers(&agent, &app).await;
    assert_eq!(
        left,
        vec![(
            deployed.container_id.clone(),
            second["jobId"].as_str().unwrap().to_owned()
        )]
    );
    assert_eq!(agent.via_path(&app, "/").await, (200, "two\n".into()));
}

#[tokio::test]
async fn a_job_replaced_by_a_newer_one_is_refused_and_changes_nothing() {
    let agent = spawn_agent().await;
    let app = app_id("stale");
    let older = deploy_body(&app, json!({"MSG": "older"}));
    let newer = deploy_body(&app, json!({"MSG": "newer"}));
    agent.deploy_ok(&older).await;
    let deployed = agent.deploy_ok(&newer).await;
    let newer_job = newer["jobId"].as_str().unwrap().to_owned();

    // A late request for the older job (a stale runner's retry) must not bring it back.
    let detail = problem(agent.deploy(&older).await, 409).await;
    assert!(
        detail.contains(older["jobId"].as_str().unwrap()),
        "{detail}"
    );
    assert!(detail.contains(&newer_job), "names the newer job: {detail}");

    assert_eq!(
        engine_containers(&agent, &app).await,
        vec![(deployed.container_id.clone(), newer_job)]
    );
    assert_eq!(agent.via_path(&app, "/").await, (200, "newer\n".into()));
    assert_eq!(
        agent.status(&app).await.container_id.as_deref(),
        Some(deployed.container_id.as_str())
    );
    // The current job still answers with its result.
    assert_eq!(agent.deploy_ok(&newer).await, deployed);
    let metrics = agent.metrics().await;
    assert!(
        metrics.contains("berth_agent_deploys_total{outcome=\"stale\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_agent_deploys_total{outcome=\"failed\"} 0"),
        "a stale request is not a failed deploy: {metrics}"
    );
}

#[tokio::test]
async fn a_stale_job_waiting_behind_the_newer_deploy_is_refused_once_it_is_routed() {
    let agent = spawn_agent().await;
    let app = app_id("queued");
    let older = deploy_body(&app, json!({"MSG": "older"}));
    let newer = deploy_body(&app, json!({"MSG": "newer", "START_DELAY": "2"}));
    agent.deploy_ok(&older).await;

    // The newer job is starting when the older one is asked for again.
    let newer_call = {
        let (client, url, body, grant) = (
            agent.client.clone(),
            agent.agent_url("/agent/apps/deploy"),
            newer.clone(),
            agent.grant_for(&newer),
        );
        tokio::spawn(async move {
            let response = client
                .post(url)
                .header(GRANT, grant)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response
                .json::<berth_shared::wire::agent::AgentDeployResponse>()
                .await
                .unwrap()
        })
    };
    let both = until_containers(&agent, &app, 2).await;
    assert_eq!(both.len(), 2, "{both:?}");
    problem(agent.deploy(&older).await, 409).await;
    let deployed = newer_call.await.unwrap();

    assert_eq!(
        engine_containers(&agent, &app).await,
        vec![(
            deployed.container_id.clone(),
            newer["jobId"].as_str().unwrap().to_owned()
        )]
    );
    assert_eq!(agent.via_path(&app, "/").await, (200, "newer\n".into()));
}
