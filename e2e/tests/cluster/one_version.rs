//! One version per app (SPEC §8): an agent killed while its apps are redeployed on the other
//! node comes back (same node id, same state folder), adopts its old containers, and removes them
//! at its first heartbeat: afterwards each app has exactly one container across both nodes, on
//! the node it runs on, and the returning node's gateway no longer routes it.

use std::time::{Duration, Instant};

use crate::harness::{containers_of, Cluster, NODE_TTL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_comes_back_removes_the_containers_of_apps_moved_elsewhere() {
    let mut cluster = Cluster::up().await;
    let apps: Vec<String> = cluster.apps.iter().take(4).cloned().collect();
    let v1: Vec<(String, String)> = apps
        .iter()
        .map(|a| (a.clone(), format!("v1 {a}")))
        .collect();
    cluster.deploy_all(&v1, Duration::from_secs(90)).await;
    let back = cluster.agents[0].node_id.clone();
    let survivor = cluster.agents[1].node_id.clone();
    let mut moved = Vec::new();
    for app in &apps {
        if cluster.app_run(app).await["nodeId"] == back.as_str() {
            moved.push(app.clone());
        }
    }
    assert!(!moved.is_empty(), "no app runs on {back}");

    // The agent dies; its containers keep running. Its apps are redeployed while it is OFFLINE,
    // so no runner can stop the old copies.
    cluster.agents[0].proc.as_mut().unwrap().kill();
    cluster
        .wait_node_state(&back, "OFFLINE", NODE_TTL + Duration::from_secs(5))
        .await;
    let v2: Vec<(String, String)> = moved
        .iter()
        .map(|a| (a.clone(), format!("v2 {a}")))
        .collect();
    let jobs = cluster.deploy_all(&v2, Duration::from_secs(90)).await;
    for job in &jobs {
        assert_eq!(job["nodeId"].as_str(), Some(survivor.as_str()), "{job:#}");
    }
    for app in &moved {
        assert_eq!(
            containers_of(app).len(),
            2,
            "both versions run before {back} is back"
        );
    }

    // The agent comes back.
    let started = Instant::now();
    cluster.restart_agent(0);
    cluster
        .wait_node_state(&back, "ONLINE", Duration::from_secs(30))
        .await;
    let deadline = started + Duration::from_secs(20);
    for app in &moved {
        let mut left = containers_of(app);
        while left.len() != 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            left = containers_of(app);
        }
        assert_eq!(left.len(), 1, "app {app}: {left:?}");
        assert_eq!(
            left[0].1, survivor,
            "the copy left runs on {survivor}: {left:?}"
        );
        assert_eq!(
            cluster.gateway_status(&back, app).await,
            404,
            "{back} no longer routes {app}"
        );
        cluster
            .assert_serves(&survivor, app, &format!("v2 {app}"))
            .await;
    }
    eprintln!(
        "one version: {} app(s) moved while {back} was down; its old containers gone {:?} after its restart",
        moved.len(),
        started.elapsed()
    );
    cluster.assert_all_alive();
}
