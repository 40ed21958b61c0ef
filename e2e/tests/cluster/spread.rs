//! 20 apps spread over both nodes; a redeploy keeps each on its node.

use std::time::{Duration, Instant};

use crate::harness::{count_by_node, Cluster, APPS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_spread_over_two_hosts_and_stay_on_their_node() {
    let mut cluster = Cluster::up().await;
    let node_a = cluster.agents[0].node_id.clone();
    let node_b = cluster.agents[1].node_id.clone();

    let started = Instant::now();
    let apps = cluster.apps.clone();
    let v1: Vec<(String, String)> = apps
        .iter()
        .map(|a| (a.clone(), format!("v1 {a}")))
        .collect();
    let jobs = cluster.deploy_all(&v1, Duration::from_secs(90)).await;
    let first = cluster.placements().await;
    for job in &jobs {
        let app = job["appId"].as_str().unwrap();
        assert_eq!(
            job["nodeId"].as_str(),
            Some(first[app].as_str()),
            "the job and the app record name different nodes for {app}"
        );
    }
    let counts = count_by_node(&first);
    eprintln!(
        "spread: {APPS} deploys in {:?}, spread {counts:?}",
        started.elapsed()
    );
    assert_eq!(
        counts.len(),
        2,
        "the 20 apps are not spread over both nodes: {counts:?}"
    );
    for (node, n) in &counts {
        assert!(
            (APPS / 2 - 2..=APPS / 2 + 2).contains(n),
            "placement picks the node with the fewest apps, yet {node} got {n} of {APPS}: {counts:?}"
        );
    }
    // The registry agrees: each node lists exactly the apps placed on it.
    let nodes = cluster.nodes().await.expect("the node list");
    for node in [&node_a, &node_b] {
        let mut listed: Vec<String> = nodes[node.as_str()]["apps"]
            .as_array()
            .expect("apps of a node")
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        listed.sort();
        let expected: Vec<String> = first
            .iter()
            .filter(|(_, n)| *n == node)
            .map(|(a, _)| a.clone())
            .collect();
        assert_eq!(listed, expected, "the apps node {node} lists");
    }
    for (app, node) in &first {
        cluster.assert_serves(node, app, &format!("v1 {app}")).await;
    }

    let started = Instant::now();
    let v2: Vec<(String, String)> = apps
        .iter()
        .map(|a| (a.clone(), format!("v2 {a}")))
        .collect();
    let jobs = cluster.deploy_all(&v2, Duration::from_secs(90)).await;
    let second = cluster.placements().await;
    assert_eq!(second, first, "a redeploy moved apps between ONLINE nodes");
    for job in &jobs {
        let app = job["appId"].as_str().unwrap();
        assert_eq!(job["nodeId"].as_str(), Some(first[app].as_str()));
    }
    for (app, node) in second.iter().step_by(4) {
        cluster.assert_serves(node, app, &format!("v2 {app}")).await;
    }
    eprintln!("spread: {APPS} sticky redeploys in {:?}", started.elapsed());
    // The runners' own metrics saw every deploy: the fleet can be watched from /metrics.
    let reported = cluster
        .runner_metric("berth_runner_jobs_total{outcome=\"succeeded\"}")
        .await;
    let deploy_calls = cluster
        .runner_metric("berth_runner_deploy_seconds_count")
        .await;
    let claimed = cluster
        .runner_metric("berth_runner_claims_total{outcome=\"job\"}")
        .await;
    let deploys = (2 * APPS) as f64;
    assert!(
        reported >= deploys && deploy_calls >= deploys && claimed >= deploys,
        "the runners' metrics show {reported} succeeded jobs, {deploy_calls} agent deploys and \
         {claimed} claims for {deploys} successful deploys"
    );
    cluster.assert_all_alive();
}
