//! The control plane is killed in the middle of a batch of deploys and restarted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::harness::{assert_all_succeeded, is_final, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_killed_in_a_batch_loses_no_job() {
    let mut cluster = Cluster::up().await;
    let first = cluster.deploy_first().await;
    let apps = cluster.apps.clone();

    let started = Instant::now();
    let mut batch = Vec::new();
    for round in ["v3a", "v3b"] {
        for app in &apps {
            let msg = format!("{round} {app}");
            batch.push((cluster.deploy(app, &msg).await, msg));
        }
    }
    let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
    let (done, open) = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let jobs = cluster.jobs().await.expect("the job list");
            let done = ids
                .iter()
                .filter(|id| jobs.get(*id).is_some_and(|j| j["state"] == "SUCCEEDED"))
                .count();
            let open = ids
                .iter()
                .filter(|id| !jobs.get(*id).is_some_and(is_final))
                .count();
            if done >= 3 {
                break (done, open);
            }
            assert!(
                Instant::now() < deadline,
                "no job of the batch succeeded within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let status = cluster.control.as_mut().unwrap().kill();
    let killed_at = Instant::now();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the control plane was killed by SIGKILL"
    );
    assert!(
        open >= 10,
        "the batch was not in the middle when the control plane died: only {open} of {} jobs were open ({done} succeeded)",
        ids.len()
    );
    cluster.start_control().await;
    eprintln!(
        "restart: control plane killed with {done} done / {open} open of {}, answering again after {:?}",
        ids.len(),
        killed_at.elapsed()
    );
    let jobs = cluster.wait_final(&ids, Duration::from_secs(90)).await;
    assert_all_succeeded(&jobs);
    let retried = jobs
        .iter()
        .filter(|j| j["attempt"].as_i64() > Some(1))
        .count();
    // Each app serves what its last job deployed, on the node its record names.
    let msg_of: HashMap<&str, &str> = batch
        .iter()
        .map(|(id, msg)| (id.as_str(), msg.as_str()))
        .collect();
    let placed = cluster.placements().await;
    for app in &apps {
        let run = cluster.app_run(app).await;
        let last = run["lastJobId"].as_str().unwrap();
        let msg = msg_of
            .get(last)
            .unwrap_or_else(|| panic!("app {app}'s last job {last} is not one of the batch"));
        cluster.assert_serves(&placed[app], app, msg).await;
    }
    let moved = apps.iter().filter(|a| placed[*a] != first[*a]).count();
    eprintln!(
        "restart: {} jobs all SUCCEEDED in {:?} ({retried} needed more than one attempt, {moved} apps changed node)",
        ids.len(),
        started.elapsed()
    );
    cluster.assert_all_alive();
}
