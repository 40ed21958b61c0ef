//! Every secured operation of the control plane's `/openapi.json`, tried as an attacker
//! would: with no credential, with every other role's real credential, and with its own
//! header holding a wrong value. Each must answer `401` problem+json. The list of operations
//! comes from the document itself, so a route added without its guard, or guarded by the
//! wrong role, fails here; the right credential must get past the guard (not `401`), so a
//! guard that refuses everything fails too.

mod common;

use std::collections::BTreeMap;

use common::app::spawn_app;
use common::db::DbKind;
use reqwest::Method;
use serde_json::Value;

/// A value each path placeholder accepts, so the request reaches the role check and then
/// the handler.
fn fill(path: &str) -> String {
    path.replace("{jobId}", "0192d6a4-0000-7000-8000-000000000000")
        .replace("{appId}", "demo")
        .replace("{nodeId}", "node-never-joined")
}

#[tokio::test]
async fn every_secured_operation_refuses_every_other_credential() {
    let app = spawn_app(DbKind::Sqlite).await;
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let s = &app.secrets;
    let node = app.credential("node-1").await;
    let values: BTreeMap<&str, &str> = [
        ("X-DEPLOY-SECRET", s.deploy.expose()),
        ("X-Runner-Token", s.runner.expose()),
        ("X-RT-Node-Token", node.as_str()),
        ("X-RT-Join-Token", s.node_join.expose()),
        ("X-Admin-Token", s.admin.expose()),
    ]
    .into();
    // Scheme name → header name, as the document declares them.
    let schemes: BTreeMap<String, String> = doc["components"]["securitySchemes"]
        .as_object()
        .expect("the document declares its security schemes")
        .iter()
        .map(|(name, scheme)| (name.clone(), scheme["name"].as_str().unwrap().to_owned()))
        .collect();
    assert!(
        schemes.len() == values.len() && schemes.values().all(|h| values.contains_key(h.as_str())),
        "one scheme per role: {schemes:?}"
    );
    let mut tried = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let Some(scheme) = op["security"][0].as_object().and_then(|o| o.keys().next()) else {
                continue; // Open by design: health, metrics, the document, the page.
            };
            let own = schemes[scheme].as_str();
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let url = app.url(&fill(path));
            let send = |header: Option<(&str, &str)>| {
                let mut req = app
                    .client
                    .request(method.clone(), &url)
                    .header("content-type", "application/json")
                    .body("{}");
                if let Some((name, value)) = header {
                    req = req.header(name, value);
                }
                req.send()
            };
            let mut attempts: Vec<(String, Option<(&str, &str)>)> = vec![("none".into(), None)];
            for (&name, &value) in values.iter().filter(|(n, _)| **n != own) {
                attempts.push((format!("{name} (another role's)"), Some((name, value))));
            }
            attempts.push((
                format!("{own} with a wrong value"),
                Some((own, "a-wrong-but-long-enough-token")),
            ));
            for (what, header) in attempts {
                let res = send(header).await.unwrap();
                assert_eq!(
                    res.status(),
                    401,
                    "{method} {path} with {what}: {}",
                    res.text().await.unwrap_or_default()
                );
                let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
                assert_eq!(content_type, "application/problem+json", "{method} {path}");
            }
            // The right credential gets past the guard (a stream's answer is only looked at,
            // not read to its end).
            let res = send(Some((own, values[own]))).await.unwrap();
            assert_ne!(
                res.status(),
                401,
                "{method} {path}: its own role is refused"
            );
            tried += 1;
        }
    }
    assert!(
        tried >= 20,
        "only {tried} secured operations in the document"
    );
    app.stop().await;
}
