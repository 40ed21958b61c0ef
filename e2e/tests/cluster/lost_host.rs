//! One agent is killed: its node goes `OFFLINE` within the TTL, and its apps move.

use std::time::{Duration, Instant};

use crate::harness::{Cluster, NODE_TTL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_host_goes_offline_and_its_apps_redeploy_elsewhere() {
    let mut cluster = Cluster::up().await;
    let placed = cluster.deploy_first().await;

    let started = Instant::now();
    let lost = cluster.agents[0].node_id.clone();
    let survivor = cluster.agents[1].node_id.clone();
    let lost_apps: Vec<String> = placed
        .iter()
        .filter(|(_, n)| **n == lost)
        .map(|(a, _)| a.clone())
        .collect();
    let kept_apps: Vec<String> = placed
        .iter()
        .filter(|(_, n)| **n == survivor)
        .map(|(a, _)| a.clone())
        .take(2)
        .collect();
    assert!(!lost_apps.is_empty(), "no app runs on {lost}: {placed:?}");
    let status = cluster.agents[0].proc.as_mut().unwrap().kill();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the agent was killed by SIGKILL"
    );
    let offline_after = cluster
        .wait_node_state(&lost, "OFFLINE", NODE_TTL + Duration::from_secs(5))
        .await;
    assert!(
        offline_after <= NODE_TTL + Duration::from_millis(1500),
        "node {lost} went OFFLINE {offline_after:?} after its agent died; the TTL is {NODE_TTL:?}"
    );
    let nodes = cluster.nodes().await.expect("the node list");
    assert_eq!(
        nodes[survivor.as_str()]["state"],
        "ONLINE",
        "{survivor} must stay ONLINE"
    );
    let v4: Vec<(String, String)> = lost_apps
        .iter()
        .chain(&kept_apps)
        .map(|a| (a.clone(), format!("v4 {a}")))
        .collect();
    let jobs = cluster.deploy_all(&v4, Duration::from_secs(90)).await;
    for job in &jobs {
        assert_eq!(
            job["nodeId"].as_str(),
            Some(survivor.as_str()),
            "a redeploy after {lost} went OFFLINE must land on {survivor}: {job:#}"
        );
    }
    for (app, msg) in &v4 {
        let run = cluster.app_run(app).await;
        assert_eq!(run["nodeId"].as_str(), Some(survivor.as_str()), "{run:#}");
        assert_eq!(run["state"], "RUNNING", "{run:#}");
        cluster.assert_serves(&survivor, app, msg).await;
    }
    eprintln!(
        "lost host: {lost} OFFLINE {offline_after:?} after SIGKILL; {} apps moved to {survivor} and {} stayed, in {:?}",
        lost_apps.len(),
        kept_apps.len(),
        started.elapsed()
    );
    cluster.assert_all_alive();
}
