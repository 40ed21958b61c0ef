//! Every secured operation of the agent's `/openapi.json`, tried as an attacker would: with no
//! grant, with the shared token of old, with every other role's secret where the grant goes,
//! and with grants that are real but wrong — another app's, another node's, another job's (for a
//! deploy), one that ran out, one another control plane signed. Each must be refused (`401`
//! without a grant, `403` with one) as problem+json and change nothing; the right grant must
//! get past the check. The operations come from the document, so a route added without the
//! check fails here.

use std::time::Duration;

use berth_shared::grant::{Grant, GrantSigner};
use berth_shared::sealed::SealingKeys;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// A header to send (none for no credential at all).
type Header = Option<(&'static str, String)>;

#[tokio::test]
async fn every_secured_operation_refuses_every_grant_but_its_own() {
    let agent = spawn_agent().await;
    let doc: Value = agent
        .client
        .get(agent.agent_url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (app, node) = (app_id("matrix"), agent.options.node_id.clone());
    let job = uuid::Uuid::new_v4();
    // A deploy body that gets past validation and fails fast afterwards (no such image).
    let body = json!({
        "jobId": job.to_string(), "appId": app, "image": "berth-test/missing:none",
        "containerPort": 8080,
    });
    let own = grant(&node, &app, job);
    let mut expired = Grant::new(job, &app, &node, Duration::from_secs(60));
    expired.expires_at -= 120_000;
    let stranger = GrantSigner::new(&SealingKeys::generate());
    let refused_grants: Vec<(&str, String)> = vec![
        ("the runner token", "runner-token-for-tests-0123".into()),
        ("the deploy secret", "deploy-secret-for-tests-0123".into()),
        ("the admin token", "admin-token-for-tests-0123".into()),
        (
            "a node credential",
            "0123456789abcdef0123456789abcdef".into(),
        ),
        ("another app's grant", grant(&node, "t-other-app", job)),
        ("another node's grant", grant("another-node", &app, job)),
        ("a grant that ran out", signer().sign(&expired)),
        (
            "another control plane's grant",
            stranger.sign(&Grant::new(job, &app, &node, Duration::from_secs(60))),
        ),
    ];
    let mut tried = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if op["security"][0].as_object().is_none() {
                continue; // Open by design: health, metrics, the document.
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let url = agent.agent_url(&path.replace("{appId}", &app));
            let send = |header: Header| {
                let mut req = agent.client.request(method.clone(), &url).json(&body);
                if let Some((name, value)) = header {
                    req = req.header(name, value);
                }
                req.send()
            };
            let mut attempts: Vec<(String, Header, u16)> = vec![
                ("no grant".into(), None, 401),
                (
                    "the shared token of old".into(),
                    Some(("x-runtime-token", "test-runtime-token".into())),
                    401,
                ),
            ];
            for (what, text) in &refused_grants {
                attempts.push((what.to_string(), Some((GRANT, text.clone())), 403));
            }
            if path.ends_with("/deploy") {
                let other_job = grant(&node, &app, uuid::Uuid::new_v4());
                attempts.push(("another job's grant".into(), Some((GRANT, other_job)), 403));
            }
            for (what, header, status) in attempts {
                let res = send(header).await.unwrap();
                let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
                assert_eq!(
                    res.status(),
                    status,
                    "{method} {path} with {what}: {}",
                    res.text().await.unwrap_or_default()
                );
                assert_eq!(content_type, "application/problem+json", "{method} {path}");
            }
            assert!(
                agent.containers(&app).is_empty(),
                "{method} {path}: a refused call started something"
            );
            let res = send(Some((GRANT, own.clone()))).await.unwrap();
            assert!(
                ![401, 403].contains(&res.status().as_u16()),
                "{method} {path}: its own grant is refused: {}",
                res.text().await.unwrap_or_default()
            );
            tried += 1;
        }
    }
    assert_eq!(tried, 4, "deploy, stop, status and logs are secured");
}
