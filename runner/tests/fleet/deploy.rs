//! The closed loop: a deploy job of a ready image ends SUCCEEDED and the gateway serves it;
//! stops; a graceful shutdown finishes the job it holds.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deploy_job_ends_with_the_gateway_serving_the_app_and_a_stop_removes_it() {
    let control = spawn_control(Duration::from_secs(5), 3).await;
    let agent = spawn_agent(&control).await;
    let runner = spawn_runner(runner_settings(&control, "loop-runner"));
    let app = app_id("loop");

    let job = control
        .run_job(
            json!({ "appId": app, "image": IMAGE, "env": { "MSG": "closed-loop" }, "secretEnv": { "API_KEY": "s3cret-value-123" } }),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(job["state"], "SUCCEEDED", "{job:#}");
    let result = &job["result"];
    assert_eq!(result["image"], IMAGE);
    assert_eq!(
        result["url"].as_str().unwrap(),
        format!("{}/apps/{app}/", agent.gateway)
    );
    let container = result["containerId"].as_str().unwrap().to_owned();
    assert_eq!(agent.containers(&app), vec![container.clone()]);
    assert_eq!(agent.get(&app).await, (200, "closed-loop\n".to_owned()));

    // The secret reached the container, and its value is in no log line.
    let env = std::process::Command::new(DOCKER)
        .args(["inspect", "--format", "{{json .Config.Env}}", &container])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&env.stdout).contains("API_KEY=s3cret-value-123"));
    let log = control.logs(job["jobId"].as_str().unwrap()).await;
    assert!(
        log.contains("claimed DEPLOY")
            && log.contains("secrets API_KEY")
            && log.contains(&container),
        "{log}"
    );
    assert!(
        !log.contains("s3cret-value-123"),
        "the secret leaked into the log: {log}"
    );

    control.stop_app(&app).await;
    assert!(agent.containers(&app).is_empty());
    assert_ne!(agent.get(&app).await.0, 200);

    // A STOP of an app that never ran anywhere has nothing to do and succeeds at once.
    let never = control
        .run_job(
            json!({ "appId": app_id("never"), "kind": "STOP" }),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(never["state"], "SUCCEEDED", "{never:#}");

    runner.stop().await.expect("the runner stops cleanly");
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_shutdown_a_runner_stops_claiming_and_finishes_the_job_it_holds() {
    let control = spawn_control(Duration::from_secs(5), 3).await;
    let agent = spawn_agent(&control).await;
    let runner = spawn_runner(runner_settings(&control, "graceful-runner"));
    let app = app_id("graceful");
    // A build step that sleeps keeps the job running while the runner is told to stop; the nonce
    // keeps the build cache from skipping it.
    let repo = Repo::new();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    repo.commit(
        &[(
            "Dockerfile",
            &format!("FROM {IMAGE}\nENV NONCE={nonce} MSG=graceful\nRUN sleep 2\n"),
        )],
        "slow",
    );
    let job = control
        .create_job(json!({ "appId": app, "repoUrl": repo.url(), "imageRepo": format!("{REGISTRY}/berth-runner-test/{app}") }))
        .await;
    let job_id = job["jobId"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(30), "the job to be RUNNING", || async {
        (control.job(&job_id, None).await["state"] == "RUNNING").then_some(())
    })
    .await;
    runner.stop().await.expect("a stopped runner returns Ok");
    let job = control.job(&job_id, None).await;
    assert_eq!(
        job["state"], "SUCCEEDED",
        "the held job finished before the runner left: {job:#}"
    );
    assert_eq!(job["attempt"], 1);
    assert_eq!(agent.get(&app).await, (200, "graceful\n".to_owned()));

    // It claims nothing more.
    let later = control
        .create_job(json!({ "appId": app_id("after"), "image": IMAGE }))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        control.job(later["jobId"].as_str().unwrap(), None).await["state"],
        "PENDING"
    );
    control.stop().await;
}
