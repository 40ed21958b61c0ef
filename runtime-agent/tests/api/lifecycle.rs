//! Redeploys without downtime, restarts of the agent, stops (with and without the volumes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_redeploy_under_load_fails_no_request() {
    let agent = spawn_agent().await;
    let app = app_id("zero");
    let first = agent
        .deploy_ok(&deploy_body(&app, json!({"MSG": "v1"})))
        .await;

    // Four clients hammer the gateway without pause during the whole redeploy.
    let stop = Arc::new(AtomicBool::new(false));
    let url = agent.gateway_url(&format!("/apps/{app}/"));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, url, client) = (stop.clone(), url.clone(), agent.client.clone());
        clients.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut v2) = (0u32, Vec::new(), 0u32);
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        ok += 1;
                        if r.text().await.unwrap_or_default() == "v2\n" {
                            v2 += 1;
                        }
                    }
                    Ok(r) => failed.push(format!(
                        "{}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed, v2)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = agent
        .deploy_ok(&deploy_body(&app, json!({"MSG": "v2"})))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let (mut ok, mut failed, mut v2) = (0, Vec::new(), 0);
    for c in clients {
        let (o, f, v) = c.await.unwrap();
        ok += o;
        failed.extend(f);
        v2 += v;
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 50, "the clients did send requests ({ok})");
    assert!(v2 > 0, "the new version answered");
    assert_ne!(first.container_id, second.container_id);
    assert_eq!(
        agent.containers(&app),
        vec![second.container_id.clone()],
        "the old container is gone"
    );
    assert_eq!(agent.via_path(&app, "/").await, (200, "v2\n".into()));
}

#[tokio::test]
async fn a_restarted_agent_routes_its_apps_again_and_removes_leftovers() {
    let agent = spawn_agent().await;
    let app = app_id("adopt");
    let deployed = agent
        .deploy_ok(&deploy_body(&app, json!({"MSG": "still here"})))
        .await;
    let options = agent.kill().await;

    // A half-made container of an interrupted deploy: created, labelled, never routed.
    let out = std::process::Command::new(DOCKER)
        .args([
            "create",
            "--label",
            &format!("berth.node={}", options.node_id),
            "--label",
            &format!("berth.app={app}"),
            "--label",
            "berth.job=interrupted",
            IMAGE,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let leftover = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let agent = spawn_agent_with(options).await;
    assert_eq!(
        agent.via_path(&app, "/").await,
        (200, "still here\n".into())
    );
    let containers = agent.containers(&app);
    assert_eq!(
        containers,
        vec![deployed.container_id.clone()],
        "the leftover {leftover} is removed"
    );
    assert_eq!(agent.status(&app).await.state.as_str(), "running");
}

#[tokio::test]
async fn stop_unroutes_and_removes_the_container_and_is_idempotent() {
    let agent = spawn_agent().await;
    let app = app_id("stop");
    agent.deploy_ok(&deploy_body(&app, json!({}))).await;
    let response = agent.stop(&app).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["removed"], 1);
    assert_eq!(body["state"], "missing");

    let (status, text) = agent.via_path(&app, "/").await;
    assert_eq!(status, 404);
    assert!(text.contains("unknown app"), "{text}");
    assert!(agent.containers(&app).is_empty());
    assert_eq!(agent.status(&app).await.state.as_str(), "missing");

    let again = agent.stop(&app).await;
    assert_eq!(again.status(), 200);
    let body: serde_json::Value = again.json().await.unwrap();
    assert_eq!(body["removed"], 0);
}

#[tokio::test]
async fn a_stop_keeps_the_volumes_and_a_stop_with_remove_volumes_deletes_them() {
    let agent = spawn_agent().await;
    let app = app_id("vols");
    let neighbour = app_id("vols-keep");
    let mut body = deploy_body(&app, json!({}));
    body["volumes"] = json!([
        {"name": "data", "mountPath": "/data"},
        {"name": "cache", "mountPath": "/cache"}
    ]);
    let first = agent.deploy_ok(&body).await;
    assert!(exec(&first.container_id, "echo kept > /data/file").0);
    let mut other = deploy_body(&neighbour, json!({}));
    other["volumes"] = json!([{"name": "data", "mountPath": "/data"}]);
    agent.deploy_ok(&other).await;
    let expected = vec![format!("berth-{app}_cache"), format!("berth-{app}_data")];
    assert_eq!(volumes_of(&app), expected);

    // A plain stop keeps them, data and all, for the next deploy.
    let response = agent.stop(&app).await;
    assert_eq!(response.status(), 200);
    let stopped: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        (
            stopped["removed"].clone(),
            stopped["volumesRemoved"].clone()
        ),
        (json!(1), json!(0))
    );
    assert_eq!(volumes_of(&app), expected);
    body["jobId"] = json!(uuid::Uuid::new_v4().to_string());
    let second = agent.deploy_ok(&body).await;
    assert_eq!(
        exec(&second.container_id, "cat /data/file"),
        (true, "kept\n".into())
    );

    // A container Berth did not make for the app holds one: refused, naming it, nothing forced.
    let squatter = docker_ok(
        None,
        &["create", "-v", &format!("berth-{app}_data:/d"), IMAGE],
    );
    let detail = problem(agent.stop_with(&app, "removeVolumes=true").await, 409).await;
    assert!(detail.contains(&format!("berth-{app}_data")), "{detail}");
    assert_eq!(
        volumes_of(&app),
        vec![format!("berth-{app}_data")],
        "the free one went"
    );
    docker_ok(None, &["rm", "-f", &squatter]);

    // Asked again, the rest goes; the neighbour keeps its own; a third time is a no-op.
    let response = agent.stop_with(&app, "removeVolumes=true").await;
    assert_eq!(response.status(), 200);
    let deleted: serde_json::Value = response.json().await.unwrap();
    assert_eq!(deleted["volumesRemoved"], 1, "{deleted}");
    assert!(volumes_of(&app).is_empty());
    assert!(agent.containers(&app).is_empty());
    assert_eq!(
        volumes_of(&neighbour),
        vec![format!("berth-{neighbour}_data")]
    );
    let again: serde_json::Value = agent
        .stop_with(&app, "removeVolumes=true")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (again["removed"].clone(), again["volumesRemoved"].clone()),
        (json!(0), json!(0))
    );
    problem(agent.stop_with(&app, "removeVolumes=maybe").await, 400).await;
    let doc: serde_json::Value = agent
        .client
        .get(agent.agent_url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let params = &doc["paths"]["/agent/apps/{appId}/stop"]["post"]["parameters"];
    assert!(
        params
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "removeVolumes" && p["in"] == "query"),
        "the document names the field: {params}"
    );

    let response = agent.stop_with(&neighbour, "removeVolumes=true").await;
    assert_eq!(response.status(), 200);
    assert!(volumes_of(&neighbour).is_empty());
}

