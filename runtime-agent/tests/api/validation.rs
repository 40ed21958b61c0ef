//! Bad input gets a 4xx problem+json that says what is wrong; health and metrics are open.

use std::time::Duration;

use berth_shared::grant::{Grant, GrantSigner};
use berth_shared::sealed::SealingKeys;
use serde_json::{json, Value};

use crate::helpers::*;

/// Every way a runner (or whoever took a runner's traffic) could try to act without the
/// right grant: each is refused with nothing changed, and the right grant passes.
#[tokio::test]
async fn only_a_grant_for_this_app_on_this_node_opens_it() {
    let agent = spawn_agent().await;
    let app = app_id("grant");
    let node = agent.options.node_id.clone();
    let status = |grant: Option<String>, app: &str| {
        let mut request = agent
            .client
            .get(agent.agent_url(&format!("/agent/apps/{app}/status")));
        if let Some(grant) = grant {
            request = request.header(GRANT, grant);
        }
        request.send()
    };
    // No grant at all, or the shared token of old: 401.
    let detail = problem(status(None, &app).await.unwrap(), 401).await;
    assert!(detail.contains("X-Runtime-Grant"), "{detail}");
    let old_token = agent
        .client
        .get(agent.agent_url(&format!("/agent/apps/{app}/status")))
        .header("x-runtime-token", "test-runtime-token")
        .send()
        .await
        .unwrap();
    problem(old_token, 401).await;

    let job = uuid::Uuid::new_v4();
    let stranger = GrantSigner::new(&SealingKeys::generate());
    let mut expired = Grant::new(job, &app, &node, Duration::from_secs(60));
    expired.expires_at -= 61_000;
    let refused = [
        ("is not a grant", "v1.garbage.garbage".to_owned()),
        (
            "not signed by this node's control plane",
            stranger.sign(&Grant::new(job, &app, &node, Duration::from_secs(60))),
        ),
        ("for node other-node", grant("other-node", &app, job)),
        ("for app t-other", grant(&node, "t-other", job)),
        ("ran out", signer().sign(&expired)),
    ];
    for (what, text) in refused {
        let detail = problem(status(Some(text), &app).await.unwrap(), 403).await;
        assert!(detail.contains(what), "{what}: {detail}");
    }
    // A deploy needs the grant of its own job.
    let body = deploy_body(&app, json!({}));
    let other_job = agent
        .client
        .post(agent.agent_url("/agent/apps/deploy"))
        .header(GRANT, grant(&node, &app, uuid::Uuid::new_v4()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let detail = problem(other_job, 403).await;
    assert!(detail.contains("not the one in the request"), "{detail}");
    assert!(
        agent.containers(&app).is_empty(),
        "a refused deploy started nothing"
    );

    // A later attempt of the job fences the earlier one (a runner that lost its lease).
    let mut second = Grant::new(job, &app, &node, Duration::from_secs(60));
    second.attempt = 2;
    assert_eq!(
        status(Some(signer().sign(&second)), &app)
            .await
            .unwrap()
            .status(),
        200
    );
    let first = signer().sign(&Grant::new(job, &app, &node, Duration::from_secs(60)));
    let detail = problem(status(Some(first), &app).await.unwrap(), 403).await;
    assert!(detail.contains("superseded by attempt 2"), "{detail}");

    // The right grant passes.
    assert_eq!(
        status(Some(agent.grant(&app)), &app)
            .await
            .unwrap()
            .status(),
        200
    );
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
        .header(GRANT, agent.grant("any"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    problem(response, 400).await;

    let response = agent
        .client
        .post(agent.agent_url("/agent/apps/BAD!/stop"))
        .header(GRANT, agent.grant("any"))
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
        .arg(format!("X-Runtime-Grant: {}", agent.grant("schema")))
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
