//! Deployment status for portals: long poll, ETag/304, events, logs — and many watchers of one
//! deployment costing the control plane one connection.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::spawn_api;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_watchers_share_one_upstream_follow() {
    let app = spawn_api().await;
    let t = app.tenant("acme").await;
    app.put_app(&t, "web", json!({ "image": "127.0.0.1:5000/demo:v1" }))
        .await;
    let d: Value = app.deploy(&t, "web").await.json().await.unwrap();
    let id = d["deploymentId"].as_str().unwrap().to_owned();
    let version = d["version"].as_i64().unwrap();

    // ETag and 304.
    let res = app
        .as_tenant(&t, Method::GET, &format!("/v1/deployments/{id}"))
        .send()
        .await
        .unwrap();
    let tag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(tag, format!("W/\"{version}\""));
    let res = app
        .as_tenant(&t, Method::GET, &format!("/v1/deployments/{id}"))
        .header("If-None-Match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);

    let events = app
        .as_tenant(&t, Method::GET, &format!("/v1/deployments/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let mut watchers = Vec::new();
    for _ in 0..200 {
        let req = app.as_tenant(
            &t,
            Method::GET,
            &format!("/v1/deployments/{id}?wait=30&version={version}"),
        );
        watchers.push(tokio::spawn(async move {
            req.send().await.unwrap().json::<Value>().await.unwrap()
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.api.metrics.watchers.get() < 201 {
        assert!(
            std::time::Instant::now() < deadline,
            "watchers never all waited: {}",
            app.api.metrics.watchers.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.api.followers.following(),
        1,
        "one upstream long poll for every watcher"
    );
    assert_eq!(app.api.metrics.upstream_follows.get(), 1);

    app.finish_next_job().await;
    for w in watchers {
        let seen = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(
            seen["version"].as_i64().unwrap(),
            version,
            "every watcher saw the change"
        );
    }
    let body = tokio::time::timeout(Duration::from_secs(15), events.text())
        .await
        .expect("the stream ends after the final state")
        .unwrap();
    assert!(body.contains("event: deployment"));
    assert!(body.contains("\"state\":\"SUCCEEDED\""), "{body}");
    let final_state = app.wait_state(&t, &id, "SUCCEEDED").await;
    // The follower ends with the job.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.api.followers.following() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the follower outlived its job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A final deployment answers at once, even with a wait.
    let started = std::time::Instant::now();
    let (_, again) = app
        .get(
            &t,
            &format!(
                "/v1/deployments/{id}?wait=20&version={}",
                final_state["version"]
            ),
        )
        .await;
    assert_eq!(again["state"], "SUCCEEDED");
    assert!(started.elapsed() < Duration::from_secs(10));
    let logs = app
        .as_tenant(&t, Method::GET, &format!("/v1/deployments/{id}/logs"))
        .send()
        .await
        .unwrap();
    assert_eq!(logs.status(), 200);
    assert!(logs.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_identical_instance_calls_make_one_instance() {
    let app = spawn_api().await;
    let t = app.tenant("acme").await;
    let res = app
        .as_tenant(&t, Method::PUT, "/v1/templates/blog")
        .json(&json!({ "image": "127.0.0.1:5000/blog:v1", "env": { "THEME": "dark", "LANG": "en" }, "secretEnv": { "DB_PASSWORD": "tpl-secret" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let (_, tpl) = app.get(&t, "/v1/templates/blog").await;
    assert_eq!(tpl["secretEnvNames"], json!(["DB_PASSWORD"]));
    assert!(!tpl.to_string().contains("tpl-secret"));

    let mut calls = Vec::new();
    for _ in 0..10 {
        let req = app
            .as_tenant(&t, Method::POST, "/v1/instances")
            .json(&json!({ "template": "blog", "slug": "alice", "env": { "LANG": "zh" } }));
        calls.push(tokio::spawn(async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }));
    }
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.unwrap());
    }
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 201).count(),
        1,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 200).count(),
        9,
        "{answers:?}"
    );
    let first = &answers[0].1;
    assert!(answers
        .iter()
        .all(|(_, a)| a["deploymentId"] == first["deploymentId"]));
    assert_eq!(first["url"], "http://alice.localhost:8088/");
    assert_eq!(first["appId"], "alice");
    assert_eq!(
        app.api
            .store
            .deployments("acme", "alice", None, 50)
            .await
            .unwrap()
            .len(),
        1
    );
    let jobs: Value = app
        .control
        .deploy(Method::GET, "/deploy/jobs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        jobs["items"].as_array().unwrap().len(),
        1,
        "one job upstream"
    );
    assert_eq!(
        jobs["items"][0]["payload"]["env"],
        json!({ "THEME": "dark", "LANG": "zh" })
    );

    let (status, resolved) = app.get(&t, "/v1/instances/alice").await;
    assert_eq!(status, 200);
    assert_eq!(resolved["deploymentId"], first["deploymentId"]);
    assert_eq!(resolved["state"], "DEPLOYING");
    let (status, _) = app.get(&t, "/v1/instances/bob").await;
    assert_eq!(status, 404);
    app.stop().await;
}