#[tokio::test]
async fn a_container_that_dies_is_reported_and_answered_503() {
    let agent = spawn_agent().await;
    let app = app_id("dies");
    let deployed = agent.deploy_ok(&deploy_body(&app, json!({}))).await;
    // `docker stop` marks it stopped by hand, so the restart policy leaves it down.
    let out = std::process::Command::new(DOCKER)
        .args(["stop", "-t", "0", &deployed.container_id])
        .output()
        .unwrap();
    assert!(out.status.success());
    // The agent notices within a sync interval (0.5 s in tests).
    let mut last = (0, String::new());
    for _ in 0..40 {
        last = agent.via_path(&app, "/").await;
        if last.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 503, "{last:?}");
    assert!(last.1.contains("is down"), "{}", last.1);
    assert_eq!(agent.status(&app).await.state.as_str(), "exited");
}

#[tokio::test]
async fn a_deploy_whose_route_cannot_be_saved_fails_and_leaves_the_old_version_serving() {
    let agent = spawn_agent().await;
    let app = app_id("unsaved");
    let first = agent
        .deploy_ok(&deploy_body(&app, json!({"MSG": "v1"})))
        .await;

    // The route file cannot be written: the new container must not take over, nor stay behind.
    std::fs::remove_dir_all(&agent.options.state_dir).unwrap();
    let response = agent.deploy(&deploy_body(&app, json!({"MSG": "v2"}))).await;
    assert_eq!(response.status(), 500);
    assert_eq!(agent.via_path(&app, "/").await, (200, "v1\n".into()));
    assert_eq!(agent.containers(&app), vec![first.container_id.clone()]);

    // Once the folder is back, the next deploy replaces the old container as usual.
    std::fs::create_dir_all(&agent.options.state_dir).unwrap();
    let second = agent
        .deploy_ok(&deploy_body(&app, json!({"MSG": "v2"})))
        .await;
    assert_eq!(agent.containers(&app), vec![second.container_id.clone()]);
    assert_eq!(agent.via_path(&app, "/").await, (200, "v2\n".into()));
}
