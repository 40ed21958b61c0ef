//! Bad input gets a 4xx problem+json that says what is wrong; health and metrics are open.

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn wrong_or_missing_tokens_are_refused() {
    let agent = spawn_agent().await;
    let body = deploy_body(&app_id("tok"), json!({}));
    for token in [Some("wrong"), None] {
        let mut request = agent
            .client
            .post(agent.agent_url("/agent/apps/deploy"))
            .json(&body);
        if let Some(token) = token {
            request = request.header("x-runtime-token", token);
        }
        let detail = problem(request.send().await.unwrap(), 401).await;
        assert!(detail.contains("X-Runtime-Token"), "{detail}");
    }
    let response = agent
        .client
        .get(agent.agent_url("/agent/apps/x/status"))
        .send()
        .await
        .unwrap();
    problem(response, 401).await;
}

#[tokio::test]
async fn bad_app_ids_images_fields_and_sizes_are_refused() {
    let agent = spawn_agent().await;

    let mut body = deploy_body("Not_A_Label", json!({}));
    let detail = problem(agent.deploy(&body).await, 400).await;
    assert!(detail.contains("not a DNS label"), "{detail}");

    body["appId"] = json!(app_id("bad"));
    body["image"] = json!("UPPER/case::x");
    let detail = problem(agent.deploy(&body).await, 400).await;
    assert!(detail.contains("not a valid reference"), "{detail}");

    body["image"] = json!(IMAGE);
    body["surprise"] = json!(1);
    let detail = problem(agent.deploy(&body).await, 400).await;
    assert!(detail.contains("unknown field `surprise`"), "{detail}");

    let mut big = deploy_body(&app_id("big"), json!({}));
    big["env"] = json!({"BLOB": "x".repeat(1100 * 1024)});
    let detail = problem(agent.deploy(&big).await, 413).await;
    assert!(detail.contains("larger than"), "{detail}");

    let response = agent
        .client
        .post(agent.agent_url("/agent/apps/deploy"))
        .header("x-runtime-token", TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    problem(response, 400).await;

    let response = agent
        .client
        .post(agent.agent_url("/agent/apps/BAD!/stop"))
        .header("x-runtime-token", TOKEN)
        .send()
        .await
        .unwrap();
    let detail = problem(response, 400).await;
    assert!(detail.contains("DNS label"), "{detail}");
}

#[tokio::test]
async fn health_says_docker_answers_and_metrics_are_prometheus_text() {
    let agent = spawn_agent().await;
    let health: Value = agent
        .client
        .get(agent.agent_url("/internal/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["docker"], true);

    let app = app_id("metrics");
    agent.deploy_ok(&deploy_body(&app, json!({}))).await;
    agent.via_path(&app, "/").await;
    let text = agent.metrics().await;
    assert!(
        text.contains("berth_agent_deploys_total{outcome=\"succeeded\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("berth_gateway_responses_total{outcome=\"2xx\"} 1"),
        "{text}"
    );
    assert!(!text.contains(TOKEN));
}

#[tokio::test]
async fn schemathesis_finds_nothing() {
    let agent = spawn_agent().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/schemathesis.sh");
    let base = agent.agent_url("");
    let out = tokio::process::Command::new("bash")
        .arg(script)
        .arg(base.trim_end_matches('/'))
        .arg("-H")
        .arg(format!("X-Runtime-Token: {TOKEN}"))
        .output()
        .await
        .expect("running scripts/schemathesis.sh");
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
