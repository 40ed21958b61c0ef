//! Sleeping apps through the whole loop (SPEC §8): the control plane sees the agent put an app to
//! sleep, and a redeploy or a stop of a sleeping app works as for a running one.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// A deploy of the test image answering `msg` that sleeps after one idle second.
fn sleepy(app: &str, msg: &str) -> Value {
    json!({ "appId": app, "image": IMAGE, "env": { "MSG": msg }, "sleepAfterSecs": 1 })
}

/// The engine's state of container `id` (`running`, `exited`, …).
fn docker_state(id: &str) -> String {
    let out = Command::new(DOCKER)
        .args(["inspect", "--format", "{{.State.Status}}", id])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Waits until the app is asleep on both sides: its container `id` stopped by the agent and its
/// run `SLEEPING` in the control plane (right after a wake the run may still say `SLEEPING`).
async fn until_asleep(control: &Control, app: &str, id: &str) -> Value {
    let what = format!("app {app} to be asleep in container {id}");
    eventually(Duration::from_secs(30), &what, || async {
        let run = control.app_run(app).await;
        (run["state"] == "SLEEPING" && docker_state(id) == "exited").then_some(run)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sleeping_app_shows_in_the_control_plane_and_is_redeployed_and_stopped_as_a_running_one()
{
    let control = spawn_control(Duration::from_secs(5), 3).await;
    let agent = spawn_agent(&control).await;
    let runner = spawn_runner(runner_settings(&control, "sleep-runner"));
    let app = app_id("sleepy");

    let first = control
        .run_job(sleepy(&app, "v1"), Duration::from_secs(60))
        .await;
    assert_eq!(first["state"], "SUCCEEDED", "{first:#}");
    let old = first["result"]["containerId"].as_str().unwrap().to_owned();

    // Idle for its second: asleep, on the agent and in the control plane.
    let run = until_asleep(&control, &app, &old).await;
    assert_eq!(run["lastJobId"], first["jobId"]);
    assert_eq!(run["nodeId"], agent.node_id.as_str());
    let node = control.node(&agent.node_id).await;
    assert_eq!(node["sleepingApps"], 1, "{node:#}");
    assert_eq!(node["capacity"]["maxSleepingApps"], 1000);
    // Its route is kept: the first request wakes it and gets its own answer.
    assert_eq!(agent.get(&app).await, (200, "v1\n".to_owned()));

    // A redeploy of the sleeping app replaces its container on the same node.
    until_asleep(&control, &app, &old).await;
    let second = control
        .run_job(sleepy(&app, "v2"), Duration::from_secs(60))
        .await;
    assert_eq!(second["state"], "SUCCEEDED", "{second:#}");
    assert_eq!(second["nodeId"], agent.node_id.as_str());
    let new = second["result"]["containerId"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(agent.containers(&app), vec![new.clone()]);
    let run = control.app_run(&app).await;
    assert_eq!(run["lastJobId"], second["jobId"]);
    // The new container sleeps in turn, and wakes with the new answer.
    until_asleep(&control, &app, &new).await;
    assert_eq!(agent.get(&app).await, (200, "v2\n".to_owned()));

    // A stop of the sleeping app removes it and frees its node.
    until_asleep(&control, &app, &new).await;
    let stop = control.stop_app(&app).await;
    assert_eq!(stop["nodeId"], agent.node_id.as_str());
    assert!(agent.containers(&app).is_empty());
    assert_eq!(control.app_run(&app).await["state"], "STOPPED");
    assert_eq!(agent.get(&app).await.0, 404);
    eventually(
        Duration::from_secs(15),
        "the node to report no sleeping app",
        || async {
            let node = control.node(&agent.node_id).await;
            (node["sleepingApps"] == 0 && node["apps"] == json!([])).then_some(())
        },
    )
    .await;

    runner.stop().await.expect("the runner stops cleanly");
    control.stop().await;
}
